"""Reads behind the reviewers' pages: the dispute queue, items ranked under an older
guideline, an item's live rankings."""

from __future__ import annotations

from django.db.models import Count, F, FloatField, Q, Value
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Coalesce, Least

from labeling.axes import axes_from_config
from labeling.models import Item, Project, Ranking


def live_rankings(item: Item) -> list[Ranking]:
    return list(item.rankings.filter(superseded_by__isnull=True)
                .select_related("annotator", "guideline_version").order_by("id"))


def disputes_for(*, project: Project):  # noqa: ANN201 - QuerySet[Item]
    """The dispute queue: most disagreement first. With axes, an item is as disputed as
    its least agreed required axis (Item.agreement is the primary axis's only, so an item
    split on harmlessness alone would otherwise come last)."""
    items = Item.objects.filter(project=project, status=Item.Status.DISPUTED).select_related("prompt")
    required = [axis.key for axis in axes_from_config(project.axes) if axis.required] if project.axes else []
    if len(required) < 2:
        return items.order_by(F("agreement").asc(nulls_first=True), "id")
    per_axis = [Coalesce(Cast(KeyTextTransform("agreement", KeyTransform(key, "axes")), FloatField()),
                         Value(1.0)) for key in required]  # an axis nobody labelled holds nothing up
    return items.annotate(lowest_agreement=Least(*per_axis)).order_by("lowest_agreement", "id")


def stale_items_for(*, project: Project):  # noqa: ANN201 - (QuerySet[Item], version)
    """Items with rankings made under a version older than the latest major one."""

    from guidelines.models import GuidelineVersion

    major = (
        GuidelineVersion.objects.filter(guideline_id=project.guideline_id,
                                        published_at__isnull=False,
                                        change=GuidelineVersion.Change.MAJOR)
        .order_by("-number").first()
    )
    if major is None:
        return Item.objects.none(), None
    stale = Q(rankings__guideline_version__number__lt=major.number,
              rankings__superseded_by__isnull=True)
    items = (
        Item.objects.filter(project=project).filter(stale)
        .annotate(stale_rankings=Count("rankings", filter=stale, distinct=True))
        .select_related("prompt").order_by("id").distinct()
    )
    return items, major
