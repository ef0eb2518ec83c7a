from django.urls import path

from connections import views

app_name = "connections"

urlpatterns = [
    path("orgs/<int:org_id>/byok/", views.byok_status, name="status"),
    path("orgs/<int:org_id>/byok/check/", views.check_now, name="check-now"),
    path("orgs/<int:org_id>/byok/revoke/", views.revoke_access, name="revoke"),
    path(
        "orgs/<int:org_id>/byok/revoke/progress/",
        views.revoke_progress_fragment,
        name="revoke-progress",
    ),
    path("orgs/<int:org_id>/byok/restore/", views.restore_access, name="restore"),
]
