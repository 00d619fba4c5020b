"""Labeling data model: projects, prompts, candidates, items, assignments, rankings.

The database enforces what must never happen (duplicate prompts per project, two live
rankings by one annotator on one item, out-of-range project settings); services in
labeling/services.py and labeling/importing/ make every write.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.safestring import SafeString, mark_safe

from core.runs import Run
from labeling.prompt_metadata import validate_prompt_metadata

logger = logging.getLogger(__name__)


class Role(models.TextChoices):
    ANNOTATOR = "annotator"
    REVIEWER = "reviewer"
    ADMIN = "admin"


ROLE_RANK = {Role.ANNOTATOR: 1, Role.REVIEWER: 2, Role.ADMIN: 3}


class Project(models.Model):
    class Mode(models.TextChoices):
        RANKING = "ranking"
        PAIRWISE = "pairwise"

    class Strategy(models.TextChoices):
        FIFO = "fifo"
        COMPLETE_FIRST = "complete_first"
        UNCERTAIN_FIRST = "uncertain_first"  # the reward model separates its answers least

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        ARCHIVED = "archived"

    class Demonstrations(models.TextChoices):
        OFF = "off"
        ONLY = "only"    # annotators write answers instead of ranking
        AFTER = "after"  # an accepted item's prompt gets a rewrite of its best answer

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    k = models.PositiveSmallIntegerField(default=4, help_text="Answers sampled per prompt.")
    overlap = models.PositiveSmallIntegerField(default=3, help_text="Rankings per item (N).")
    agreement_threshold = models.FloatField(default=0.6)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.RANKING)
    allow_ties = models.BooleanField(default=True)
    gold_rate = models.FloatField(default=0.0)
    assignment_strategy = models.CharField(
        max_length=32, choices=Strategy.choices, default=Strategy.FIFO
    )
    generation_settings = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    lease_minutes = models.PositiveSmallIntegerField(
        default=30, help_text="A claimed item returns to the pool after this long."
    )
    top_k = models.PositiveSmallIntegerField(
        null=True, blank=True,
        help_text="Partial ranking: annotators order the best k; the rest form one last tier.",
    )
    unsafe_daily_cap = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Most items flagged unsafe one annotator sees a day."
    )
    adaptive_overlap = models.BooleanField(
        default=False,
        help_text="Start items at 2 rankings; ask for more (up to the overlap) only when "
        "the first two disagree.",
    )
    demonstrations = models.CharField(
        max_length=8, choices=Demonstrations.choices, default=Demonstrations.OFF,
        help_text="Ask annotators to write the answer they wish the model gave (SFT data).",
    )
    demonstrations_per_prompt = models.PositiveSmallIntegerField(
        default=1, help_text="Annotators who write a demonstration for one prompt."
    )
    mix_demonstrations = models.BooleanField(
        default=False,
        help_text="Put each demonstration into a new ranking item beside model answers.",
    )
    quality_refresh_pending = models.BooleanField(default=False)
    is_demo = models.BooleanField(
        default=False, help_text="Demo and test projects allow simulated annotators."
    )
    guideline = models.ForeignKey(
        "guidelines.Guideline", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="projects",
    )
    # What answers are judged on (labeling/axes.py): empty is the one implicit axis
    # "overall". Validated by labeling.axes.axes_clean in project_create/project_update.
    axes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(k__gte=2) & Q(k__lte=16), name="project_k_range"),
            models.CheckConstraint(
                condition=Q(overlap__gte=1) & Q(overlap__lte=50), name="project_overlap_range"
            ),
            models.CheckConstraint(
                condition=Q(agreement_threshold__gte=0) & Q(agreement_threshold__lte=1),
                name="project_threshold_range",
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="project_gold_rate_range"
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    paused = models.BooleanField(default=False, help_text="Gets no new items while paused.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.project_id}:{self.role}"


class Prompt(models.Model):
    """One instruction or conversation to answer; `messages` ends with a user turn."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    messages = models.JSONField()
    # Each message's content as sanitized HTML, rendered once when the prompt is written
    # (core.rendering.render_messages): pages never run markdown per view.
    messages_html = models.JSONField(default=list, blank=True)
    content_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=255, blank=True)
    # Bounded (labeling/prompt_metadata.py); the import checks it row by row, the validator
    # covers forms and the admin. Annotators never receive it (labeling/api/projects.py).
    metadata = models.JSONField(default=dict, blank=True, validators=[validate_prompt_metadata])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="prompt_unique_content"
            ),
        ]

    def __str__(self) -> str:
        return f"prompt {self.pk}"

    @property
    def turns(self) -> list[dict]:
        """The messages with their stored HTML, for templates."""
        return [{"role": message.get("role", ""), "content": message.get("content", ""),
                 "html": mark_safe(html)}  # noqa: S308 - sanitized when written
                for message, html in zip(self.messages, self.messages_html, strict=False)]


class Candidate(models.Model):
    """One answer to a prompt: sampled by a model, written by a person, or imported."""

    class Origin(models.TextChoices):
        MODEL = "model"
        HUMAN = "human"
        IMPORT = "import"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="candidates")
    text = models.TextField()
    # `text` as sanitized HTML, rendered once when the candidate is written.
    text_html = models.TextField(blank=True, default="")
    origin = models.CharField(max_length=16, choices=Origin.choices)
    model_name = models.CharField(max_length=255, blank=True)
    sampling_params = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    sample_index = models.PositiveIntegerField(default=0)
    # Makes writes idempotent: "import:<text sha256>:<n-th occurrence in its row>" or
    # "run:<run id>:<sample index>", unique per prompt.
    dedupe_key = models.CharField(max_length=120)
    is_duplicate = models.BooleanField(
        default=False, help_text="Same text as an earlier candidate of this prompt."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "dedupe_key"], name="candidate_unique_key"),
        ]

    def __str__(self) -> str:
        return f"candidate {self.pk}"

    @property
    def html(self) -> SafeString:
        return mark_safe(self.text_html)  # noqa: S308 - sanitized when written


class Item(models.Model):
    """What annotators rank: a prompt with a fixed set of 2..K candidates."""

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETE = "complete"
        ACCEPTED = "accepted"
        DISPUTED = "disputed"
        DISCARDED = "discarded"

    class Kind(models.TextChoices):
        RANKING = "ranking"
        # Write an answer: from scratch (no candidates) or by rewriting its one candidate.
        # `required_rankings` and `rankings_count` then count demonstrations.
        DEMONSTRATION = "demonstration"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.RANKING)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="items")
    candidates = models.ManyToManyField(Candidate, through="ItemCandidate", related_name="items")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    rankings_count = models.PositiveIntegerField(default=0)
    active_leases = models.PositiveIntegerField(default=0)
    required_rankings = models.PositiveSmallIntegerField()
    flagged_unsafe = models.BooleanField(default=False)
    uncertainty = models.FloatField(
        null=True, blank=True,
        help_text="Gap between the reward model's two best scores (smaller: less sure).",
    )
    is_gold = models.BooleanField(default=False)
    gold_ranking = models.JSONField(null=True, blank=True)
    agreement = models.FloatField(null=True, blank=True,
                                  help_text="Mean pairwise agreement of its rankings.")
    consensus = models.JSONField(null=True, blank=True, help_text="Tiers, best first.")
    # Per axis of a project with axes (labeling/axes.py): {key: {"agreement", "consensus",
    # "status", and for a rating axis "scores" (mean per candidate)}}. `agreement` and
    # `consensus` above are the primary (first) axis's; `status` combines the required axes.
    axes = models.JSONField(default=dict, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", help_text="The reviewer who adjudicated it, if one did.",
    )
    decision_note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "status", "id"], name="item_project_status"),
            # The hot path (labeling.services.assignment.next_item) walks these partial indexes:
            # only items with a free slot are in them, so the scan stays short at
            # millions of items. One per ordering strategy.
            models.Index(
                fields=["project", "id"], name="item_open_fifo",
                condition=Q(status="open", is_gold=False)
                & Q(rankings_count__lt=models.F("required_rankings") - models.F("active_leases")),
            ),
            models.Index(
                models.F("project"), models.F("rankings_count").desc(), models.F("id"),
                name="item_open_complete_first",
                condition=Q(status="open", is_gold=False)
                & Q(rankings_count__lt=models.F("required_rankings") - models.F("active_leases")),
            ),
            models.Index(fields=["project", "id"], name="item_gold",
                         condition=Q(is_gold=True, status="open")),
            models.Index(
                fields=["project", "uncertainty", "id"], name="item_open_uncertain_first",
                condition=Q(status="open", is_gold=False)
                & Q(rankings_count__lt=models.F("required_rankings") - models.F("active_leases")),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(is_gold=True) | Q(rankings_count__lte=models.F("required_rankings")),
                name="item_rankings_within_required",
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.pk}"


class ItemCandidate(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="item_candidates")
    candidate = models.ForeignKey(Candidate, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["item", "position"]
        constraints = [
            models.UniqueConstraint(fields=["item", "candidate"], name="item_candidate_unique"),
        ]


class ExternalPreference(models.Model):
    """A comparison labeled elsewhere (e.g. HH-RLHF). Never a Ranking: it counts toward
    no overlap or agreement, and snapshots include it only when asked."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="external_preferences"
    )
    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="external_preferences"
    )
    chosen = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=255, blank=True)
    margin = models.FloatField(null=True, blank=True)
    axis = models.CharField(max_length=40, blank=True,
                            help_text="The project axis it judges; empty: the primary axis.")
    dedupe_key = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "dedupe_key"], name="external_preference_unique_key"
            ),
        ]


class Assignment(models.Model):
    """An item leased to one annotator, with the display order they were shown."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    display_order = models.JSONField(default=list)
    guideline_version = models.ForeignKey(
        "guidelines.GuidelineVersion", null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="assignment_once_per_item"),
        ]
        indexes = [
            models.Index(fields=["annotator", "status"], name="assignment_annotator_status"),
            models.Index(fields=["status", "expires_at"], name="assignment_status_expiry"),
        ]


class Ranking(models.Model):
    """An immutable ranking: tiers best to worst, each a list of candidate ids (a tie is
    a tier of several). A correction is a new row; the old one points at it."""

    assignment = models.ForeignKey(Assignment, on_delete=models.PROTECT, related_name="rankings")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="rankings")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings"
    )
    tiers = models.JSONField()  # the primary axis's (labeling/axes.py)
    # Every axis's labels when the project has axes: {key: {"tiers"} or {"scores", "tiers"}}
    # in candidate ids; empty for a single-axis project (then `tiers` is all there is).
    labels = models.JSONField(default=dict, blank=True)
    # Llama 2's safety bin, asked with a harmlessness axis: {candidate id: safe?}.
    safety = models.JSONField(null=True, blank=True)
    guideline_version = models.ForeignKey(
        "guidelines.GuidelineVersion", null=True, blank=True, on_delete=models.PROTECT,
        related_name="rankings",
    )
    unsafe = models.BooleanField(default=False)
    all_bad = models.BooleanField(default=False)
    needs_expert = models.BooleanField(default=False)
    rationale = models.TextField(blank=True)
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100)
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["annotator", "idempotency_key"], name="ranking_idempotent"
            ),
            models.UniqueConstraint(
                fields=["item", "annotator"], condition=Q(superseded_by__isnull=True),
                name="ranking_one_live_per_item_annotator",
            ),
        ]


class Demonstration(models.Model):
    """An answer an annotator wrote for a prompt (from scratch or by rewriting a model's
    answer), stored as a human Candidate so it feeds SFT and can be ranked later."""

    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT,
                                      related_name="demonstration")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="demonstrations")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="demonstrations"
    )
    candidate = models.OneToOneField(Candidate, on_delete=models.PROTECT, related_name="demonstration")
    source_candidate = models.ForeignKey(
        Candidate, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The model answer it rewrites; empty when written from scratch.",
    )
    edit_distance = models.PositiveIntegerField(
        null=True, blank=True, help_text="Levenshtein distance (characters) from the source."
    )
    guideline_version = models.ForeignKey(
        "guidelines.GuidelineVersion", null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "idempotency_key"],
                                    name="demonstration_idempotent"),
            models.UniqueConstraint(fields=["item", "annotator"], name="demonstration_once_per_item"),
        ]


class ImportJob(Run):
    """A file upload imported by a task on the default queue; `report` is what the CLI
    prints (counts added/skipped, invalid rows with line numbers)."""

    task_name = "labeling.tasks.import_prompts"
    audit_name = "import"  # audit actions: import.dry_run, import.start, import.cancel

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    file_path = models.CharField(max_length=500)
    original_name = models.CharField(max_length=255)
    skip_invalid = models.BooleanField(default=False)
    dry_run = models.BooleanField(
        default=False, help_text="Validate only: the report lists every invalid row and nothing "
                                 "is written; the upload is kept for the import that follows.")
    dry_run_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="imports",
        help_text="The dry run whose upload this import writes.")
    axis = models.CharField(
        max_length=40, blank=True,
        help_text="The project axis the file's preference pairs judge (ExternalPreference.axis); "
                  "empty: the primary axis.")
    report = models.JSONField(default=dict, blank=True)

    @classmethod
    def release(cls, runs: models.QuerySet) -> None:
        """The upload is deleted once its job is over, whatever the outcome: done, failed,
        rejected, cancelled. Only a queued or running job (or one the sweep re-queues)
        still reads it; the report keeps what a person needs to fix the file."""
        finished = [Run.Status.DONE, Run.Status.FAILED, Run.Status.CANCELLED]
        # A finished dry run keeps its upload for the import that follows it (which then
        # owns the file); a failed one (unreadable file) has nothing worth keeping.
        done_dry_runs = runs.filter(dry_run=True, status=Run.Status.DONE)
        for path in runs.filter(status__in=finished).exclude(pk__in=done_dry_runs).values_list(
                "file_path", flat=True):
            try:
                Path(path).unlink(missing_ok=True)
            except OSError as exc:  # the job's outcome stands; an operator can remove it
                logger.warning("could not delete the upload %s: %s", path, exc)


class Invite(models.Model):
    """A one-time, expiring sign-up link for one role in one project (no open sign-up)."""

    token_hash = models.CharField(max_length=64, unique=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invites")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    @property
    def state(self) -> str:
        """used, revoked, expired or open."""
        from django.utils import timezone

        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= timezone.now() else "open"


class AnnotatorQuality(models.Model):
    """One annotator's quality figures in one project over one period: "all",
    "week:<ISO year>-W<week>" or "guideline:v<number>". Refreshed by a task."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quality")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quality"
    )
    period = models.CharField(max_length=32)
    rankings = models.PositiveIntegerField(default=0)
    loo_agreement = models.FloatField(null=True, blank=True)
    gold_items = models.PositiveIntegerField(default=0)
    gold_accuracy = models.FloatField(null=True, blank=True)
    median_seconds = models.FloatField(null=True, blank=True)
    tie_rate = models.FloatField(null=True, blank=True)
    position_bias = models.FloatField(null=True, blank=True)
    position_expected = models.FloatField(null=True, blank=True)
    length_bias = models.FloatField(null=True, blank=True)
    flags = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "annotator", "period"]
        constraints = [
            models.UniqueConstraint(fields=["project", "annotator", "period"],
                                    name="annotator_quality_unique"),
        ]


class AuditEvent(models.Model):
    """Append-only record of every reviewer/admin action: who, what, when, before -> after.
    Rows are never updated or deleted by the application."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="audit_events")
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["project", "-id"], name="audit_project_recent")]

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ValueError("audit events are append-only")
