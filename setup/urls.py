from django.urls import path

from setup import views, views_onboarding, views_staff

app_name = "setup"

customer = "orgs/<int:org_id>/byok/requests/<int:request_id>/"
staff = "staff/requests/<int:request_id>/"

urlpatterns = [
    path("orgs/<int:org_id>/byok/setup/", views.setup_request_new, name="new"),
    path(customer, views.setup_request_detail, name="request"),
    path(f"{customer}preflight/", views.setup_request_preflight_fragment, name="request-preflight"),
    path(f"{customer}kit/", views_onboarding.onboarding_kit, name="kit"),
    path(
        f"{customer}kit/<str:region>.template.json",
        views_onboarding.onboarding_template_download,
        name="kit-template",
    ),
    path(staff, views_staff.request_detail, name="staff-detail"),
    path(f"{staff}preflight/", views_staff.preflight_fragment, name="staff-preflight"),
    path(f"{staff}claim/", views_staff.request_claim, name="staff-claim"),
    path(f"{staff}run-preflight/", views_staff.request_preflight, name="staff-run-preflight"),
    path(f"{staff}provision/", views_staff.request_provision, name="staff-provision"),
    path(f"{staff}reject/", views_staff.request_reject, name="staff-reject"),
    path(f"{staff}note/", views_staff.request_note, name="staff-note"),
]
