"""Audit integrations (CloudTrail ingestion, SIEM webhook) and the public trust endpoints."""

from django.urls import path

from audit import views_integrations as views

urlpatterns = [
    path(
        "orgs/<int:org_id>/audit/integrations/",
        views.integrations,
        name="audit-integrations",
    ),
    path(
        "orgs/<int:org_id>/audit/integrations/cloudtrail/",
        views.source_save,
        name="audit-integrations-source",
    ),
    path(
        "orgs/<int:org_id>/audit/integrations/cloudtrail/import/",
        views.source_import,
        name="audit-integrations-import",
    ),
    path(
        "orgs/<int:org_id>/audit/integrations/webhook/",
        views.webhook_save,
        name="audit-integrations-webhook",
    ),
    path(
        "orgs/<int:org_id>/audit/integrations/webhook/test/",
        views.webhook_test,
        name="audit-integrations-webhook-test",
    ),
    path(
        "orgs/<int:org_id>/audit/integrations/webhook/delete/",
        views.webhook_delete,
        name="audit-integrations-webhook-delete",
    ),
    path(
        "orgs/<int:org_id>/audit/integrations/webhook/deliveries/<int:delivery_id>/retry/",
        views.delivery_retry,
        name="audit-integrations-delivery-retry",
    ),
    # Public: customers fetch these to verify exports offline (no login).
    path("audit/public-key.pem", views.public_key_pem, name="audit-public-key"),
    path("audit/verify.py", views.verifier_source, name="audit-verifier"),
]
