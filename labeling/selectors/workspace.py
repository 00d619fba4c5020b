"""Reads for the annotator workspace (page and API share them). Blind by construction:
nothing here returns model names, other annotators' rankings or per-item counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef
from django.http import Http404
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from labeling.axes import asks_safety, axes_from_config
from labeling.blind import shown_id
from labeling.models import Assignment, Candidate, Demonstration, Item, Membership, Project, Ranking


def assignment_for(user: AbstractBaseUser, assignment_id: int) -> Assignment:
    """The caller's own assignment, while they are still in its project; anyone else's
    answers 404."""
    # One query: the membership comes along (annotator is the lowest role, so any
    # membership passes project_for's check; staff are admins of every project).
    assignment = (
        Assignment.objects.filter(pk=assignment_id, annotator=user)
        .select_related("item__project", "item__prompt", "guideline_version")
        .annotate(member=Exists(Membership.objects.filter(
            project_id=OuterRef("item__project_id"), user=user)))
        .first()
    )
    if assignment is None or not (assignment.member or user.is_staff):
        raise Http404("No such assignment.")  # not theirs, or no longer in its project
    return assignment


@dataclass(frozen=True)
class ShownCandidate:
    id: str  # opaque, per assignment (labeling.blind): never the candidate's own id
    label: str
    text: str
    html: SafeString  # stored when the candidate was written: no markdown per view


def shown_candidates(assignment: Assignment) -> list[ShownCandidate]:
    """The item's answers in this annotator's shuffled order, labelled A, B, C..."""
    texts = getattr(assignment, "candidate_texts", None)  # a fresh claim read them already
    if texts is None:
        texts = {cid: (text, html) for cid, text, html in Candidate.objects.filter(
            pk__in=assignment.display_order).values_list("id", "text", "text_html")}
    return [
        ShownCandidate(id=shown_id(assignment.pk, cid), label=chr(ord("A") + index),
                       text=texts[cid][0], html=mark_safe(texts[cid][1]))  # noqa: S308 - sanitized when written
        for index, cid in enumerate(assignment.display_order)
    ]


def assignment_payload(assignment: Assignment) -> dict[str, Any]:
    item = assignment.item
    project = item.project
    version = assignment.guideline_version
    axes = axes_from_config(project.axes)
    return {
        "id": assignment.pk,
        "item": item.pk,
        "task": item.kind,
        "expires_at": assignment.expires_at,
        "mode": project.mode,
        "allow_ties": project.allow_ties,
        "top_k": project.top_k,
        "content_warning": item.flagged_unsafe,
        "guideline_version": version.number if version else None,
        "messages": item.prompt.messages,
        "candidates": [{"id": c.id, "label": c.label, "text": c.text}
                       for c in shown_candidates(assignment)],
        "axes": [axis.as_dict() for axis in axes],
        "ask_safety": asks_safety(axes),
    }


@dataclass(frozen=True)
class Progress:
    done_today: int
    done_total: int
    left: int  # open items this annotator may still do, the ones on screen and pre-loaded included

    @property
    def total(self) -> int:
        """The "N" of "n of N" for the project: what they did plus what is left."""
        return self.done_total + self.left

    @property
    def today_total(self) -> int:
        return self.done_today + self.left


def annotator_progress(user: AbstractBaseUser, project: Project) -> Progress:
    """Rankings and demonstrations both count as work done."""
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    mine = Ranking.objects.filter(annotator=user, item__project=project,
                                  superseded_by__isnull=True)
    written = Demonstration.objects.filter(annotator=user, item__project=project)
    # Items they finished (sent, skipped, let expire) are done with; the leased ones on
    # screen and pre-loaded still count as left, so pre-loading doesn't move the count.
    seen = Assignment.objects.filter(item=OuterRef("pk"), annotator=user).exclude(
        status=Assignment.Status.ACTIVE)
    left = Item.objects.filter(project=project, status=Item.Status.OPEN).exclude(
        Exists(seen)).count()
    return Progress(
        done_today=mine.filter(created_at__gte=start).count()
        + written.filter(created_at__gte=start).count(),
        done_total=mine.count() + written.count(), left=left)


def demonstrations_done_today(*, annotator: AbstractBaseUser, project: Project) -> int:
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return Demonstration.objects.filter(annotator=annotator, item__project=project,
                                        created_at__gte=start).count()
