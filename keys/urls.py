from django.urls import path

from keys import views

urlpatterns = [
    path("orgs/<int:org_id>/byok/", views.byok_status, name="byok-status"),
    path("staff/requests/", views.staff_requests, name="staff-requests"),
]
