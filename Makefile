# Two commands do all set-up on a fresh machine:
#   make demo   run the product (SQLite, filesystem broker, a real worker, demo data)
#   make test   run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CPU build from the local wheel cache; the `ml` extra's range accepts it, so pip
# installs nothing bigger on top.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: venv demo test lint migrate clean

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[ml,dev]"
	# The Python client (its own package; its tests are in tests/ and run against a live server).
	$(PIP) install -q -e clients/python
	touch $@

venv: $(VENV)/.installed

demo: venv
	DEBUG=1 $(PY) manage.py demo

# Production settings (DEBUG off) except HTTPS: the test servers speak plain HTTP.
TEST_ENV = SECRET_KEY=$${SECRET_KEY:-test-only-secret-key-not-for-production-0123456789} \
	SECURE_SSL_REDIRECT=0 SESSION_COOKIE_SECURE=0 CSRF_COOKIE_SECURE=0 SECURE_HSTS_SECONDS=0

test: venv
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf var/ staticfiles/ .pytest_cache
