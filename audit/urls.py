from django.urls import path

from audit import views

urlpatterns = [
    path("orgs/<int:org_id>/audit/", views.org_audit, name="org-audit"),
]
