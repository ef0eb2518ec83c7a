from django.urls import path

from orgs import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("orgs/<int:org_id>/", views.org_overview, name="org-overview"),
]
