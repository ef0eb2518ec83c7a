from django.urls import include, path

from audit import views

urlpatterns = [
    path("orgs/<int:org_id>/audit/", views.org_audit, name="org-audit"),
    path(
        "orgs/<int:org_id>/audit/events/<uuid:event_id>/",
        views.org_audit_event,
        name="org-audit-event",
    ),
    # Ingestion, SIEM delivery and integrity digests (audit/urls_integrations.py).
    path("", include("audit.urls_integrations")),
]
