from django.urls import path

from orgs import views

app_name = "orgs"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("orgs/<int:org_id>/", views.org_overview, name="overview"),
]
