"""The demo's people and their published password. Django-free: ``scripts/run_demo.py`` prints
them before Django is loaded. Only ``seed_demo`` (DEBUG only) creates these users."""

from dataclasses import dataclass

DEMO_PASSWORD = "byok-demo-pass"  # noqa: S105 — published on purpose, demo only  # nosec B105


@dataclass(frozen=True)
class DemoUser:
    email: str
    full_name: str
    description: str


DEMO_USERS = [
    DemoUser("admin@acme.example", "Ada Admin", "Acme Corp org admin (BYOK set up)"),
    DemoUser("member@acme.example", "Max Member", "Acme Corp member (no BYOK access)"),
    DemoUser("other-admin@globex.example", "Gia Globex", "Globex org admin (not set up yet)"),
    DemoUser("rep@vendor.example", "Rita Rep", "account representative (/staff/requests/)"),
    DemoUser("support@vendor.example", "Sam Support", "support staff (/admin/)"),
    DemoUser("root@vendor.example", "Root", "vendor superuser"),
]
