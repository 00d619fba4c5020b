"""Demonstrations: the SFT step, where people write the answer they wish the model gave.

A demonstration item (Item.kind "demonstration") is claimed, leased, expired and
skipped exactly like a ranking item (labeling/assignment.py), so it gets the same
blind, overlap and lease rules; `required_rankings` counts the demonstrations it needs.
It has no candidate (write from scratch) or one (rewrite it: the edit distance to it is
stored). Where they come from:

- projects with demonstrations "only" get one per prompt (`demonstration_items_create`,
  run after an import and from the console or `manage.py demonstrations`);
- projects with "after" get one when a ranking item is accepted, showing the consensus
  best answer to rewrite (`demonstration_after_accept`).

`demonstration_submit` stores the text as a Candidate of origin "human" (the annotator's
own work, never shown with a name), is idempotent on (annotator, Idempotency-Key) like
rankings, and with `mix_demonstrations` puts the new answer into a ranking item beside
model answers of the same prompt, so people's answers are compared with the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, F, OuterRef
from django.utils import timezone
from rapidfuzz.distance import Levenshtein

from core.rendering import render_markdown
from labeling.models import Assignment, Candidate, Demonstration, Item, ItemCandidate, Project, Prompt
from labeling.services.assignment import InvalidRanking, SubmissionConflict
from labeling.services.items import items_create_for_prompt
from labeling.services.submission import release_lease, submission_gate, submit_once


@dataclass(frozen=True)
class DemonstrationInput:
    text: str
    rewrite: bool = False  # True: started from the item's candidate
    duration_ms: int | None = None


# --------------------------------------------------------------------------- items


def demonstration_items_create(*, project: Project, prompt_ids: list[int] | None = None) -> int:
    """One from-scratch demonstration item per prompt that has none yet; returns how many."""
    prompts = Prompt.objects.filter(project=project).exclude(
        Exists(Item.objects.filter(prompt=OuterRef("pk"), kind=Item.Kind.DEMONSTRATION)))
    if prompt_ids is not None:
        prompts = prompts.filter(pk__in=prompt_ids)
    ids = list(prompts.order_by("id").values_list("id", flat=True))
    Item.objects.bulk_create(
        [Item(project=project, prompt_id=pid, kind=Item.Kind.DEMONSTRATION,
              required_rankings=project.demonstrations_per_prompt) for pid in ids], batch_size=1000)
    return len(ids)


def demonstration_after_accept(*, item: Item) -> Item | None:
    """An accepted ranking item of an "after" project: ask for a rewrite of its best
    answer (the consensus top tier's first), once per prompt."""
    project = item.project
    if (project.demonstrations != Project.Demonstrations.AFTER or item.kind != Item.Kind.RANKING
            or item.is_gold or not item.consensus):
        return None
    if Item.objects.filter(prompt_id=item.prompt_id, kind=Item.Kind.DEMONSTRATION).exists():
        return None
    demo = Item.objects.create(project=project, prompt_id=item.prompt_id,
                               kind=Item.Kind.DEMONSTRATION,
                               required_rankings=project.demonstrations_per_prompt)
    ItemCandidate.objects.create(item=demo, candidate_id=item.consensus[0][0], position=0)
    return demo


# --------------------------------------------------------------------------- submit


def demonstration_submit(*, annotator: AbstractBaseUser, assignment_id: int,
                         data: DemonstrationInput, idempotency_key: str) -> tuple[Demonstration, bool]:
    """Store one demonstration; returns (demonstration, created). A retry with the same
    key returns the stored one. Raises InvalidRanking (400) or SubmissionConflict (409)."""
    text = data.text.strip()
    if not text:
        raise InvalidRanking("write an answer first: the text is empty")
    if len(text) > settings.IMPORT_MAX_TEXT_CHARS:
        raise InvalidRanking(f"answers are limited to {settings.IMPORT_MAX_TEXT_CHARS} characters")
    html = str(render_markdown(text))  # before the item's lock is taken
    demonstration, created = submit_once(
        annotator=annotator, assignment_id=assignment_id, idempotency_key=idempotency_key, model=Demonstration,
        store=lambda item, assignment: _store(annotator, item, assignment, data, text, html, idempotency_key))
    if created and demonstration.item.project.mix_demonstrations:
        _mix_into_ranking(demonstration)
    return demonstration, created


def _store(annotator: AbstractBaseUser, item: Item, assignment: Assignment, data: DemonstrationInput, text: str,
           html: str, idempotency_key: str) -> tuple[Demonstration | None, bool, SubmissionConflict | None]:
    if item.kind != Item.Kind.DEMONSTRATION:
        raise InvalidRanking("this item asks for a ranking, not a written answer")
    source = item.item_candidates.select_related("candidate").first() if data.rewrite else None
    if data.rewrite and source is None:
        raise InvalidRanking("this item has no answer to rewrite: write one from scratch")
    holds_lease, conflict = submission_gate(assignment, item, what="answer")
    if conflict is not None:
        return None, False, conflict
    candidate = Candidate.objects.create(
        prompt_id=item.prompt_id, text=text, text_html=html, origin=Candidate.Origin.HUMAN,
        dedupe_key=f"human:{annotator.pk}:{item.pk}",
        is_duplicate=Candidate.objects.filter(prompt_id=item.prompt_id, text=text).exists(),
    )
    demonstration = Demonstration.objects.create(
        assignment=assignment, item=item, annotator=annotator, candidate=candidate,
        source_candidate=source.candidate if source else None,
        edit_distance=Levenshtein.distance(source.candidate.text, text) if source else None,
        guideline_version_id=assignment.guideline_version_id, duration_ms=data.duration_ms,
        idempotency_key=idempotency_key,
    )
    release_lease(assignment, item, holds_lease, status=Assignment.Status.SUBMITTED)
    updates = {"rankings_count": F("rankings_count") + 1}
    if item.rankings_count + 1 >= item.required_rankings:
        # Nothing to agree on: a written answer is accepted as written (reviewers can
        # still discard the item from the console).
        updates |= {"status": Item.Status.ACCEPTED, "decided_at": timezone.now()}
    Item.objects.filter(pk=item.pk).update(**updates)
    return demonstration, True, None


def _mix_into_ranking(demonstration: Demonstration) -> int:
    """A ranking item of this human answer beside up to K-1 model answers of its prompt."""
    project = demonstration.item.project
    models = list(Candidate.objects.filter(prompt_id=demonstration.candidate.prompt_id,
                                           origin=Candidate.Origin.MODEL, is_duplicate=False)
                  .order_by("id").values_list("id", flat=True)[:max(1, project.k - 1)])
    if not models:
        return 0
    return items_create_for_prompt(project=project, prompt_id=demonstration.candidate.prompt_id,
                                   candidate_ids=[demonstration.candidate_id, *models])


