"""AI judges: annotators that are models. A Judge is configured per project by its
admins; a JudgeRun (a background run on the generate queue) has it rank items; each
item's result is one JudgeRanking.

Judge rankings live in their own table, not in labeling.Ranking: every human count,
overlap slot, consensus and quality figure reads Ranking, so a judge can never fill a
human overlap slot or move a human consensus by accident. The judges app reads both
tables to measure a judge the way people are measured (judges/metrics.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.runs import Run
from training.engine.judging import DEFAULT_TEMPLATE


def default_template() -> str:
    """The engine's default judge prompt (a callable, so editing it needs no migration)."""
    return DEFAULT_TEMPLATE


class Judge(models.Model):
    class Kind(models.TextChoices):
        ENDPOINT = "endpoint"  # an OpenAI-compatible endpoint from GENERATION_ENDPOINTS
        LOCAL = "local"  # a local transformers model (training/model_refs.py rules)
        REWARD_MODEL = "reward_model"  # a registered reward model of the project: ranks by score

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="judges")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    endpoint = models.CharField(max_length=100, blank=True,
                                help_text="A GENERATION_ENDPOINTS name (kind endpoint).")
    model = models.CharField(max_length=500, blank=True,
                             help_text="The model the endpoint serves, or an accepted local model.")
    reward_version = models.ForeignKey(
        "training.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="A registered reward model of this project (kind reward_model).",
    )
    prompt_template = models.TextField(default=default_template)
    temperature = models.FloatField(default=0.0)
    max_tokens = models.PositiveIntegerField(default=512)
    orders = models.PositiveSmallIntegerField(default=2, help_text="Answer orders per item (2-4).")
    max_items_per_day = models.PositiveIntegerField(null=True, blank=True)
    max_tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    trust_threshold = models.FloatField(
        null=True, blank=True,
        help_text="Adaptive overlap may stop at one person who agrees with this judge while "
                  "its measured agreement with people is at least this (empty: never).",
    )
    routes_disagreements = models.BooleanField(
        default=False,
        help_text="With the uncertain_first strategy, items where this judge disagrees with the "
                  "reward model or with itself (answer orders) go to people first.",
    )
    measured_agreement = models.FloatField(
        null=True, blank=True,
        help_text="Its agreement with the human consensus, as of its last run (judges/metrics.py).",
    )
    version = models.PositiveIntegerField(default=1, help_text="Bumped when what it judges by changes.")
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="judge_unique_name"),
            models.CheckConstraint(condition=Q(orders__gte=2) & Q(orders__lte=4), name="judge_orders_range"),
            models.CheckConstraint(condition=Q(temperature__gte=0) & Q(temperature__lte=2),
                                   name="judge_temperature_range"),
        ]

    def __str__(self) -> str:
        return f"judge {self.name} v{self.version}"


class JudgeRun(Run):
    """A judge ranking a frozen list of items; resumable (items already judged by this
    judge version are skipped) and cancelable at the next item."""

    task_name = "judges.tasks.generate_judgements"

    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="runs")
    judge_version = models.PositiveIntegerField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    item_ids = models.JSONField(default=list, help_text="Frozen at creation.")
    stats = models.JSONField(default=dict, blank=True)


class JudgeRanking(models.Model):
    """One item as judged by one judge version: the reconciled ranking (or a skip with
    the raw answers kept for reviewers), its confidence, and every order it was asked in."""

    class Status(models.TextChoices):
        RANKED = "ranked"
        SKIPPED = "skipped"

    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="rankings")
    judge_version = models.PositiveIntegerField()
    run = models.ForeignKey(JudgeRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="rankings")
    item = models.ForeignKey("labeling.Item", on_delete=models.CASCADE, related_name="judge_rankings")
    guideline_version = models.ForeignKey("guidelines.GuidelineVersion", null=True, blank=True,
                                          on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices)
    tiers = models.JSONField(null=True, blank=True, help_text="Candidate ids, best first.")
    confidence = models.FloatField(null=True, blank=True)
    consistent = models.BooleanField(default=False)
    # [{"order": [candidate ids as shown], "text": raw answer, "tiers": parsed tiers in
    #   candidate ids or null, "attempts": n, "error": why it was refused}]
    judgements = models.JSONField(default=list)
    rationale = models.TextField(blank=True)
    skip_reason = models.CharField(max_length=500, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["judge", "judge_version", "item"], name="judge_ranking_once"),
        ]
        indexes = [models.Index(fields=["item", "judge"], name="judge_ranking_item")]
