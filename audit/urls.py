from django.urls import include, path

from audit import views

urlpatterns = [
    path("orgs/<int:org_id>/audit/", views.org_audit, name="org-audit"),
    # Ingestion, SIEM delivery and integrity digests (audit/urls_integrations.py).
    path("", include("audit.urls_integrations")),
]
