"""Settings for the BYOK Portal, 12-factor style: every deployment value comes from the environment.

With no environment at all the portal runs on the *embedded default*: SQLite and kombu's
filesystem broker under ``var/``, DEBUG on, a generated (git-ignored) development secret key.
"""

import secrets
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("BYOK_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    CSRF_TRUSTED_ORIGINS=(list, []),
)
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env("DEBUG")


def _development_secret_key() -> str:
    """A per-checkout random key, kept in var/ (git-ignored), so dev sessions survive restarts."""
    key_file = VAR_DIR / "dev-secret-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(64))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


if DEBUG:
    SECRET_KEY = env.str("SECRET_KEY", default="") or _development_secret_key()
else:
    # Required in production: a missing key is a configuration error, not a silent default.
    SECRET_KEY = env.str("SECRET_KEY")

ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # django.contrib.admin, with the portal's admin site (two-factor, one sign-in page).
    "security.admin_apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "orgs",
    "audit",
    "connections",
    "dataplane",
    "review",
    "setup",
    "reencryption",
    "integrations",
    "csp",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "security",  # after otp_totp: its admin.py replaces the TOTP device admin
    "django_prometheus",  # request metrics for /metrics (byokportal/metrics.py)
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets, served by the portal (no CDN)
    "api",
]

MIDDLEWARE = [
    # First: the request ID every log line, enqueued task and audit event of the request carries.
    "byokportal.middleware.RequestIdMiddleware",
    # Request metrics (django-prometheus): Before as early as it can be, After as late.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who is acting, for the audit of staff changes made through model signals.
    "security.middleware.CurrentRequestMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "core.middleware.DomainErrorMiddleware",
    "security.middleware.TwoFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "byokportal.middleware.SecurityHeadersMiddleware",
    # Before axes (which must be last): it then counts the lockout page axes answers with.
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes requires: turns a lockout into the "account locked" page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "byokportal.urls"
WSGI_APPLICATION = "byokportal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "orgs.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'byokportal.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Production keeps each process's database connection (checked before reuse) instead of
# opening one per request; 0 closes it after every request.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0 if DEBUG else 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A web process and a worker share the file: wait for a lock instead of failing at once,
    # and take the write lock at BEGIN so a transaction never fails upgrading its lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=20, transaction_mode="IMMEDIATE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "orgs.User"
# Axes first: it refuses a locked-out sign-in before any password is checked.
AUTHENTICATION_BACKENDS = [
    "security.backends.ThrottlingBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "orgs:dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Sessions, cookies and transport security -------------------------------------------
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 60 * 60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
# Production on plain HTTP, for a local production run only (`make prod-run`, the load test):
# cookies without the Secure flag, no HTTPS redirect, no HSTS. Refused for any other host.
PLAIN_HTTP_LOCALHOST = env.bool("PLAIN_HTTP_LOCALHOST", default=False)
if PLAIN_HTTP_LOCALHOST and not set(ALLOWED_HOSTS) <= {"127.0.0.1", "localhost", "[::1]"}:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("PLAIN_HTTP_LOCALHOST is for 127.0.0.1 and localhost only.")
_HTTPS = not DEBUG and not PLAIN_HTTP_LOCALHOST
SESSION_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_HTTPS)
# Probes and the metrics scraper may talk to gunicorn directly, without the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = 31536000 if _HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp; byokportal/middleware.py adds the admin's one exception).
# Every asset is served by the portal itself: no CDN, no inline script or style, no data: URLs
# (the two-factor QR code is inline SVG markup, not an image URL).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Sign-in hardening: throttling (django-axes), two-factor (django-otp), recent auth -----
# Five wrong passwords for one e-mail address from one IP address lock that pair out for
# 15 minutes. By the pair, not the address alone: anyone could otherwise lock a known admin
# out from anywhere. A lockout answers 429 with a page saying when to try again.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Attempts during a lockout do not extend it: the page can say exactly when it ends.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "security.views.lockout_response"
AXES_USERNAME_CALLABLE = "security.throttling.username_of"
# Reverse proxies in front of gunicorn (e.g. 1 for the TLS proxy). Each one must append the
# address it received the request from to X-Forwarded-For; the client is then the Nth address
# from the right. 0: REMOTE_ADDR is the client (nothing in between). One function applies it
# everywhere (audit.request_context.client_ip): the audit log, axes' lockouts, the throttles.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
AXES_CLIENT_IP_CALLABLE = "security.throttling.client_ip"
# axes' own (django-ipware) settings, never used while the callable above is set: kept equal to
# it so that removing the callable cannot silently trust the client's leftmost address.
AXES_IPWARE_PROXY_COUNT = TRUSTED_PROXY_COUNT or None
AXES_IPWARE_PROXY_ORDER = "right-most"
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR") if TRUSTED_PROXY_COUNT else ("REMOTE_ADDR",)
)
# Sign-ins are in the audit log already; axes keeps only the failures it counts.
AXES_DISABLE_ACCESS_LOG = True
# Masked in what axes stores of a failed attempt (it always masks "password").
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "code", "csrfmiddlewaretoken"]
AXES_VERBOSE = False  # no start-up banner in every process's log

# Failed sign-ins (and wrong one-time codes) are audited as one counted event per e-mail address
# and window: the first failure at once, the rest with their count when the window closes
# (security/failed_sign_ins.py). Bounds what anyone can add to a tenant's log and SIEM feed.
SIGN_IN_FAILURE_WINDOW_S = env.int("SIGN_IN_FAILURE_WINDOW_S", default=300)

OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="BYOK Portal")
# Seconds a re-authentication stays fresh for destructive actions (revoke, re-encryption).
RECENT_AUTH_MAX_AGE_S = env.int("RECENT_AUTH_MAX_AGE_S", default=600)

# --- Metrics (byokportal/metrics.py, docs/operations.md) -----------------------------------
# /metrics answers a scraper that sends "Authorization: Bearer <METRICS_TOKEN>"; unset, the
# endpoint does not exist (404). Under gunicorn and Celery, PROMETHEUS_MULTIPROC_DIR (read by
# prometheus_client from the environment) makes every process's figures part of each scrape.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- E-mail ------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
# Where e-mailed links point (notices are sent from workers, which have no request).
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="BYOK Portal <byok@vendor.example>")

# --- Celery ------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("out", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Broadcast exchanges (pidbox): kombu's default is ./control at the working directory.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # With acks late, a task whose worker died is redelivered after this many seconds.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_S", default=3600)
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# How often the beat read-checks every BYOK app (the BYOK page shows the last result).
READ_CHECK_INTERVAL_S = env.float("READ_CHECK_INTERVAL_S", default=900.0)
HEALTH_MONITOR_INTERVAL_S = env.float("HEALTH_MONITOR_INTERVAL_S", default=60.0)
CELERY_BEAT_SCHEDULE = {
    "connections-health-monitor": {
        "task": "connections.tasks.run_health_monitor",
        "schedule": timedelta(seconds=HEALTH_MONITOR_INTERVAL_S),
    },
    # Re-enqueues due or stranded re-encryption jobs: bounds how long a lost message delays one.
    "reencryption-sweeper": {
        "task": "reencryption.tasks.sweep_reencryption_jobs",
        "schedule": timedelta(seconds=env.float("REENCRYPTION_SWEEP_INTERVAL_S", default=60.0)),
    },
    "dataplane-read-checks": {
        "task": "dataplane.tasks.check_all_app_reads",
        "schedule": timedelta(seconds=READ_CHECK_INTERVAL_S),
    },
    # Writes the counted event of each closed window of failed sign-ins.
    "security-failed-sign-ins": {
        "task": "security.tasks.report_closed_failure_windows",
        "schedule": timedelta(minutes=1),
    },
}

# --- AWS (customer side) and the vendor's identity ----------------------------------------
AWS_ENDPOINT_URL = env.str("AWS_ENDPOINT_URL", default="") or None
AWS_CONNECT_TIMEOUT_S = env.float("AWS_CONNECT_TIMEOUT_S", default=3.0)
AWS_READ_TIMEOUT_S = env.float("AWS_READ_TIMEOUT_S", default=5.0)
AWS_MAX_ATTEMPTS = env.int("AWS_MAX_ATTEMPTS", default=3)
AWS_STS_REGION = env.str("AWS_STS_REGION", default="us-east-1")
VENDOR_AWS_ACCOUNT_ID = env.str("VENDOR_AWS_ACCOUNT_ID", default="111122223333")
VENDOR_PRINCIPAL_ARN = env.str(
    "VENDOR_PRINCIPAL_ARN",
    default=f"arn:aws:iam::{VENDOR_AWS_ACCOUNT_ID}:role/byok-portal-service",
)
BYOK_ROLE_NAME = env.str("BYOK_ROLE_NAME", default="byok-key-management")
BYOK_RESTORE_WINDOW_DAYS = 15
# How long a restore may stay in `restoring` before the beat falls back to revoked.
BYOK_RESTORE_CHECK_TIMEOUT_S = env.float("BYOK_RESTORE_CHECK_TIMEOUT_S", default=900.0)
PREFLIGHT_MAX_AGE_HOURS = 24

# --- Re-encryption job ---
# Data keys per batch of a re-wrap job (the default a rep's approval form proposes).
REENCRYPTION_REWRAP_BATCH = env.int("REENCRYPTION_REWRAP_BATCH", default=100)
# Records per batch of a rotate job (the default a rep's approval form proposes), and about how
# many bytes of ciphertext a batch may hold (a batch is cut to this at the average record size
# the run has seen): 5,000 small records per transaction and UPDATE, fewer large ones. Each
# batch pays a fixed ~7 round trips: 5,000 measured 3x the throughput of 500 on PostgreSQL
# (`python -m bench reencrypt`); the byte bound keeps a batch's memory near 2x 16 MiB.
REENCRYPTION_ROTATE_BATCH = env.int("REENCRYPTION_ROTATE_BATCH", default=5000)
REENCRYPTION_ROTATE_BATCH_BYTES = env.int("REENCRYPTION_ROTATE_BATCH_BYTES", default=16 << 20)
# Default pause between two batches, in seconds (throttles the job's load on KMS and the DB).
REENCRYPTION_BATCH_INTERVAL_S = env.float("REENCRYPTION_BATCH_INTERVAL_S", default=0.0)
# A run whose heartbeat is older than this (seconds) lost its lease: another run takes over.
REENCRYPTION_LEASE_S = env.float("REENCRYPTION_LEASE_S", default=120.0)
# KMS calls a run makes in parallel (1: one by one, in the run's own thread).
REENCRYPTION_KMS_CONCURRENCY = env.int("REENCRYPTION_KMS_CONCURRENCY", default=8)
# Seconds between two DescribeKey checks of the keys in use (a disabled key revokes).
REENCRYPTION_KEY_CHECK_INTERVAL_S = env.float("REENCRYPTION_KEY_CHECK_INTERVAL_S", default=5.0)
# Retries of a step after a transient AWS failure before the run waits for the sweeper.
REENCRYPTION_TRANSIENT_RETRIES = env.int("REENCRYPTION_TRANSIENT_RETRIES", default=3)
# Backoff before the first such retry, in seconds (doubled at each retry).
REENCRYPTION_TRANSIENT_BACKOFF_S = env.float("REENCRYPTION_TRANSIENT_BACKOFF_S", default=1.0)

# --- Data plane: the in-process cache of plaintext data keys -------------------------------
DEK_CACHE_MAX_AGE_S = env.float("DEK_CACHE_MAX_AGE_S", default=300.0)
DEK_CACHE_MAX_USES = env.int("DEK_CACHE_MAX_USES", default=100_000)
DEK_CACHE_MAX_ENTRIES = env.int("DEK_CACHE_MAX_ENTRIES", default=1000)
# How stale a process's view of a connection's state may be: bounds revocation latency.
DEK_GUARD_TTL_S = env.float("DEK_GUARD_TTL_S", default=0.5)
# A data key older than this is replaced for new writes (bounds nonces per key).
DEK_ROTATE_AFTER_S = env.float("DEK_ROTATE_AFTER_S", default=24 * 3600)
# Consecutive transient monitor failures before a connection is marked degraded.
HEALTH_DEGRADED_AFTER = env.int("HEALTH_DEGRADED_AFTER", default=2)

# --- Demo ---------------------------------------------------------------------------------
# The demo app (the simulated customer AWS account, seed_demo) exists only for `make run` and
# the tests: it is not installed with DEBUG off. DEMO_ENABLED overrides (tests of production).
DEMO_ENABLED = env.bool("DEMO_ENABLED", default=DEBUG)
if DEMO_ENABLED:
    INSTALLED_APPS.append("demo")
    from demo.users import DEMO_PASSWORD  # noqa: E402, F401 — seed_demo only

# Logs: one JSON object per line in production (LOG_FORMAT=json, the default with DEBUG off),
# plain text in development; every line carries the request ID (core.request_id). Celery
# workers log through this configuration too (CELERY_WORKER_HIJACK_ROOT_LOGGER below).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.request_id.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # every sign-in at INFO; failures and lockouts stay
    },
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Audit integrity and delivery ------------------------------------------------------------
# Ed25519 key that signs the hourly digests of each audit chain head (audit/digests.py):
# base64 of the raw 32-byte private key, or a PEM (PKCS#8) private key; or a file holding one.
# Its public key is published at /audit/public-key.pem. Production must set one: without it
# digests are not signed (logged as an error). DEBUG generates a per-checkout key in var/.
AUDIT_SIGNING_KEY = env.str("AUDIT_SIGNING_KEY", default="")
_audit_signing_key_file = env.str("AUDIT_SIGNING_KEY_FILE", default="")
if not AUDIT_SIGNING_KEY and _audit_signing_key_file:
    AUDIT_SIGNING_KEY = Path(_audit_signing_key_file).read_text().strip()


def _development_audit_signing_key() -> str:
    """Like the dev SECRET_KEY: one random Ed25519 key per checkout, kept in var/."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_file = VAR_DIR / "dev-audit-signing-key"
    if not key_file.exists():
        raw = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        key_file.write_text(base64.b64encode(raw).decode())
        key_file.chmod(0o600)
    return key_file.read_text().strip()


if DEBUG and not AUDIT_SIGNING_KEY:
    AUDIT_SIGNING_KEY = _development_audit_signing_key()
elif not AUDIT_SIGNING_KEY:
    # Production signs chain digests hourly: an unsigned audit trail is a configuration error.
    raise environ.ImproperlyConfigured(
        "Set AUDIT_SIGNING_KEY (or AUDIT_SIGNING_KEY_FILE): "
        "the Ed25519 key that signs the audit digests."
    )

# Retention is the only deletion of audit events (audit/retention.py); it is itself audited.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=400)
AUDIT_RETENTION_BATCH = env.int("AUDIT_RETENTION_BATCH", default=50_000)

# Ingestion of the customer's own CloudTrail (audit/ingestion.py).
AUDIT_INGEST_INTERVAL_S = env.float("AUDIT_INGEST_INTERVAL_S", default=300.0)
AUDIT_INGEST_MAX_FILE_BYTES = env.int("AUDIT_INGEST_MAX_FILE_BYTES", default=100 * 1024 * 1024)

# SIEM webhooks (audit/webhooks.py). Attempts include the first one; the wait before retry n
# is BACKOFF_BASE_S * 2**(n-1), at most BACKOFF_MAX_S.
AUDIT_WEBHOOK_MAX_ATTEMPTS = env.int("AUDIT_WEBHOOK_MAX_ATTEMPTS", default=8)
AUDIT_WEBHOOK_BACKOFF_BASE_S = env.float("AUDIT_WEBHOOK_BACKOFF_BASE_S", default=30.0)
AUDIT_WEBHOOK_BACKOFF_MAX_S = env.float("AUDIT_WEBHOOK_BACKOFF_MAX_S", default=3600.0)
AUDIT_WEBHOOK_TIMEOUT_S = env.float("AUDIT_WEBHOOK_TIMEOUT_S", default=10.0)
# How long a process trusts its list of orgs with a webhook (a later one is swept up anyway).
AUDIT_WEBHOOK_ORG_CACHE_S = env.float("AUDIT_WEBHOOK_ORG_CACHE_S", default=5.0)
# http:// and loopback targets (127.0.0.1, ::1, localhost): local development and tests only.
AUDIT_WEBHOOK_ALLOW_LOOPBACK = env.bool("AUDIT_WEBHOOK_ALLOW_LOOPBACK", default=DEBUG)
# Private, link-local and other non-public addresses are refused (SSRF) unless allowed here.
AUDIT_WEBHOOK_ALLOW_PRIVATE_NETWORKS = env.bool(
    "AUDIT_WEBHOOK_ALLOW_PRIVATE_NETWORKS", default=False
)
# Outbound proxy for deliveries, e.g. "http://egress-proxy:3128" (none by default).
AUDIT_WEBHOOK_PROXY = env.str("AUDIT_WEBHOOK_PROXY", default="")
# Fernet key(s) for the stored webhook secrets, comma-separated (the first encrypts). Empty:
# derived from SECRET_KEY (and SECRET_KEY_FALLBACKS) with HKDF.
AUDIT_WEBHOOK_ENCRYPTION_KEYS = env.list("AUDIT_WEBHOOK_ENCRYPTION_KEYS", default=[])

CELERY_BEAT_SCHEDULE.update(
    {
        "audit-ingest-cloudtrail": {
            "task": "integrations.tasks.ingest_all_cloudtrail",
            "schedule": timedelta(seconds=AUDIT_INGEST_INTERVAL_S),
        },
        "audit-webhook-sweep": {
            "task": "audit.tasks.sweep_webhook_deliveries",
            "schedule": timedelta(minutes=1),
        },
        "audit-sign-digests": {
            "task": "audit.tasks.sign_chain_digests",
            # Exports say when the next digest is due (audit.digests.digest_schedule).
            "schedule": timedelta(seconds=env.float("AUDIT_DIGEST_INTERVAL_S", default=3600.0)),
        },
        "audit-verify-chains": {
            "task": "audit.tasks.verify_audit_chains",
            "schedule": timedelta(days=1),
        },
        "audit-retention": {
            "task": "audit.tasks.purge_expired_audit_events",
            "schedule": timedelta(days=1),
        },
    }
)

# --- The REST API (/api/v1/, the api app) -----------------------------------------------------
# The cache holds the per-token rate limits: in production point CACHE_URL at Redis so every
# gunicorn worker counts against the same limit (the default is per process).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
API_TOKEN_MAX_LIFETIME_DAYS = 365
# Requests per token (and, before a token is known, per client address); api.throttling.
API_RATE_LIMITS = {
    "api_token": env.str("API_TOKEN_RATE", default="300/min"),
    "api_anon": env.str("API_ANON_RATE", default="120/min"),
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.ApiTokenRateThrottle"],
    "EXCEPTION_HANDLER": "api.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "api.schema.ApiAutoSchema",
    "UNAUTHENTICATED_USER": None,
    # ``format`` is the audit export's own parameter (json or csv), not DRF's renderer switch.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "BYOK Portal API",
    "DESCRIPTION": (
        "Read your organization's BYOK connection, sites, requests and audit events, and pull "
        "the kill switch from a security playbook. Authenticate with an org API token "
        "(`Authorization: Bearer byok_…`), created by an org admin on the API tokens page. "
        "Errors are RFC 9457 problem details (`application/problem+json`). Restoring key "
        "access is deliberately not in the API: it stays in the browser, with step-up."
    ),
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_links",
    ],
}
