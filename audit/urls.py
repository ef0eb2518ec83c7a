from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("orgs/<int:org_id>/audit/", views.org_audit, name="list"),
    path("orgs/<int:org_id>/audit/events/<uuid:event_id>/", views.org_audit_event, name="event"),
    # Public: customers fetch these to verify exports offline (no login).
    path("audit/public-key.pem", views.public_key_pem, name="public-key"),
    path("audit/verify.py", views.verifier_source, name="verifier"),
]
