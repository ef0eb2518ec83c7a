from django.urls import path

from reencryption import views, views_staff

app_name = "reencryption"

customer = "orgs/<int:org_id>/byok/reencrypt/<int:request_id>/"
staff = "staff/requests/reencryption/<int:request_id>/"

urlpatterns = [
    path("orgs/<int:org_id>/byok/reencrypt/", views.reencrypt, name="request"),
    path(
        "orgs/<int:org_id>/byok/reencrypt/kit/<str:region>.template.json",
        views.reencrypt_template_download,
        name="template",
    ),
    path(customer, views.reencrypt_detail, name="detail"),
    path(f"{customer}progress/", views.reencrypt_progress_fragment, name="progress"),
    path(f"{customer}preflight/", views.reencrypt_preflight_fragment, name="preflight"),
    path(f"{customer}cancel/", views.reencrypt_cancel, name="cancel"),
    path(staff, views_staff.reencryption_detail, name="staff-detail"),
    path(f"{staff}progress/", views_staff.reencryption_progress_fragment, name="staff-progress"),
    path(f"{staff}preflight/", views_staff.reencryption_preflight_fragment, name="staff-preflight"),
    path(f"{staff}claim/", views_staff.reencryption_claim, name="staff-claim"),
    path(f"{staff}run-preflight/", views_staff.reencryption_preflight, name="staff-run-preflight"),
    path(f"{staff}approve/", views_staff.reencryption_approve, name="staff-approve"),
    path(f"{staff}reject/", views_staff.reencryption_reject, name="staff-reject"),
]
