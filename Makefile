# BYOK Portal developer commands. `make run` and `make test` install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.requirements.sha256
CHROMIUM := /usr/bin/chromium
PORT ?= 8000
MOTO_PORT ?= 5000
# Extra pytest arguments for any lane, e.g. `make test-unit PYTEST_ARGS="-k audit -x"`.
PYTEST_ARGS ?=

SERVICES_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/byokportal
SERVICES_BROKER_URL ?= redis://127.0.0.1:6379/5

FAKE_AWS := AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
	AWS_SECURITY_TOKEN=testing AWS_SESSION_TOKEN=testing AWS_DEFAULT_REGION=us-east-1
# Every lane: DEBUG on (the settings default is off), fake AWS, a throw-away var/ dir.
# SQLite and the filesystem broker unless the lane says otherwise (later assignments win).
LANE_ENV = env -u AWS_ENDPOINT_URL -u AWS_PROFILE \
	DJANGO_SETTINGS_MODULE=byokportal.settings DEBUG=1 $(FAKE_AWS) PYTHONDONTWRITEBYTECODE=1 \
	BYOK_VAR_DIR="$$var_dir" DATABASE_URL="sqlite:///$$var_dir/db.sqlite3" \
	CELERY_BROKER_URL=filesystem://

# run_lane(name, env, pytest args): a temp BYOK_VAR_DIR; exit 5 ("no tests collected") fails.
define run_lane
	@echo "==> $(1) lane"
	@var_dir=$$(mktemp -d -t byok-$(1)-XXXXXX); trap 'rm -rf "$$var_dir"' EXIT; \
	rc=0; $(LANE_ENV) $(2) $(BIN)/python -m pytest $(3) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "!! $(1) lane collected no tests: that is a failure" >&2; fi; \
	exit $$rc
endef

.PHONY: help deps browser-deps run prod-run test test-unit test-services test-browser services lint fmt bench clean prod-check

help:
	@echo "make run            the portal on http://127.0.0.1:$(PORT) (demo data, moto as AWS, worker + beat)"
	@echo "make prod-run       production settings: gunicorn + Celery workers + beat on PostgreSQL and Redis"
	@echo "make test           every lane: test-unit, test-services, test-browser"
	@echo "make test-unit      pytest tests/ minus integration/ and e2e/ (SQLite, eager Celery, mock_aws)"
	@echo "make test-services  tests/integration (PostgreSQL, Redis, real Celery worker, moto server)"
	@echo "make test-browser   tests/e2e (Playwright + Debian chromium against a live server)"
	@echo "make lint | fmt     ruff, import-linter contracts (.importlinter), module size | fix + format"
	@echo "make prod-check     check --deploy + collectstatic with production settings, bandit, pip-audit"
	@echo "make bench B=name   python -m bench <name> (B=all for every benchmark)"

# --- installation ------------------------------------------------------------------------
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalls when requirements*.txt change (content hash, not mtime).
deps: $(BIN)/python
	@want=$$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(DEPS_STAMP) 2>/dev/null)" != "$$want" ]; then \
		echo "==> installing requirements-dev.txt into $(VENV)"; \
		$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt; \
		echo "$$want" > $(DEPS_STAMP); \
	fi

browser-deps:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "==> installing Debian chromium"; \
		sudo=; if [ "$$(id -u)" != 0 ]; then sudo=sudo; fi; \
		$$sudo apt-get update -q; \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q chromium; \
	fi

# --- running -----------------------------------------------------------------------------
run: deps
	@PORT=$(PORT) MOTO_PORT=$(MOTO_PORT) $(BIN)/python scripts/run_demo.py

# Production settings on this machine (scripts/prod_run.py): the Procfile's processes.
prod-run: deps
	@PORT=$(PORT) MOTO_PORT=$(MOTO_PORT) $(BIN)/python scripts/prod_run.py

bench: deps
	@$(BIN)/python -m bench $(or $(B),all)

# --- tests -------------------------------------------------------------------------------
# All three lanes run (in order) even if one fails, so one run reports everything.
test: deps browser-deps
	@failed=; \
	$(MAKE) --no-print-directory test-unit || failed="$$failed test-unit"; \
	$(MAKE) --no-print-directory test-services || failed="$$failed test-services"; \
	$(MAKE) --no-print-directory test-browser || failed="$$failed test-browser"; \
	if [ -n "$$failed" ]; then echo "!! failed:$$failed" >&2; exit 1; fi; \
	echo "==> all lanes passed"

test-unit: deps
	$(call run_lane,unit,CELERY_TASK_ALWAYS_EAGER=1,tests --ignore=tests/integration --ignore=tests/e2e)

services: deps
	@DATABASE_URL=$(SERVICES_DATABASE_URL) CELERY_BROKER_URL=$(SERVICES_BROKER_URL) \
		$(BIN)/python scripts/ensure_services.py

test-services: services
	$(call run_lane,services,DATABASE_URL=$(SERVICES_DATABASE_URL) CELERY_BROKER_URL=$(SERVICES_BROKER_URL) CELERY_TASK_ALWAYS_EAGER=0,tests/integration)

test-browser: deps browser-deps
	$(call run_lane,browser,CELERY_TASK_ALWAYS_EAGER=1 DJANGO_ALLOW_ASYNC_UNSAFE=true,tests/e2e)

# --- code quality ------------------------------------------------------------------------
lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_module_size.py

# --- production readiness ----------------------------------------------------------------
# Production-like settings: DEBUG off, a random SECRET_KEY and audit signing key, PostgreSQL and
# Redis URLs (never connected to: check --deploy needs no database), a throw-away var/ dir.
BANDIT_PATHS := byokportal api core orgs audit security connections dataplane review setup reencryption integrations manage.py
# pip-audit asks PyPI's JSON API for known vulnerabilities: run only when that answers.
PIP_AUDIT_PROBE := import json, sys, urllib.request; \
	url = "https://pypi.org/pypi/django/4.2/json"; \
	body = json.load(urllib.request.urlopen(url, timeout=5)); \
	sys.exit(0 if "vulnerabilities" in body else 1)

prod-check: deps
	@echo "==> production checks"
	@var_dir=$$(mktemp -d -t byok-prod-XXXXXX); trap 'rm -rf "$$var_dir"' EXIT; \
	secret=$$($(BIN)/python -c "import secrets; print(secrets.token_urlsafe(64))"); \
	signing=$$($(BIN)/python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"); \
	prod="env -u AWS_ENDPOINT_URL -u AWS_PROFILE DJANGO_SETTINGS_MODULE=byokportal.settings DEBUG=0 \
		SECRET_KEY=$$secret AUDIT_SIGNING_KEY=$$signing BYOK_VAR_DIR=$$var_dir \
		ALLOWED_HOSTS=byok.vendor.example CSRF_TRUSTED_ORIGINS=https://byok.vendor.example \
		DATABASE_URL=postgres://byok:byok@db.vendor.example:5432/byokportal \
		CELERY_BROKER_URL=redis://redis.vendor.example:6379/0 \
		EMAIL_URL=smtp+tls://mailer@smtp.vendor.example:587"; \
	echo "--> manage.py check --deploy --fail-level WARNING"; \
	$$prod $(BIN)/python manage.py check --deploy --fail-level WARNING; \
	echo "--> manage.py collectstatic (CompressedManifestStaticFilesStorage)"; \
	$$prod $(BIN)/python manage.py collectstatic --noinput --verbosity 0; \
	test -s "$$var_dir/staticfiles/staticfiles.json"; \
	echo "--> bandit $(BANDIT_PATHS)"; \
	$(BIN)/bandit -c pyproject.toml -q -r $(BANDIT_PATHS); \
	if $(BIN)/python -c '$(PIP_AUDIT_PROBE)' >/dev/null 2>&1; then \
		echo "--> pip-audit -r requirements.txt"; \
		$(BIN)/pip-audit --progress-spinner off -r requirements.txt; \
	else \
		echo "--> pip-audit skipped: PyPI's vulnerability data is not reachable from here"; \
	fi; \
	echo "==> production checks passed"

fmt: deps
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .pytest_cache .ruff_cache test-results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
