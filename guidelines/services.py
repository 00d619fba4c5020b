"""Guideline versions: drafts, publishing, the shipped files, acknowledgements.

A published version is immutable. Publishing a *major* version makes every annotator
of the projects that use the guideline acknowledge it (after reading the diff since the
version they last acknowledged) before they get another item; a *minor* one does not.
A person's draft and publish are audited in the log of every project the guideline binds
(guidelines.access.guideline_edit_problem says who may make them).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from core.audit import audit
from core.rendering import render_markdown
from guidelines.models import Acknowledgement, Guideline, GuidelineVersion

CONTENT_DIR = Path(__file__).with_name("content")
VERSION_FILE = re.compile(r"^v(\d{3,})\.md$")


class GuidelineError(Exception):
    """A rule about guideline versions was broken; the message says which."""

    code = "guideline_error"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def guideline_current_version(*, project: object) -> GuidelineVersion | None:
    """The latest published version of the project's guideline: the one a claim records."""
    guideline_id = getattr(project, "guideline_id", None)
    if guideline_id is None:
        return None
    return published_versions(guideline_id).first()


def guideline_projects(*, guideline: Guideline) -> QuerySet:
    """The projects a guideline binds: those that use it and the one that owns it."""
    from labeling.models import Project  # labeling.models loads after this module

    owner = Q(pk=guideline.project_id) if guideline.project_id else Q(pk__in=[])
    return Project.objects.filter(Q(guideline=guideline) | owner).order_by("id")


def _audit(*, actor: AbstractBaseUser | None, guideline: Guideline, action: str, target: object,
           before: object = None, after: object = None) -> None:
    """One event per project the guideline binds, so each one's log shows the change that
    reached its annotators (none for a guideline no project uses: one without a project).
    `actor` None (the file sync) is not a person's action and is not audited."""
    if actor is None or not actor.is_authenticated:
        return
    for project in list(guideline_projects(guideline=guideline)) or [None]:
        audit(actor=actor, project=project, action=action, target=target, before=before, after=after)


def published_versions(guideline_id: int):  # noqa: ANN201 - a QuerySet
    return GuidelineVersion.objects.filter(
        guideline_id=guideline_id, published_at__isnull=False
    ).order_by("-number")


# --------------------------------------------------------------------------- drafts


def draft_create(*, guideline: Guideline, body: str = "", changelog: str = "",
                 change: str = GuidelineVersion.Change.MAJOR, actor: AbstractBaseUser | None = None
                 ) -> GuidelineVersion:
    """A new editable draft numbered after the last version (starts from its text)."""
    last = guideline.versions.order_by("-number").first()
    if last is not None and not last.is_published:
        raise GuidelineError(f"v{last.number} is still a draft: edit or publish it first")
    try:
        with transaction.atomic():
            text = body or (last.body if last else "")
            draft = GuidelineVersion.objects.create(
                guideline=guideline, number=(last.number + 1) if last else 1,
                body=text, body_html=str(render_markdown(text)), changelog=changelog,
                change=change, sha256=sha256(text),
            )
            _audit(actor=actor, guideline=guideline, action="guideline.draft", target=draft,
                   after={"number": draft.number})
            return draft
    except IntegrityError:
        raise GuidelineError("that version number was just taken; reload and try again") from None


@transaction.atomic
def draft_update(*, version: GuidelineVersion, body: str, changelog: str, change: str,
                 actor: AbstractBaseUser | None = None) -> GuidelineVersion:
    if version.is_published:
        raise GuidelineError(f"v{version.number} is published and can no longer change")
    if change not in GuidelineVersion.Change.values:
        raise GuidelineError("change must be 'major' or 'minor'")
    GuidelineVersion.objects.filter(pk=version.pk, published_at__isnull=True).update(
        body=body, body_html=str(render_markdown(body)), changelog=changelog, change=change,
        sha256=sha256(body),
    )
    version.refresh_from_db()
    _audit(actor=actor, guideline=version.guideline, action="guideline.draft_update", target=version,
           after={"number": version.number, "change": change, "sha256": version.sha256})
    return version


@transaction.atomic
def version_publish(*, version: GuidelineVersion, user: AbstractBaseUser | None,
                    change: str | None = None) -> GuidelineVersion:
    """Freeze a draft. An empty draft, or one identical to the version before, can't be
    published. A person's publish is audited in the same transaction, in the log of every
    project the guideline binds; the file sync (`user` None) is not a reviewer/admin
    action and writes no audit event."""
    version = GuidelineVersion.objects.select_for_update().get(pk=version.pk)
    if version.is_published:
        raise GuidelineError(f"v{version.number} is already published")
    if not version.body.strip():
        raise GuidelineError("an empty guideline cannot be published")
    previous = published_versions(version.guideline_id).first()
    if previous is not None and previous.sha256 == sha256(version.body):
        raise GuidelineError(f"nothing changed since v{previous.number}")
    if previous is not None and previous.number > version.number:
        raise GuidelineError("a later version is already published")
    version.change = change or version.change
    version.sha256 = sha256(version.body)
    version.published_at = timezone.now()
    version.published_by = user if user and user.is_authenticated else None
    version.save(update_fields=["change", "sha256", "published_at", "published_by"])
    _audit(actor=version.published_by, guideline=version.guideline, action="guideline.publish",
           target=version, before={"number": previous.number if previous else None},
           after={"number": version.number, "change": version.change})
    return version


# --------------------------------------------------------------------------- files


@dataclass
class SyncReport:
    created: list[str]
    unchanged: list[str]
    errors: list[str]


def guidelines_sync(content_dir: Path = CONTENT_DIR) -> SyncReport:
    """Load `content/<slug>/vNNN.md` files: each new file is a new published version;
    a file whose text differs from its published version is an error (published text
    is immutable: write a new file instead). Running it twice changes nothing."""
    report = SyncReport([], [], [])
    for folder in sorted(p for p in content_dir.iterdir() if p.is_dir()):
        files = sorted((int(m.group(1)), f) for f in folder.iterdir()
                       if (m := VERSION_FILE.match(f.name)))
        if not files:
            continue
        with transaction.atomic():
            guideline, _ = Guideline.objects.get_or_create(
                slug=folder.name, defaults={"title": _title(files[0][1], folder.name)}
            )
            for number, path in files:
                _sync_file(guideline, number, path, report)
    return report


def _sync_file(guideline: Guideline, number: int, path: Path, report: SyncReport) -> None:
    label = f"{guideline.slug}/{path.name}"
    body = path.read_text(encoding="utf-8")
    existing = guideline.versions.filter(number=number).first()
    if existing is not None:
        if existing.is_published and existing.sha256 != sha256(body):
            report.errors.append(
                f"{label}: differs from published v{number}; published text is immutable, "
                f"add v{number + 1:03d}.md instead"
            )
        else:
            report.unchanged.append(label)
        return
    last = guideline.versions.aggregate(n=Max("number"))["n"] or 0
    if number < last:
        report.errors.append(f"{label}: v{last} already exists; version numbers only grow")
        return
    version = GuidelineVersion.objects.create(
        guideline=guideline, number=number, body=body, body_html=str(render_markdown(body)),
        sha256=sha256(body),
        change=GuidelineVersion.Change.MAJOR, changelog=f"loaded from {label}",
    )
    version_publish(version=version, user=None)
    report.created.append(label)


def _title(path: Path, fallback: str) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()[:200]
    return fallback


# --------------------------------------------------------------------------- gate


def acknowledgement_needed(*, user: AbstractBaseUser, project: object) -> GuidelineVersion | None:
    """The version the user must acknowledge before their next item, or None.

    Needed before a first item, and after each major version: the user must have
    acknowledged the latest major version or any version after it."""
    guideline_id = getattr(project, "guideline_id", None)
    if guideline_id is None:
        return None
    versions = published_versions(guideline_id)
    current = versions.first()
    if current is None:
        return None
    last_major = versions.filter(change=GuidelineVersion.Change.MAJOR).first() or current
    acknowledged = Acknowledgement.objects.filter(
        user=user, version__guideline_id=guideline_id, version__number__gte=last_major.number
    ).exists()
    return None if acknowledged else current


def last_acknowledged(*, user: AbstractBaseUser, guideline_id: int) -> GuidelineVersion | None:
    ack = (
        Acknowledgement.objects.filter(user=user, version__guideline_id=guideline_id)
        .select_related("version").order_by("-version__number").first()
    )
    return ack.version if ack else None


def acknowledge(*, user: AbstractBaseUser, version: GuidelineVersion) -> Acknowledgement:
    if not version.is_published:
        raise GuidelineError("only a published version can be acknowledged")
    ack, _ = Acknowledgement.objects.get_or_create(user=user, version=version)
    return ack


def version_is_outdated(version: GuidelineVersion | None) -> bool:
    """A major version was published after `version` (the one an item was claimed under)."""
    if version is None:
        return False
    return published_versions(version.guideline_id).filter(
        number__gt=version.number, change=GuidelineVersion.Change.MAJOR
    ).exists()
