from django.urls import path

from connections import views, views_scopes

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
    # Scoped revocation: one site, one app instance, one period of data.
    path(
        "orgs/<int:org_id>/byok/sites/<int:site_id>/revoke/",
        views_scopes.revoke_site,
        name="revoke-site",
    ),
    path(
        "orgs/<int:org_id>/byok/apps/<int:app_id>/revoke/",
        views_scopes.revoke_app,
        name="revoke-app",
    ),
    path("orgs/<int:org_id>/byok/period/revoke/", views_scopes.revoke_period, name="revoke-period"),
    path(
        "orgs/<int:org_id>/byok/scopes/<int:revocation_id>/restore/",
        views_scopes.restore_scope,
        name="restore-scope",
    ),
]
