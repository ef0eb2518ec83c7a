from django.urls import path

from keys import views, views_onboarding, views_staff

urlpatterns = [
    path("orgs/<int:org_id>/byok/", views.byok_status, name="byok-status"),
    path("orgs/<int:org_id>/byok/setup/", views.setup_request_new, name="byok-setup"),
    path("orgs/<int:org_id>/byok/revoke/", views.revoke_access, name="byok-revoke"),
    path(
        "orgs/<int:org_id>/byok/revoke/progress/",
        views.revoke_progress_fragment,
        name="byok-revoke-progress",
    ),
    path("orgs/<int:org_id>/byok/restore/", views.restore_access, name="byok-restore"),
    path(
        "orgs/<int:org_id>/byok/requests/<int:request_id>/",
        views.setup_request_detail,
        name="byok-request",
    ),
    path(
        "orgs/<int:org_id>/byok/requests/<int:request_id>/preflight/",
        views.setup_request_preflight_fragment,
        name="byok-request-preflight-fragment",
    ),
    path(
        "orgs/<int:org_id>/byok/requests/<int:request_id>/kit/",
        views_onboarding.onboarding_kit,
        name="byok-onboarding-kit",
    ),
    path(
        "orgs/<int:org_id>/byok/requests/<int:request_id>/kit/<str:region>.template.json",
        views_onboarding.onboarding_template_download,
        name="byok-onboarding-template",
    ),
    path("staff/requests/", views_staff.request_queue, name="staff-requests"),
    path(
        "staff/requests/<int:request_id>/",
        views_staff.request_detail,
        name="staff-request-detail",
    ),
    path(
        "staff/requests/<int:request_id>/preflight/",
        views_staff.preflight_fragment,
        name="staff-request-preflight-fragment",
    ),
    path(
        "staff/requests/<int:request_id>/claim/",
        views_staff.request_claim,
        name="staff-request-claim",
    ),
    path(
        "staff/requests/<int:request_id>/run-preflight/",
        views_staff.request_preflight,
        name="staff-request-run-preflight",
    ),
    path(
        "staff/requests/<int:request_id>/provision/",
        views_staff.request_provision,
        name="staff-request-provision",
    ),
    path(
        "staff/requests/<int:request_id>/reject/",
        views_staff.request_reject,
        name="staff-request-reject",
    ),
    path(
        "staff/requests/<int:request_id>/note/", views_staff.request_note, name="staff-request-note"
    ),
]
