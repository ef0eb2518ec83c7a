"""Acme Corp's BYOK side of the demo (completed as the setup and data-plane work lands)."""


def seed_demo_byok() -> str:
    return "Acme's BYOK site: pending."
