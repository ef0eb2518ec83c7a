"""Fixtures shared by every test lane (unit, services, browser).

The lanes are started by the Makefile, which sets the environment the settings module reads
(DEBUG, BYOK_VAR_DIR, DATABASE_URL, CELERY_*): see README.md. Nothing here touches a real AWS
account: fake credentials are forced for the whole session.
"""

import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# The simulated customer AWS account (moto) and botocore-level error injection, for every lane.
pytest_plugins = ["tests.customer_aws"]

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Set at import, before any session fixture or module creates a boto3 client.
os.environ.update(FAKE_AWS_ENV)
for _name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake AWS credentials and region for every test (restored if a test changes them)."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return dict(FAKE_AWS_ENV)


@pytest.fixture(autouse=True)
def _fresh_webhook_org_cache() -> Iterator[None]:
    """The per-process cache of orgs with a SIEM webhook starts empty in every test: database
    ids are reused between tests, so a cache left by one test would send (or not send) another
    test's events to a webhook by accident of order."""
    from audit.webhooks import forget_webhook_orgs

    forget_webhook_orgs()
    yield
    forget_webhook_orgs()


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    """MD5 hashing in tests: PBKDF2 costs ~0.3 s per login or user created."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def demo_password(settings) -> str:
    return settings.DEMO_PASSWORD


def _wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str | Callable[[], str] = "",
) -> Any:
    """Call ``predicate`` until it returns something truthy; return that, or fail at ``timeout``.

    ``message`` (a string, or a callable evaluated only on timeout) explains what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or predicate!r}")
        time.sleep(interval)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=30.0, interval=0.2, message="")`` → the truthy result."""
    return _wait_for


# --- moto as a real HTTP endpoint (services and browser lanes; unit tests use mock_aws) -----


class MotoServer:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def reset(self) -> None:
        """Forget every AWS resource (moto's own reset API)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A moto server on a free port; ``AWS_ENDPOINT_URL`` (env and settings) points at it.

    The environment is what subprocesses (the Celery worker) inherit; the settings value is what
    this process's code reads.
    """
    from django.conf import settings

    server = MotoServer()
    previous_env = os.environ.get("AWS_ENDPOINT_URL")
    previous_setting = getattr(settings, "AWS_ENDPOINT_URL", None)
    os.environ["AWS_ENDPOINT_URL"] = server.url
    settings.AWS_ENDPOINT_URL = server.url
    try:
        yield server
    finally:
        settings.AWS_ENDPOINT_URL = previous_setting
        if previous_env is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous_env
        server.stop()


@pytest.fixture
def moto_reset(moto_server: MotoServer) -> MotoServer:
    """The session's moto server, emptied before the test."""
    moto_server.reset()
    return moto_server
