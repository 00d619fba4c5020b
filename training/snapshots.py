"""Dataset snapshots: freeze accepted labels into versioned, TRL-ready files.

`snapshot_create` validates the request; `snapshot_build` (the task on `default`, and
`manage.py export_dataset`) reads the database in batches and streams rows through the
engine's builders (training/engine/datasets.py) into JSONL/Parquet writers, then writes
manifest.json last: filters, counts, sha256 of every file, guideline versions, code
version, who and when. A snapshot with no rows is built, empty, with the reason in its
manifest. Raw exports carry HMAC(export salt, user id) pseudonyms, never usernames.

Axes (issue #21, labeling/axes.py). The filter ``axis`` (a key of the project's axes)
builds the snapshot for one axis; absent, it is the primary axis read as it always was:
items whose status is accepted (every required axis accepted), `Item.consensus`. With
``axis`` named, an item counts when that axis is decided "accepted" in `Item.axes`, even
if the item as a whole is disputed on another axis: a helpfulness dataset should not lose
pairs people agreed on because they disagreed on harmlessness. Such an item must still be
decided (accepted or disputed, not open for more rankings); an axis a reviewer decided
is accepted (labeling/services/review.py) and an item a reviewer accepted counts on every
axis; gold and discarded items never. Its tiers are that axis's consensus
(`Item.consensus` for the primary axis, which holds a reviewer's ranking), its agreement
that axis's. External preferences follow the axis they were imported to (blank: the
primary axis). AI judges rank on the primary axis only, so they join its snapshots only.

Kind ``ratings`` (a project with rating axes): one row per answer of each item, HelpSteer
style, with one column per rating axis holding the mean 0..4 score of the annotators.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from datetime import date
from pathlib import Path
from statistics import median
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.audit import audit
from core.errors import DomainError
from core.lookups import ids_in
from core.read_ahead import read_ahead
from core.runs import Run, run_enqueue, run_finish, run_heartbeat
from labeling.axes import Axis, asks_safety, axes_from_config
from labeling.models import Demonstration, ExternalPreference, Item, ItemCandidate, Project, Ranking
from training.artifacts import artifact_local, artifact_publish
from training.models import DatasetSnapshot

KINDS = ("pairs", "dpo", "sft", "kto", "raw", "ratings")
FORMATS = ("jsonl", "parquet")
BATCH = 500
# Items per prefetch query. Django prefetches candidates with one OR term per id, and
# SQLite refuses an expression tree deeper than 1000: 50 items of at most K=16 answers
# stay under it ("Expression tree is too large" at ~300 items of K=4 with BATCH).
PREFETCH_BATCH = 50
# Items per batch of snapshot_items' three queries. On the 166,667-item bench
# PostgreSQL's CPU was 7.6 s at 500 (BATCH), 5.3-6.1 s at 1,000, 4.4 s at 2,000, but
# 2,000 cost ~1 s more Python and ~100 MB more peak RSS in the Parquet export (issue #19).
ITEMS_BATCH = 1000
Progress = Callable[[int, int], None]


def export_salt() -> bytes:
    """Stable per deployment, secret, and not the SECRET_KEY itself."""
    configured = settings.EXPORT_SALT
    if configured:
        return configured.encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"ordinal-export-salt", hashlib.sha256).digest()


def _clean_filters(project: Project, filters: dict[str, Any]) -> dict[str, Any]:
    allowed = {"include_external", "guideline_versions", "min_agreement", "since", "until",
               "exclude_flagged", "include_ai", "judges", "axis"}
    unknown = sorted(set(filters) - allowed)
    if unknown:
        raise DomainError(f"unknown filters {unknown}; use {sorted(allowed)}")
    clean: dict[str, Any] = {
        "include_external": bool(filters.get("include_external", False)),
        "exclude_flagged": bool(filters.get("exclude_flagged", True)),
        "min_agreement": filters.get("min_agreement"),
        "guideline_versions": filters.get("guideline_versions"),
        "since": filters.get("since"),
        "until": filters.get("until"),
        # AI judges' rankings (judges/) go into raw exports only when asked, each row
        # marked source "ai" with its judge id; `judges` narrows them to some judges.
        "include_ai": bool(filters.get("include_ai", False)),
        "judges": filters.get("judges"),
    }
    if filters.get("axis") is not None:  # absent: the primary axis, read as before axes existed
        keys = [axis.key for axis in axes_from_config(project.axes)]
        if filters["axis"] not in keys:
            raise DomainError(f"unknown axis {filters['axis']!r}; this project's axes are {keys}")
        clean["axis"] = filters["axis"]
    judges = clean["judges"]
    if judges is not None:
        if not isinstance(judges, list) or not all(isinstance(j, int) for j in judges) or not judges:
            raise DomainError("judges must be a non-empty list of judge ids")
        from judges.models import Judge

        unknown = sorted(set(judges) - set(Judge.objects.filter(project=project, pk__in=judges)
                                           .values_list("id", flat=True)))
        if unknown:
            raise DomainError(f"judges not in this project: {unknown}")
        if not clean["include_ai"]:
            raise DomainError("judges picks AI rankings: set include_ai too")
    threshold = clean["min_agreement"]
    if threshold is not None and not (isinstance(threshold, int | float) and 0 <= threshold <= 1):
        raise DomainError("min_agreement must be a number between 0 and 1")
    for name in ("since", "until"):
        if clean[name]:
            try:
                date.fromisoformat(str(clean[name]))
            except ValueError:
                raise DomainError(f"{name} must be a date like 2026-11-27") from None
    if clean["since"] and clean["until"] and clean["since"] > clean["until"]:
        raise DomainError("since is after until: no label can match both")
    versions = clean["guideline_versions"]
    if versions is not None:
        if not isinstance(versions, list) or not all(isinstance(v, int) for v in versions):
            raise DomainError("guideline_versions must be a list of version numbers")
        if not versions:
            raise DomainError("guideline_versions is empty: no label can match")
    return clean


@transaction.atomic
def snapshot_create(*, project: Project, kinds: list[str], formats: list[str],
                    filters: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                    user: AbstractBaseUser | None = None, enqueue: bool = True) -> DatasetSnapshot:
    from training.engine.datasets import ExportOptions

    if not kinds or set(kinds) - set(KINDS):
        raise DomainError(f"kinds must be some of {', '.join(KINDS)}")
    if not formats or set(formats) - set(FORMATS):
        raise DomainError(f"formats must be some of {', '.join(FORMATS)}")
    try:
        export = ExportOptions(**(options or {}))
    except (TypeError, ValueError) as exc:
        raise DomainError(f"invalid options: {exc}") from None
    if "ratings" in kinds:
        _check_rating_columns(project)
    snapshot = DatasetSnapshot.objects.create(
        project=project, created_by=user if user and user.is_authenticated else None,
        kinds=sorted(set(kinds), key=KINDS.index), formats=sorted(set(formats)),
        filters=_clean_filters(project, filters or {}),
        options={"conversational": export.conversational,
                 "validation_fraction": export.validation_fraction,
                 "split_seed": export.split_seed},
    )
    audit(actor=user, project=project, action="snapshot.create", target=snapshot,
          after={"kinds": snapshot.kinds, "formats": snapshot.formats, "filters": snapshot.filters,
                 "options": snapshot.options})
    if enqueue:
        run_enqueue(snapshot)
    return snapshot


def _check_rating_columns(project: Project) -> None:
    """The ratings kind needs rating axes, whose keys become columns beside the others."""
    from training.engine.writers import parquet_schema

    keys = rating_axes(project)
    if not keys:
        raise DomainError("the ratings kind needs a rating axis; this project has none")
    taken = sorted(set(keys) & set(parquet_schema("ratings", conversational=False).names))
    if taken:
        raise DomainError(f"rating axes {taken} have the name of a ratings column; rename them")


def rating_axes(project: Project) -> list[str]:
    return [axis.key for axis in axes_from_config(project.axes) if axis.is_rating]


# --------------------------------------------------------------------------- reading


def snapshot_axis(snapshot: DatasetSnapshot) -> Axis:
    """The axis a snapshot is for: the one its filters name, else the primary axis."""
    axes = axes_from_config(snapshot.project.axes)
    key = snapshot.filters.get("axis")
    return next((axis for axis in axes if axis.key == key), axes[0])


def _per_axis(snapshot: DatasetSnapshot) -> str | None:
    """The axis key when a project with axes is read per axis; None: read as before axes."""
    key = snapshot.filters.get("axis")
    return key if key is not None and snapshot.project.axes else None


def accepted_items(snapshot: DatasetSnapshot):  # noqa: ANN201 - QuerySet[Item]
    """Accepted items (reviewer-adjudicated ones included); gold items never. With an
    ``axis`` filter: the items accepted on that axis (see the module docstring)."""
    f = snapshot.filters
    axis = _per_axis(snapshot)
    if axis is None:
        items = Item.objects.filter(project=snapshot.project, status=Item.Status.ACCEPTED,
                                    is_gold=False, consensus__isnull=False)
        agreement = "agreement"
    else:
        decided = [Item.Status.ACCEPTED, Item.Status.DISPUTED]
        items = Item.objects.filter(
            Q(status__in=decided, **{f"axes__{axis}__status": "accepted"})
            | Q(status=Item.Status.ACCEPTED, decided_by__isnull=False),
            project=snapshot.project, is_gold=False)
        agreement = f"axes__{axis}__agreement"
    if f.get("min_agreement") is not None:
        # An adjudicated item's (or axis's) decision stands whatever its raw agreement was.
        adjudicated = Q(decided_by__isnull=False)
        if axis is not None:
            adjudicated |= Q(**{f"axes__{axis}__adjudicated": True})
        items = items.filter(Q(**{f"{agreement}__gte": f["min_agreement"]}) | adjudicated)
    if f.get("since"):
        items = items.filter(decided_at__date__gte=f["since"])
    if f.get("until"):
        items = items.filter(decided_at__date__lte=f["until"])
    if f.get("exclude_flagged"):
        items = items.exclude(rankings__in=Ranking.objects.filter(
            Q(unsafe=True) | Q(needs_expert=True), superseded_by__isnull=True))
    if f.get("guideline_versions"):
        items = items.exclude(rankings__in=Ranking.objects.filter(superseded_by__isnull=True)
                              .exclude(guideline_version__number__in=f["guideline_versions"]))
    return items.order_by("id")


def _candidate_info(candidate: Any) -> Any:
    from training.engine.datasets import CandidateInfo

    return CandidateInfo(text=candidate.text, model=candidate.model_name or None,
                         temperature=(candidate.sampling_params or {}).get("temperature"),
                         seed=candidate.seed, origin=candidate.origin)


def _axis_label(consensus: list | None, agreement: float | None, item_axes: dict, axis: Axis,
                primary: str) -> tuple[list, float | None]:
    """An item's consensus tiers and agreement on an axis. The primary axis's are the
    item's own fields (`Item.consensus`, `Item.agreement`), which also hold a reviewer's
    ranking; an axis nobody labelled on this item has none (no pairs)."""
    if axis.key == primary:
        return consensus or [], agreement
    figures = item_axes.get(axis.key) or {}
    return figures.get("consensus") or [], figures.get("agreement")


def majority_safety(safety_marks: Iterable[dict[str, bool] | None]) -> dict[int, bool]:
    """Each answer's safety by majority of the rankings' marks (`Ranking.safety` of each
    live ranking; Llama 2's safety bin); an answer nobody marked is left out. A tie is
    unsafe: when people split on whether an answer is safe, the export does not call it safe."""
    votes: dict[int, list[bool]] = {}
    for safety in safety_marks:
        for candidate, safe in (safety or {}).items():
            votes.setdefault(int(candidate), []).append(bool(safe))
    return {candidate: sum(marks) * 2 > len(marks) for candidate, marks in votes.items()}


def snapshot_items(snapshot: DatasetSnapshot) -> Iterator[Any]:
    """The snapshot's accepted items as the engine's SnapshotItem, in id order. Read as
    plain rows, ITEMS_BATCH items at a time in three queries (items with their prompts, their
    candidates, their live rankings): a prefetch of model instances cost ~0.5 ms per item,
    five times the export of its pairs (bench/README.md, issue #19). On PostgreSQL the
    next batches are read on a thread while the caller writes this one (`_reads_ahead`)."""
    axes = axes_from_config(snapshot.project.axes)
    batches = _item_batches(accepted_items(snapshot), axis=snapshot_axis(snapshot), primary=axes[0].key,
                            safety_asked=asks_safety(axes), rated=[a.key for a in axes if a.is_rating])
    if _reads_ahead():
        batches = read_ahead(batches)
    with closing(batches):  # stops the reader thread when the caller stops early
        for batch in batches:
            yield from batch


def _reads_ahead() -> bool:
    """Whether snapshot_items reads on a thread, with a connection of its own.

    Consistency, before and after: each query sees the rows committed when it starts
    (READ COMMITTED, autocommit). The ids come first, then each batch's three queries, so
    an item re-ranked during a long export is written as it was when its batch was read,
    and the AI items, external pairs and the manifest's guideline versions are read later
    still; the reader only moves those moments a few batches earlier. Off inside a
    transaction (a test's, or a caller's atomic block): another connection would not see
    its uncommitted rows. Off on SQLite (tests, the demo), read as it always was: a demo's
    exports are small, and one file is not worth a second connection's locking."""
    return (settings.SNAPSHOT_READ_AHEAD and connection.vendor == "postgresql"
            and not connection.in_atomic_block)


def _item_batches(items: Any, *, axis: Axis, primary: str, safety_asked: bool,
                  rated: list[str]) -> Iterator[list[Any]]:
    """SnapshotItems of these items, a list per ITEMS_BATCH. Runs on the reader thread when
    reading ahead: it touches no model instance, only querysets and plain values."""
    from training.engine.datasets import CandidateInfo, SnapshotItem

    ids = list(items.values_list("id", flat=True).distinct())
    for start in range(0, len(ids), ITEMS_BATCH):
        batch = ids[start:start + ITEMS_BATCH]
        candidates: dict[int, dict[int, Any]] = {}
        for item_id, cid, text, model, params, seed, origin in (
                ItemCandidate.objects.filter(ids_in("item_id", batch)).order_by("item", "position").values_list(
                    "item_id", "candidate_id", "candidate__text", "candidate__model_name",
                    "candidate__sampling_params", "candidate__seed", "candidate__origin")):
            candidates.setdefault(item_id, {})[cid] = CandidateInfo(
                text=text, model=model or None, temperature=(params or {}).get("temperature"), seed=seed,
                origin=origin)
        live: dict[int, list[tuple]] = {}
        for row in Ranking.objects.filter(ids_in("item_id", batch), superseded_by__isnull=True).values_list(
                "item_id", "strength", "all_bad", "safety", "guideline_version__number"):
            live.setdefault(row[0], []).append(row)
        rows = Item.objects.filter(ids_in("id", batch)).order_by("id").values_list(
            "id", "prompt__messages", "prompt__content_hash", "consensus", "agreement", "axes")
        built = []
        for item_id, messages, content_hash, consensus, item_agreement, item_axes in rows:
            rankings = live.get(item_id, [])
            strengths = [strength for _, strength, _, _, _ in rankings if strength]
            flags = []
            if sum(all_bad for _, _, all_bad, _, _ in rankings) * 2 > len(rankings):
                flags.append("all_bad")
            safety = majority_safety(marks for _, _, _, marks, _ in rankings) if safety_asked else None
            if safety and not all(safety.values()):
                # People marked an answer unsafe: the prompt can elicit harm (Llama 2's
                # "unsafe prompt"), so RL gives its answers the safety model's reward.
                flags.append("unsafe")
            tiers, agreement = _axis_label(consensus, item_agreement, item_axes, axis, primary)
            built.append(SnapshotItem(
                item_id=item_id, prompt=messages, candidates=candidates.get(item_id, {}),
                tiers=tiers, group_id=content_hash, agreement=agreement,
                guideline_versions=sorted({number for *_, number in rankings if number is not None}),
                strength=round(median(strengths)) if strengths else None, flags=flags,
                axis=axis.key, safety=safety,
                scores={key: {int(c): score for c, score in item_axes[key]["scores"].items()}
                        for key in rated if "scores" in (item_axes.get(key) or {})},
            ))
        yield built


def _labelled_in(rows: Any, f: dict[str, Any]) -> Any:
    """Rankings or demonstrations within the snapshot's dates and guideline versions."""
    if f.get("since"):
        rows = rows.filter(created_at__date__gte=f["since"])
    if f.get("until"):
        rows = rows.filter(created_at__date__lte=f["until"])
    if f.get("guideline_versions"):
        rows = rows.filter(guideline_version__number__in=f["guideline_versions"])
    return rows


def snapshot_demonstrations(snapshot: DatasetSnapshot) -> Iterator[Any]:
    """Each written demonstration of an accepted demonstration item, as an unranked
    item with its one human answer (SFT uses it; pairs and DPO have nothing to compare)."""
    from training.engine.datasets import SnapshotItem

    demonstrations = (Demonstration.objects.filter(
        item__project=snapshot.project, item__status=Item.Status.ACCEPTED)
        .exclude(candidate__text="")  # removed when its author's account was erased
        .select_related("item__prompt", "candidate", "guideline_version").order_by("id"))
    for demonstration in _labelled_in(demonstrations, snapshot.filters).iterator(chunk_size=BATCH):
        version = demonstration.guideline_version
        yield SnapshotItem(
            item_id=demonstration.item_id, prompt=demonstration.item.prompt.messages,
            candidates={demonstration.candidate_id: _candidate_info(demonstration.candidate)},
            tiers=[], group_id=demonstration.item.prompt.content_hash,
            guideline_versions=[version.number] if version else [],
        )


def snapshot_external(snapshot: DatasetSnapshot) -> Iterator[Any]:
    from training.engine.datasets import ExternalPair

    if not snapshot.filters.get("include_external"):
        return
    axis, primary = snapshot_axis(snapshot).key, axes_from_config(snapshot.project.axes)[0].key
    # An import to no axis in particular (blank) judges the primary one.
    keys = {"", primary} if axis == primary else {axis}
    preferences = (ExternalPreference.objects.filter(project=snapshot.project, axis__in=keys)
                   .select_related("prompt", "chosen", "rejected").order_by("id"))
    for pref in preferences.iterator(chunk_size=2000):
        yield ExternalPair(
            preference_id=pref.pk, prompt=pref.prompt.messages, chosen=pref.chosen.text,
            rejected=pref.rejected.text, source=pref.source, margin=pref.margin,
            group_id=pref.prompt.content_hash, chosen_id=pref.chosen_id,
            rejected_id=pref.rejected_id, chosen_model=pref.chosen.model_name or None,
            rejected_model=pref.rejected.model_name or None, axis=axis,
        )


def snapshot_items_ai(snapshot: DatasetSnapshot) -> Iterator[Any]:
    """With `include_ai`: the AI judges' rankings (current versions, non-gold items) as
    items whose pairs carry source "ai" and the judge's id. Items only judges ranked are
    included too: that is what RLAIF data is."""
    from training.engine.datasets import SnapshotItem

    if not snapshot.filters.get("include_ai"):
        return
    axis = snapshot_axis(snapshot).key
    if axis != axes_from_config(snapshot.project.axes)[0].key:
        return  # a judge ranks on the primary axis: it has nothing to say on another
    for row in _ai_rankings(snapshot).iterator(chunk_size=BATCH):
        if row.judge_version != row.judge.version:
            continue
        item = row.item
        yield SnapshotItem(
            item_id=item.pk, prompt=item.prompt.messages,
            candidates={ic.candidate_id: _candidate_info(ic.candidate) for ic in item.item_candidates.all()},
            tiers=row.tiers, group_id=item.prompt.content_hash, agreement=row.confidence,
            guideline_versions=[row.guideline_version.number] if row.guideline_version else [],
            flags=[] if row.consistent else ["inconsistent"], judge=row.judge_id, axis=axis,
        )


def _ai_rankings(snapshot: DatasetSnapshot) -> Any:
    from judges.models import JudgeRanking

    rows = (JudgeRanking.objects.filter(judge__project=snapshot.project, status=JudgeRanking.Status.RANKED,
                                        item__is_gold=False)
            .select_related("item__prompt", "guideline_version", "judge")
            .prefetch_related("item__item_candidates__candidate").order_by("id"))
    if snapshot.filters.get("judges"):
        rows = rows.filter(judge_id__in=snapshot.filters["judges"])
    return _labelled_in(rows, snapshot.filters)


def snapshot_raw(snapshot: DatasetSnapshot) -> Iterator[Any]:
    from training.engine.datasets import RawRanking, pseudonym

    salt = export_salt()
    rankings = (Ranking.objects.filter(item__project=snapshot.project, item__is_gold=False,
                                       superseded_by__isnull=True)
                .select_related("item__prompt", "guideline_version", "assignment")
                .prefetch_related("item__item_candidates__candidate").order_by("id"))
    for ranking in _labelled_in(rankings, snapshot.filters).iterator(chunk_size=PREFETCH_BATCH):
        item = ranking.item
        flags = [name for name in ("unsafe", "all_bad", "needs_expert") if getattr(ranking, name)]
        yield RawRanking(
            ranking_id=ranking.pk, item_id=item.pk, annotator=pseudonym(salt, ranking.annotator_id),
            prompt=item.prompt.messages,
            candidates={ic.candidate_id: _candidate_info(ic.candidate)
                        for ic in item.item_candidates.all()},
            tiers=ranking.tiers, group_id=item.prompt.content_hash,
            guideline_version=ranking.guideline_version.number if ranking.guideline_version else None,
            flags=flags, strength=ranking.strength, duration_ms=ranking.duration_ms,
            created_at=ranking.created_at.isoformat(),
            display_order=ranking.assignment.display_order, labels=ranking.labels or {},
            safety=None if ranking.safety is None else {int(c): s for c, s in ranking.safety.items()},
        )
    if snapshot.filters.get("include_ai"):
        yield from snapshot_raw_ai(snapshot)


def snapshot_raw_ai(snapshot: DatasetSnapshot) -> Iterator[Any]:
    """The AI judges' rankings (current versions), as raw rows with source "ai"."""
    from training.engine.datasets import RawRanking

    for row in _ai_rankings(snapshot).iterator(chunk_size=BATCH):
        if row.judge_version != row.judge.version:
            continue  # an earlier version of the judge: superseded, like a corrected ranking
        item = row.item
        yield RawRanking(
            ranking_id=row.pk, item_id=item.pk, annotator=f"ai:{row.judge_id}", prompt=item.prompt.messages,
            candidates={ic.candidate_id: _candidate_info(ic.candidate) for ic in item.item_candidates.all()},
            tiers=row.tiers, group_id=item.prompt.content_hash,
            guideline_version=row.guideline_version.number if row.guideline_version else None,
            flags=[] if row.consistent else ["inconsistent"], created_at=row.created_at.isoformat(),
            display_order=row.judgements[0]["order"] if row.judgements else [],
            source="ai", judge=row.judge_id,
        )


# --------------------------------------------------------------------------- writing


def snapshot_dir(snapshot: DatasetSnapshot) -> Path:
    return settings.ARTIFACT_ROOT / "datasets" / str(snapshot.pk)


def snapshot_local_dir(snapshot: DatasetSnapshot) -> Path:
    """The snapshot's folder on this machine, fetched from artifact storage if missing."""
    return artifact_local(snapshot_dir(snapshot))


def _rows(snapshot: DatasetSnapshot, kind: str, options: Any) -> Iterator[dict[str, Any]]:
    from training.engine import datasets as builders

    if kind == "raw":
        return builders.build_raw(snapshot_raw(snapshot), options)
    if kind in {"pairs", "dpo"}:
        build = builders.build_pairs if kind == "pairs" else builders.build_dpo
        return build(itertools.chain(snapshot_items(snapshot), snapshot_items_ai(snapshot)), options,
                     external=snapshot_external(snapshot))
    if kind == "ratings":
        return builders.build_ratings(snapshot_items(snapshot), options, axes=rating_axes(snapshot.project))
    if kind == "sft":  # consensus winners, then people's own written answers
        return itertools.chain(builders.build_sft(snapshot_items(snapshot), options),
                               builders.build_sft(snapshot_demonstrations(snapshot), options))
    return getattr(builders, f"build_{kind}")(snapshot_items(snapshot), options)


def snapshot_build(snapshot: DatasetSnapshot, *, progress: Progress | None = None) -> None:
    """Build a claimed snapshot. A rerun after a crash starts the folder over; a
    complete folder (manifest present) is never touched again."""
    from training.engine import writers
    from training.engine.datasets import ExportOptions
    from training.engine.manifest import read_manifest, write_manifest

    folder = snapshot_dir(snapshot)
    if read_manifest(folder) is not None:
        artifact_publish(folder)  # a crash may have come between the manifest and the upload
        run_finish(snapshot, status=Run.Status.DONE)
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    options = ExportOptions(**snapshot.options)
    splits = ("train", "validation") if options.validation_fraction > 0 else ("train",)
    files: dict[str, Any] = {}
    counts: dict[str, int] = {}
    steps = [(kind, fmt) for kind in snapshot.kinds for fmt in snapshot.formats]
    for done, (kind, fmt) in enumerate(steps):
        schema = writers.parquet_schema(kind, conversational=options.conversational_for(kind),
                                        rating_axes=rating_axes(snapshot.project) if kind == "ratings" else ())

        def open_writer(split: str, kind: str = kind, fmt: str = fmt, schema: Any = schema) -> Any:
            path = folder / f"{kind}-{split}.{fmt}"
            if fmt == "jsonl":
                return writers.JsonlWriter(path)
            return writers.ParquetRowWriter(path, schema)

        if kind in {"pairs", "dpo"}:  # the same bytes as the row builders, without a dict per pair
            from training.engine.pair_export import write_pair_files

            items = itertools.chain(snapshot_items(snapshot), snapshot_items_ai(snapshot))
            stats = write_pair_files(items, options, kind, open_writer, splits=splits,
                                     external=snapshot_external(snapshot))
        else:
            stats = writers.write_split_files(_rows(snapshot, kind, options), open_writer,
                                              splits=splits)
        for split, stat in stats.items():
            files[f"{kind}-{split}.{fmt}"] = stat
            counts[f"{kind}-{split}"] = stat.rows
        if not run_heartbeat(snapshot, steps_done=done + 1, steps_total=len(steps)):
            shutil.rmtree(folder, ignore_errors=True)
            return
        if progress:
            progress(done + 1, len(steps))
    empty = not any(counts.values())
    metadata = {
        "snapshot": snapshot.pk, "project": snapshot.project.slug, "kinds": snapshot.kinds,
        "formats": snapshot.formats, "filters": snapshot.filters, "options": snapshot.options,
        "counts": counts, "guideline_versions": _guideline_versions(snapshot),
        "code_version": code_version(), "created_by": getattr(snapshot.created_by, "pk", None),
        "created_at": timezone.now().isoformat(),
        "empty_reason": _empty_reason(snapshot) if empty else None,
    }
    write_manifest(folder, metadata, files={name: stats._asdict() for name, stats in files.items()})
    artifact_publish(folder)
    DatasetSnapshot.objects.filter(pk=snapshot.pk).update(
        counts=counts, path=str(folder),
        files={name: {"rows": s.rows, "sha256": s.sha256, "bytes": s.bytes}
               for name, s in files.items()},
    )
    run_finish(snapshot, status=Run.Status.DONE)


def _guideline_versions(snapshot: DatasetSnapshot) -> list[int]:
    return sorted(set(
        Ranking.objects.filter(item__in=accepted_items(snapshot), superseded_by__isnull=True,
                               guideline_version__isnull=False)
        .values_list("guideline_version__number", flat=True)
    ))


def _empty_reason(snapshot: DatasetSnapshot) -> str:
    project = snapshot.project
    accepted = Item.objects.filter(project=project, status=Item.Status.ACCEPTED).count()
    if not accepted and not (snapshot.filters.get("include_external")
                             and project.external_preferences.exists()):
        return "the project has no accepted items yet"
    return f"the filters exclude all {accepted} accepted items"


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ordinal {version('ordinal')}" + (
            f" ({settings.ORDINAL_COMMIT})" if settings.ORDINAL_COMMIT else "")
    except PackageNotFoundError:
        return "ordinal (not installed)"
