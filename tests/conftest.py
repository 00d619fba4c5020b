"""Shared fixtures: the roles (an annotator, a second annotator, a reviewer, a project
admin, staff, an outsider from another project), API clients, and the CI rule that
integration tests and data-dependent tests fail rather than skip when
ORDINAL_REQUIRE_INTEGRATION=1 (set by .ci/run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from labeling.models import Project, Role
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

REQUIRE_INTEGRATION = os.environ.get("ORDINAL_REQUIRE_INTEGRATION") == "1"
SHARED_DATA = Path(
    os.environ.get("ORDINAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def integration_configured() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")) and bool(
        os.environ.get("REDIS_URL")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if integration_configured():
        return
    skip = pytest.mark.skip(reason="integration test: set DATABASE_URL (PostgreSQL) and REDIS_URL")
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    strict = REQUIRE_INTEGRATION and (
        item.get_closest_marker("integration") or item.get_closest_marker("browser")
        or "shared_data" in getattr(item, "fixturenames", ())
    )
    if strict and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run it: {report.longrepr}"


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hasher() -> Iterator[None]:
    """See tests/hashers.py: a second per user created adds minutes to the suite."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["tests.hashers.OneIterationPBKDF2PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _eager_celery(request: pytest.FixtureRequest) -> Iterator[None]:
    """Unit tests run tasks inline; integration tests use a real worker."""
    from config.celery import app

    eager = request.node.get_closest_marker("integration") is None
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = eager
    yield
    app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, settings) -> None:  # noqa: ANN001 - pytest-django
    settings.UPLOAD_ROOT = tmp_path / "uploads"
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


@pytest.fixture(autouse=True)
def _empty_cache(request: pytest.FixtureRequest, settings) -> None:  # noqa: ANN001 - pytest-django
    """The cache holds the sign-in throttle's counts, so a unit test gets an empty one: one
    test's sign-ins must not throttle the next test's. Always in memory: with REDIS_URL
    set the cache is Redis, whose database the broker shares, and is never flushed here."""
    if request.node.get_closest_marker("integration"):
        return
    from django.core.cache import cache

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": "unit-tests"}}
    cache.clear()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def project(db: None) -> Project:
    return ProjectFactory(slug="alpha", name="Alpha")


@pytest.fixture
def other_project(db: None) -> Project:
    return ProjectFactory(slug="beta", name="Beta")


def _member(project: Project, role: str, username: str):  # noqa: ANN202
    user = UserFactory(username=username)
    MembershipFactory(user=user, project=project, role=role)
    return user


@pytest.fixture
def annotator(project: Project):  # noqa: ANN201
    return _member(project, Role.ANNOTATOR, "ann1")


@pytest.fixture
def second_annotator(project: Project):  # noqa: ANN201
    return _member(project, Role.ANNOTATOR, "ann2")


@pytest.fixture
def reviewer(project: Project):  # noqa: ANN201
    return _member(project, Role.REVIEWER, "rev1")


@pytest.fixture
def project_admin(project: Project):  # noqa: ANN201
    return _member(project, Role.ADMIN, "padmin")


@pytest.fixture
def outsider(other_project: Project):  # noqa: ANN201
    """An admin of the other project: powerful there, nobody here."""
    return _member(other_project, Role.ADMIN, "outsider")


@pytest.fixture
def staff(db: None):  # noqa: ANN201
    return UserFactory(username="staff", is_staff=True)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def client_for(user) -> APIClient:  # noqa: ANN001
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def as_user():  # noqa: ANN201
    return client_for


_suite_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("/")
    suite = parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]
    _suite_seconds[suite] = _suite_seconds.get(suite, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _suite_seconds:
        terminalreporter.section("suite durations")
        for suite, seconds in sorted(_suite_seconds.items()):
            terminalreporter.write_line(f"{suite:<12} {seconds:8.1f} s")


TINY_CACHE = Path(os.environ.get("ORDINAL_TEST_CACHE", Path(__file__).resolve().parents[1]
                                 / "var" / "test-cache")) / "builtin-tiny"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The real built-in tiny model, built once (about a minute on one core) and reused by
    later runs: the same code path as production, no downloads."""
    from training.engine.tiny import ensure_tiny_model

    return ensure_tiny_model(TINY_CACHE, num_threads=1)


@pytest.fixture
def tiny_model(tiny_model_dir: Path, settings) -> Path:  # noqa: ANN001 - pytest-django
    settings.BUILTIN_TINY_DIR = tiny_model_dir
    return tiny_model_dir
