from django.urls import path

from review import views

app_name = "review"

urlpatterns = [
    path("staff/requests/", views.request_queue, name="queue"),
]
