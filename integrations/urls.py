"""The audit trail's integrations: the customer's CloudTrail source and the SIEM webhook."""

from django.urls import path

from integrations import views, views_reconcile

app_name = "integrations"

base = "orgs/<int:org_id>/audit/integrations/"

urlpatterns = [
    path(base, views.integrations, name="index"),
    path(f"{base}cloudtrail/", views.source_save, name="source"),
    path(f"{base}cloudtrail/import/", views.source_import, name="import"),
    path(f"{base}webhook/", views.webhook_save, name="webhook"),
    path(
        f"{base}unexplained-calls/acknowledge/",
        views_reconcile.acknowledge_unexplained,
        name="acknowledge-unexplained",
    ),
    path(f"{base}webhook/test/", views.webhook_test, name="webhook-test"),
    path(f"{base}webhook/delete/", views.webhook_delete, name="webhook-delete"),
    path(
        f"{base}webhook/deliveries/<int:delivery_id>/retry/",
        views.delivery_retry,
        name="delivery-retry",
    ),
]
