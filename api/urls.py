"""``/api/v1/`` (the REST API, its OpenAPI schema and docs) and the API tokens page."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from api import views, views_audit, views_docs, views_tokens

app_name = "api"

ORG = "api/v1/orgs/<int:org_id>"

urlpatterns = [
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", views_docs.ApiDocs.as_view(url_name="api:schema"), name="docs"),
    path("api/v1/orgs", views.OrganizationList.as_view(), name="orgs"),
    path(ORG, views.OrganizationDetail.as_view(), name="org"),
    path(f"{ORG}/byok", views.ConnectionDetail.as_view(), name="byok"),
    path(f"{ORG}/byok/revoke", views.RevokeKeyAccess.as_view(), name="byok-revoke"),
    path(
        f"{ORG}/byok/scoped-revocations",
        views.ScopedRevocationList.as_view(),
        name="byok-scoped-revocations",
    ),
    path(f"{ORG}/sites", views.SiteList.as_view(), name="sites"),
    path(f"{ORG}/setup-requests", views.SetupRequestList.as_view(), name="setup-requests"),
    path(
        f"{ORG}/setup-requests/<int:request_id>",
        views.SetupRequestDetail.as_view(),
        name="setup-request",
    ),
    path(
        f"{ORG}/reencryption-requests",
        views.ReencryptionRequestList.as_view(),
        name="reencryption-requests",
    ),
    path(
        f"{ORG}/reencryption-requests/<int:request_id>",
        views.ReencryptionRequestDetail.as_view(),
        name="reencryption-request",
    ),
    path(f"{ORG}/audit/events", views_audit.AuditEventList.as_view(), name="audit-events"),
    path(
        f"{ORG}/audit/events/<uuid:event_id>",
        views_audit.AuditEventDetail.as_view(),
        name="audit-event",
    ),
    path(f"{ORG}/audit/export", views_audit.AuditExport.as_view(), name="audit-export"),
    path(
        f"{ORG}/integrations/cloudtrail",
        views.CloudTrailSourceDetail.as_view(),
        name="cloudtrail-source",
    ),
    path(f"{ORG}/integrations/webhook", views.WebhookEndpointDetail.as_view(), name="webhook"),
    # The settings page where org admins create and revoke tokens (a portal page, not the API).
    path("orgs/<int:org_id>/api-tokens/", views_tokens.token_list, name="tokens"),
    path(
        "orgs/<int:org_id>/api-tokens/<int:token_id>/revoke/",
        views_tokens.token_revoke,
        name="token-revoke",
    ),
]
