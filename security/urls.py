from django.urls import path

from security import views

app_name = "security"

urlpatterns = [
    path("2fa/setup/", views.two_factor_setup, name="two-factor-setup"),
    path("2fa/verify/", views.two_factor_verify, name="two-factor-verify"),
    path("reauthenticate/", views.reauthenticate, name="reauthenticate"),
]
