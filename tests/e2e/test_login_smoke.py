"""The browser lane end to end: a user signs in through the real login form."""

from playwright.sync_api import expect


def test_user_logs_in_and_sees_dashboard(page, login, django_user_model, demo_password):
    django_user_model.objects.create_user(email="admin@acme.example", password=demo_password)

    login(page, "admin@acme.example")

    expect(page.get_by_role("heading", name="Your organizations")).to_be_visible()
