from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from byokportal.health import healthz
from byokportal.metrics import metrics_view
from security import views as security_views

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Prometheus, for the operator's scraper (bearer token; 404 when METRICS_TOKEN is unset).
    path("metrics", metrics_view, name="metrics"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password/",
        security_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    # Two-factor set-up and verification, re-authentication (security/urls.py).
    path("accounts/", include("security.urls")),
    path("admin/", admin.site.urls),
    path("", include("orgs.urls")),
    path("", include("connections.urls")),
    path("", include("setup.urls")),
    path("", include("reencryption.urls")),
    path("", include("review.urls")),
    path("", include("audit.urls")),
    path("", include("integrations.urls")),
    path("", include("api.urls")),
]

# Under /api/ both answer with RFC 9457 problem+json; elsewhere the portal's pages.
handler404 = "api.problems.page_not_found"
handler500 = "api.problems.server_error"
