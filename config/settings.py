"""Ordinal's settings: one file, every knob read from the environment.

Each variable goes through a small strict helper; a malformed value raises
ImproperlyConfigured naming the variable, so a typo fails at boot, not at 3 a.m.
Defaults give the embedded setup (`make demo`): SQLite and a filesystem Celery broker
under var/. Production sets DATABASE_URL, REDIS_URL, SECRET_KEY and ALLOWED_HOSTS.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ORDINAL_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [part.strip() for part in value.split(",") if part.strip()]


ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ENDPOINT_KEYS = {"base_url", "api_key_env", "models", "allow_private"}


def generation_endpoints(raw: str | None, *, openai_key: bool, openai_base_url: str | None) -> dict:
    """GENERATION_ENDPOINTS: a JSON object, name -> {"base_url", "api_key_env" (the name of
    the variable holding its key, optional), "models" (allowed model names, optional),
    "allow_private" (default false)}. The only places the openai backend sends prompts and
    keys. Unset: one endpoint "openai" (OPENAI_BASE_URL or api.openai.com, keyed by
    OPENAI_API_KEY) when either of those is set, else none."""
    name = "GENERATION_ENDPOINTS"
    if raw is None:
        if not (openai_key or openai_base_url):
            return {}
        raw = json.dumps({"openai": {"base_url": openai_base_url or "https://api.openai.com/v1",
                                     "api_key_env": "OPENAI_API_KEY" if openai_key else ""}})
        name = "OPENAI_BASE_URL"
    try:
        value = json.loads(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a JSON object, got {raw[:80]!r}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object of name -> endpoint")
    return {key: _endpoint(name, key, entry) for key, entry in value.items()}


def _endpoint(variable: str, name: str, entry: object) -> dict:
    where = f"{variable}[{name!r}]"
    if not ENDPOINT_NAME.match(name):
        raise ImproperlyConfigured(f"{where}: a name is letters, digits, '.', '_' or '-'")
    if not isinstance(entry, dict) or set(entry) - ENDPOINT_KEYS or "base_url" not in entry:
        raise ImproperlyConfigured(f"{where} must be an object with base_url and optionally "
                                   f"api_key_env, models, allow_private (nothing else)")
    url = entry["base_url"]
    parts = urlsplit(url) if isinstance(url, str) else None
    if (parts is None or parts.scheme not in {"http", "https"} or not parts.hostname
            or parts.username or parts.password or parts.query or parts.fragment):
        raise ImproperlyConfigured(f"{where}.base_url must be an http(s) URL with a host and "
                                   "no credentials, query or fragment (keys go in api_key_env)")
    key_env, models = entry.get("api_key_env", ""), entry.get("models", [])
    if not isinstance(key_env, str) or (key_env and not ENV_NAME.match(key_env)):
        raise ImproperlyConfigured(f"{where}.api_key_env must name an environment variable")
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ImproperlyConfigured(f"{where}.models must be a list of model names")
    if not isinstance(entry.get("allow_private", False), bool):
        raise ImproperlyConfigured(f"{where}.allow_private must be true or false")
    return {"base_url": url.rstrip("/"), "api_key_env": key_env, "models": models,
            "allow_private": entry.get("allow_private", False)}


def oidc_group_roles(raw: str | None) -> dict[str, dict[str, str]]:
    """OIDC_GROUP_ROLES: a JSON object, IdP group -> {project slug -> role}. At each SSO
    sign-in the user's role in every project it names is the highest its groups grant
    (none: no membership there); other projects are managed in Ordinal."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ImproperlyConfigured(f"OIDC_GROUP_ROLES must be a JSON object, got {raw[:80]!r}") from None
    roles = {"annotator", "reviewer", "admin"}
    if not isinstance(value, dict) or not all(
            isinstance(group, str) and isinstance(grants, dict)
            and all(isinstance(slug, str) and role in roles for slug, role in grants.items())
            for group, grants in value.items()):
        raise ImproperlyConfigured("OIDC_GROUP_ROLES must map group -> {project slug -> annotator, reviewer "
                                   "or admin}")
    return value


def model_dirs(name: str, values: list[str]) -> list[Path]:
    """MODEL_DIRS: absolute folders whose sub-folders may be named as local models."""
    folders = [Path(value) for value in values]
    relative = [str(folder) for folder in folders if not folder.is_absolute()]
    if relative:
        raise ImproperlyConfigured(f"{name} takes absolute paths, got {', '.join(relative)}")
    return folders


def database_from_url(name: str, url: str) -> dict:
    """Translate postgres://user:pass@host:port/db?opt=v or sqlite:///path into DATABASES."""
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        if not parts.path.strip("/"):
            raise ImproperlyConfigured(f"{name} must name a database, got {url!r}")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": dict(parse_qsl(parts.query)),
        }
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        elif path.startswith("/"):
            path = path[1:]
        if not path:
            raise ImproperlyConfigured(f"{name} must give a file path, got {url!r}")
        return sqlite_database(Path(path) if Path(path).is_absolute() else BASE_DIR / path)
    raise ImproperlyConfigured(f"{name} must be a postgres:// or sqlite:/// URL, got {url!r}")


def sqlite_database(path: Path) -> dict:
    # WAL lets the web process read while the worker writes; IMMEDIATE takes the write
    # lock at BEGIN, so two writers queue on busy_timeout instead of failing with
    # "database is locked" when a read transaction tries to upgrade.
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
            ),
        },
    }


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required unless DEBUG=1")
    SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"  # noqa: S105
elif not DEBUG and (len(SECRET_KEY) < 32 or SECRET_KEY.startswith("change-me")):
    raise ImproperlyConfigured("SECRET_KEY must be a random value of at least 32 characters")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_prometheus",
    "csp",
    "axes",
    "core",
    "accounts",
    "labeling",
    "guidelines",
    "training",
    "webhooks",
    "judges",
    "erasure",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "config.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Login lockout (django-axes): after AXES_FAILURE_LIMIT failures for one username from
# one address, that pair is locked out for AXES_COOLOFF_MINUTES. Covers the login page
# and the API's token endpoint (both authenticate with the request). A locked account's
# refusal takes as long as a wrong password (accounts/backends.py).
AUTHENTICATION_BACKENDS = [
    "accounts.backends.LockoutBackend",
    "accounts.backends.PasswordBackend",
]
# Single sign-on with OpenID Connect (accounts/oidc.py, mozilla-django-oidc): on when
# OIDC_ISSUER is set; its endpoints come from the issuer's discovery document. Sign-in uses
# the authorization code flow with PKCE. LOCAL_PASSWORDS=0 turns the password sign-in
# (login form, POST /api/auth/token, invites, accounts made with a password) off.
OIDC_ISSUER = (env_str("OIDC_ISSUER", "") or "").rstrip("/")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID", "")
OIDC_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET", "")
OIDC_SCOPES = env_str("OIDC_SCOPES", "openid email profile")
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "")
OIDC_GROUP_ROLES = oidc_group_roles(env_str("OIDC_GROUP_ROLES"))
LOCAL_PASSWORDS = env_bool("LOCAL_PASSWORDS", True)
if OIDC_ISSUER:
    if not re.fullmatch(r"https?://[^?#\s]+", OIDC_ISSUER) or not (OIDC_CLIENT_ID and OIDC_CLIENT_SECRET):
        raise ImproperlyConfigured("OIDC_ISSUER must be an http(s) URL, with OIDC_CLIENT_ID and OIDC_CLIENT_SECRET set")
    AUTHENTICATION_BACKENDS.append("accounts.oidc.OidcBackend")
elif not LOCAL_PASSWORDS:
    raise ImproperlyConfigured("LOCAL_PASSWORDS=0 needs single sign-on (OIDC_ISSUER): nobody could sign in")
# mozilla-django-oidc's names for the same values (its views and backend read these).
OIDC_RP_CLIENT_ID, OIDC_RP_CLIENT_SECRET, OIDC_RP_SCOPES = OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_SCOPES
OIDC_RP_SIGN_ALGO = env_str("OIDC_SIGN_ALGO", "RS256")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = 10
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "accounts.backends.client_ip"  # the sign-in throttle's rule (NUM_PROXIES)
# Personal data axes keeps (erasure/services/users.py removes a person's rows): usernames
# only as a keyed hash (accounts.backends.lockout_username), no log of every successful
# sign-in with its address and browser (AccessLog; lockout needs only the failures), and
# no username, address or browser in its log lines.
AXES_USERNAME_CALLABLE = "accounts.backends.lockout_username"
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "user_agent"]

# Security headers. Behind a TLS-terminating proxy set TRUST_X_FORWARDED_PROTO=1.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes speak plain HTTP
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Enforced (not report-only): no inline scripts anywhere; data reaches JS through
# data- attributes and json_script. Swagger UI is served split (no inline script).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# /metrics answers only "Authorization: Bearer <METRICS_TOKEN>" (or a staff session);
# unset, it is closed (404) to everyone else.
METRICS_TOKEN = env_str("METRICS_TOKEN")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

_database_url = env_str("DATABASE_URL")
DATABASES = {
    "default": (
        database_from_url("DATABASE_URL", _database_url)
        if _database_url
        else sqlite_database(VAR_DIR / "ordinal.sqlite3")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))

# Artifacts (datasets, checkpoints, models) and uploads live outside any served path.
ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(VAR_DIR / "artifacts")))
# Optional mirror of ARTIFACT_ROOT on object storage (training/artifacts.py): s3://bucket/prefix
# or any fsspec URL. Empty: the shared volume is the only storage.
ARTIFACT_STORAGE_URL = env_str("ARTIFACT_STORAGE_URL", "")
UPLOAD_ROOT = Path(env_str("UPLOAD_ROOT", str(VAR_DIR / "uploads")))
IMPORT_MAX_UPLOAD_BYTES = env_int("IMPORT_MAX_UPLOAD_BYTES", 512 * 1024 * 1024, minimum=1)
IMPORT_MAX_TEXT_CHARS = env_int("IMPORT_MAX_TEXT_CHARS", 100_000, minimum=1)
IMPORT_CHUNK_ROWS = env_int("IMPORT_CHUNK_ROWS", 1000, minimum=1)
# Read while streaming, so a file cannot take the worker's memory: the longest line (a CSV
# row) and, for gzip and Parquet, the most bytes the file may inflate to.
IMPORT_MAX_LINE_BYTES = env_int("IMPORT_MAX_LINE_BYTES", 8 * 1024 * 1024, minimum=1024)
IMPORT_MAX_DECOMPRESSED_BYTES = env_int("IMPORT_MAX_DECOMPRESSED_BYTES", 4 * 1024**3, minimum=1)
# Prompt metadata (extra columns, the "metadata" object): JSON size, keys in all its
# objects together, nesting depth.
IMPORT_MAX_METADATA_BYTES = env_int("IMPORT_MAX_METADATA_BYTES", 64 * 1024, minimum=2)
IMPORT_MAX_METADATA_KEYS = env_int("IMPORT_MAX_METADATA_KEYS", 256, minimum=1)
IMPORT_MAX_METADATA_DEPTH = env_int("IMPORT_MAX_METADATA_DEPTH", 10, minimum=1)
# Uploads stream to disk past this size instead of being held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None

INVITE_TTL_HOURS = env_int("INVITE_TTL_HOURS", 72, minimum=1)
# Raw exports identify annotators as HMAC(EXPORT_SALT, user id); derived from SECRET_KEY
# when unset. Changing it changes every pseudonym in later exports.
EXPORT_SALT = env_str("EXPORT_SALT")
ORDINAL_COMMIT = env_str("ORDINAL_COMMIT", "")  # recorded in dataset manifests
# On PostgreSQL a snapshot build reads the next batches of items on a thread (its own
# connection) while it writes the current one; off: read and write take turns.
SNAPSHOT_READ_AHEAD = env_bool("SNAPSHOT_READ_AHEAD", True)

# Generation and training workers.
GENERATION_CHUNK_PROMPTS = env_int("GENERATION_CHUNK_PROMPTS", 8, minimum=1)
# AI judges (judges/): seconds one request to a judge endpoint may take, and how often a
# throttled (429), failing (5xx) or timed-out request is retried before the run stops
# (a stopped run resumes where it was when started again).
JUDGE_REQUEST_TIMEOUT_SECONDS = env_int("JUDGE_REQUEST_TIMEOUT_SECONDS", 120, minimum=1)
JUDGE_MAX_RETRIES = env_int("JUDGE_MAX_RETRIES", 5, minimum=0)
# Where the built-in tiny model is built on first use (no downloads).
BUILTIN_TINY_DIR = Path(env_str("BUILTIN_TINY_DIR", str(ARTIFACT_ROOT / "models" / "builtin-tiny")))
# CPU threads per worker process for torch. 1 by default: on a shared CPU, two threads
# per process fighting over two cores made training steps 8-10x slower. 0: torch's default.
TORCH_NUM_THREADS = env_int("TORCH_NUM_THREADS", 1, minimum=0)
# Where the openai backend may send prompts and keys (the only places): see
# generation_endpoints above. The key itself stays in its variable, read by the worker.
GENERATION_ENDPOINTS = generation_endpoints(
    env_str("GENERATION_ENDPOINTS"), openai_key=bool(env_str("OPENAI_API_KEY")),
    openai_base_url=env_str("OPENAI_BASE_URL"))
# Pushing snapshots to the Hugging Face Hub (training/hub.py): the Hub's address and a
# token with write access. Empty token: pushes are off. Never taken from a request.
HF_ENDPOINT = (env_str("HF_ENDPOINT", "https://huggingface.co") or "").rstrip("/")
HF_HUB_PUSH_TOKEN = env_str("HF_HUB_PUSH_TOKEN", "")
# Webhooks (webhooks/): the hosts their URLs may name ("hooks.example.com", or
# ".example.com" for it and its sub-domains); empty: no webhook can be created. Delivery
# connects only to public addresses unless WEBHOOK_ALLOW_PRIVATE=1 (as generation endpoints'
# allow_private). Failed deliveries are retried WEBHOOK_MAX_ATTEMPTS times in all, waiting
# WEBHOOK_RETRY_SECONDS, then twice that, ... between attempts.
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS", [])
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)
WEBHOOK_RETRY_SECONDS = env_int("WEBHOOK_RETRY_SECONDS", 30, minimum=1)
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# The site's public origin (https://ordinal.example.com): webhook bodies link to it.
# Empty: the links are paths (/api/datasets/7).
PUBLIC_BASE_URL = (env_str("PUBLIC_BASE_URL", "") or "").rstrip("/")
if PUBLIC_BASE_URL and not re.fullmatch(r"https?://[^/?#\s]+", PUBLIC_BASE_URL):
    raise ImproperlyConfigured(f"PUBLIC_BASE_URL must be a scheme and host like https://ordinal.example.com, "
                               f"got {PUBLIC_BASE_URL!r}")
# Folders whose sub-folders generation and training may load as local models; any other
# path is refused (training/model_refs.py).
MODEL_DIRS = model_dirs("MODEL_DIRS", env_list("MODEL_DIRS", []))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "accounts.tokens.ApiTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "core.api.ErrorDocumentingAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    # JSON is the API's one body format (uploads and the token sign-in set their own parsers):
    # form encodings cannot carry the types the schema states, so DRF would coerce them.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    # POST /api/auth/token, per client address (a password hash costs about a second of CPU).
    "DEFAULT_THROTTLE_RATES": {"token_signin": env_str("API_TOKEN_SIGNIN_RATE", "20/minute")},
    # Proxies in front that append to X-Forwarded-For (docker compose: Caddy, 1). 0: the
    # client is REMOTE_ADDR and the header is ignored; DRF's default would trust any
    # header a client sends, so a forged one would escape the throttle.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0, minimum=0),
}
if not re.fullmatch(r"[1-9]\d*/(second|minute|hour|day)", REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token_signin"]):
    raise ImproperlyConfigured("API_TOKEN_SIGNIN_RATE must look like 20/minute (per second, minute, hour or day), "
                               f"got {REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['token_signin']!r}")
# API tokens (accounts/tokens.py) expire this many days after they are made.
API_TOKEN_TTL_DAYS = env_int("API_TOKEN_TTL_DAYS", 90, minimum=1)
# How long a process keeps a checked token and its user (accounts/tokens.py); changes
# made in the same process drop them at once, other processes' copies age out.
API_TOKEN_CACHE_SECONDS = env_int("API_TOKEN_CACHE_SECONDS", 5, minimum=0)
SPECTACULAR_SETTINGS = {
    "TITLE": "Ordinal API",
    "DESCRIPTION": "Human-preference labeling for RLHF: projects, prompts, rankings, runs.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "core.api.closed_request_bodies"],
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "core.runs.Run.Status",
        "ItemStatusEnum": "labeling.models.Item.Status",
        "ProjectStatusEnum": "labeling.models.Project.Status",
        "TrainingKindEnum": "training.models.TrainingRun.Kind",
        "ModelKindEnum": "training.models.ModelVersion.Kind",
        "WebhookEventTypeEnum": "webhooks.models.EventType",
        "JudgeKindEnum": "judges.models.Judge.Kind",
    },
}

# Celery. With no REDIS_URL the broker is kombu's filesystem transport under var/broker,
# so `make demo` runs a real worker process with no server installed.
REDIS_URL = env_str("REDIS_URL")
BROKER_DIR = VAR_DIR / "broker"
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, got {REDIS_URL!r}")
    CELERY_BROKER_URL = REDIS_URL
    # A backstop only: the database sweep recovers runs long before this redelivers.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 48 * 3600, minimum=60)
    }
    # The cache (the sign-in throttle's counters) too: every web process counts together.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": "ordinal"}}
    # Sessions read from that shared cache, written to both (#19: one query less per
    # page request). Only with a cache every process shares: a per-process cache would
    # keep serving a session another process ended.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # kombu's default is ./control, relative to wherever the process started.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    # Per process: the sign-in throttle then counts per web process.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True  # the database holds every outcome
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# Runs (imports, generation, training) keep a heartbeat; the sweep re-queues a run whose
# heartbeat is older than RUN_STALE_AFTER_SECONDS and fails it after RUN_MAX_ATTEMPTS.
RUN_HEARTBEAT_SECONDS = env_int("RUN_HEARTBEAT_SECONDS", 15, minimum=1)
RUN_STALE_AFTER_SECONDS = env_int("RUN_STALE_AFTER_SECONDS", 120, minimum=1)
RUN_MAX_ATTEMPTS = env_int("RUN_MAX_ATTEMPTS", 3, minimum=1)
RUN_SWEEP_INTERVAL_SECONDS = env_int("RUN_SWEEP_INTERVAL_SECONDS", 60, minimum=1)
LEASE_SWEEP_INTERVAL_SECONDS = env_int("LEASE_SWEEP_INTERVAL_SECONDS", 60, minimum=1)
# Time limit of one attempt of a run, per kind (seconds). At the soft limit the task
# stops and its run fails with "time limit exceeded"; RUN_TIME_LIMIT_GRACE_SECONDS later
# Celery kills the process, and the sweep fails (never re-queues) a run killed that way.
RUN_SOFT_TIME_LIMITS = {
    "labeling.tasks.import_prompts": env_int("IMPORT_TIME_LIMIT_SECONDS", 2 * 3600, minimum=1),
    "training.tasks.build_snapshot": env_int("SNAPSHOT_TIME_LIMIT_SECONDS", 2 * 3600, minimum=1),
    "training.tasks.generate_candidates": env_int("GENERATION_TIME_LIMIT_SECONDS", 24 * 3600,
                                                  minimum=1),
    "training.tasks.train_run": env_int("TRAINING_TIME_LIMIT_SECONDS", 47 * 3600, minimum=1),
    "training.tasks.push_to_hub": env_int("HUB_PUSH_TIME_LIMIT_SECONDS", 3600, minimum=1),
    "judges.tasks.generate_judgements": env_int("JUDGE_RUN_TIME_LIMIT_SECONDS", 24 * 3600, minimum=1),
}
RUN_TIME_LIMIT_GRACE_SECONDS = env_int("RUN_TIME_LIMIT_GRACE_SECONDS", 60, minimum=1)
CELERY_TASK_ANNOTATIONS = {
    name: {"soft_time_limit": soft, "time_limit": soft + RUN_TIME_LIMIT_GRACE_SECONDS}
    for name, soft in RUN_SOFT_TIME_LIMITS.items()
}
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-runs": {
        "task": "core.tasks.sweep_stale_runs",
        "schedule": float(RUN_SWEEP_INTERVAL_SECONDS),
    },
    "resend-webhook-deliveries": {
        "task": "webhooks.tasks.resend_due_deliveries",
        "schedule": float(RUN_SWEEP_INTERVAL_SECONDS),
    },
    "expire-leases": {
        "task": "labeling.tasks.expire_leases",
        "schedule": float(LEASE_SWEEP_INTERVAL_SECONDS),
    },
}

LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.observability.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "config.observability.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT,
                    "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
