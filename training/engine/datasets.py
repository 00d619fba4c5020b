"""Snapshot builders: accepted consensus in, TRL-ready dataset rows out.

The Django side (a snapshot task) reads the database and hands these builders plain
dataclasses: `SnapshotItem` (one accepted item with its consensus ranking),
`ExternalPair` (an imported preference) and `RawRanking` (one annotator's ranking). Each
builder is a generator: it takes an iterable and yields one dict per row, so a snapshot
of millions of pairs streams from a database cursor through a writer
(``training.engine.writers``) in constant memory.

    options = ExportOptions(validation_fraction=0.05, split_seed=7)
    schema = parquet_schema("dpo", conversational=options.conversational_for("dpo"))
    rows = build_dpo(items, options, external=external_pairs)
    write_split_files(rows, lambda split: ParquetRowWriter(out / f"dpo-{split}.parquet", schema))

Kinds and their TRL trainers (every row also carries provenance columns TRL ignores):

- ``pairs`` / ``dpo``: ``{"prompt", "chosen", "rejected"}`` for ``RewardTrainer`` and
  ``DPOTrainer``; all C(K,2) pairs of each consensus ranking (``pairs_from_ranking``).
  The margin column is ``ordinal_margin``, never ``margin``: RewardTrainer subtracts a
  ``margin`` column from the reward difference whenever one is present, and that is a
  training decision, not an export one (rename the column to opt in).
- ``sft``: ``{"messages"}`` (conversational) or ``{"prompt", "completion"}`` for ``SFTTrainer``.
- ``kto``: ``{"prompt", "completion", "label"}`` for ``KTOTrainer``.
- ``raw``: every individual ranking, unaggregated, with a pseudonymous annotator id, its
  labels on every axis (``labels``) and its safety marks (``safety``).
- ``ratings``: HelpSteer-style, one row per (item, answer): ``{"prompt", "response"}`` and
  one column per rating axis holding the answer's mean 0..4 score (``build_ratings``).

Axes (labeling/axes.py). A snapshot is built for one axis: its items are those decided
"accepted" on that axis, their tiers that axis's consensus, and every pair row says which
axis in its ``axis`` column ("overall" for a project without axes). A project with a
harmlessness axis also exports Llama 2's safety bin per pair: ``chosen_safe`` and
``rejected_safe`` (the annotators' majority mark per answer, null where nobody marked it)
and ``safety_bin`` (`training.engine.pairs.safety_bin` of chosen, rejected: "both_safe",
"only_a_safe" = only the chosen answer is safe, "only_b_safe" = only the rejected one,
"neither_safe"); all three are null for a project without one.

Prompt shapes. Conversational rows carry the prompt as its list of messages and each
answer as ``[{"role": "assistant", "content": ...}]``; the trainer applies the model's
chat template, as the sampler does (``training.engine.prompt_format``). Standard rows
carry text: every prompt, single-turn or not, is written in the plain format by
``prompt_format.plain_prompt`` (``"User:\\n...\\n\\nAssistant:\\n"``), so ``prompt + chosen``
always reads as a transcript ending in the answer, and a system prompt or earlier turns
are never dropped.

Which shape: `ExportOptions.conversational` left unset (None, the default) gives
messages for the policy kinds (``sft``, ``dpo``, ``kto``: a policy must be trained on the
prompt format it is sampled with, and the policy trainers refuse text prompts) and text
for ``pairs`` (reward models; the default MiniLM backbone has no chat template). True or
False applies to every kind.

Train/validation split: by prompt (`split_of` on the row's ``group_id``), so every row of
one prompt lands on the same side; each row says which in its ``split`` column.

No Django imports, nothing heavier than the stdlib: the web process may import this.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from training.engine.pairs import DEFAULT_KEY, check_tiers, pairs_from_ranking, safety_bin
from training.engine.prompt_format import plain_prompt, prompt_hash

Message = dict[str, str]
Row = dict[str, Any]

TRAIN, VALIDATION = "train", "validation"
HUMAN = "human"  # CandidateInfo.origin of a person-written demonstration
ALL_BAD = "all_bad"  # the item flag "no answer is acceptable" (ranking mode) / "both bad" (pairwise)
# Pairwise strength 1..4 (negligibly/unsure, slightly, better, much better; see the
# guideline) -> margin, Llama 2's larger discrete margin set (Touvron et al. 2023, table 27).
STRENGTH_MARGIN = {1: 0.0, 2: 1.0, 3: 2.0, 4: 3.0}
PSEUDONYM_HEX = 16
_PSEUDONYM = re.compile(rf"[0-9a-f]{{{PSEUDONYM_HEX}}}")
# Kinds that train a policy: their prompts are messages unless text is asked for.
POLICY_KINDS = ("sft", "dpo", "kto")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ExportOptions:
    """How a snapshot's rows are shaped and split (stored on the snapshot, in the manifest)."""

    conversational: bool | None = field(
        default=None,
        metadata={"help": "Prompts as message lists and answers as assistant messages (True) or as text in "
                          "the plain format (False), for every kind; None: messages for sft, dpo and kto "
                          "(policy training), text for pairs (reward models)."},
    )
    validation_fraction: float = field(
        default=0.0, metadata={"help": "Share of prompts (not rows) in the validation split, 0 <= f <= 1."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seeds the prompt hash that assigns splits."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction <= 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1], got {self.validation_fraction}")
        if self.conversational not in (None, True, False):
            raise ValueError(f"conversational must be true, false or null, got {self.conversational!r}")

    def conversational_for(self, kind: str) -> bool:
        """Whether rows of this kind carry messages (raw rows always do)."""
        if self.conversational is None:
            return kind in POLICY_KINDS or kind == "raw"
        return self.conversational


@dataclass(frozen=True, slots=True)
class CandidateInfo:
    """One answer: its text and where it came from."""

    text: str
    model: str | None = None
    temperature: float | None = None
    seed: int | None = None
    origin: str = "model"  # "model" | "human" (a demonstration) | "import"


@dataclass(frozen=True, slots=True)
class SnapshotItem:
    """One accepted item: a prompt, its fixed candidates and their consensus ranking.

    ``tiers`` is best to worst, a tie being a tier of several ids; it may be empty for a
    prompt that has only a human demonstration (then only ``sft`` uses it).
    ``group_id`` identifies the prompt (the same for every item of one prompt); left
    empty it is ``prompt_hash(prompt)``, which equals ``Prompt.content_hash``.
    ``strength`` (1..4) is the consensus preference strength of a pairwise (K=2) item.
    ``flags`` are item-level flags such as ``"all_bad"``, ``"unsafe"``, ``"needs_expert"``.
    ``axis`` is the axis the tiers rank on; ``safety`` each candidate's majority safety mark
    (None: the project asks none; a candidate left out: nobody marked it); ``scores`` each
    rating axis's mean 0..4 score per candidate ({axis key: {candidate id: mean}})."""

    item_id: int
    prompt: Sequence[Message]
    candidates: Mapping[int, CandidateInfo]
    tiers: Sequence[Sequence[int]]
    group_id: str = ""
    agreement: float | None = None
    guideline_versions: Sequence[int] = ()
    strength: int | None = None
    flags: Sequence[str] = ()
    judge: int | None = None  # set: an AI judge's ranking (judges/), not people's consensus
    axis: str = DEFAULT_KEY
    safety: Mapping[int, bool] | None = None
    scores: Mapping[str, Mapping[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.group_id:
            object.__setattr__(self, "group_id", prompt_hash(self.prompt))
        _check_strength(self.strength)


@dataclass(frozen=True, slots=True)
class ExternalPair:
    """A preference labelled elsewhere (an ``ExternalPreference`` row): exported as a pair
    with ``source`` "external:<source>", never mixed into agreement or consensus."""

    preference_id: int
    prompt: Sequence[Message]
    chosen: str
    rejected: str
    source: str = ""
    margin: float | None = None
    group_id: str = ""
    chosen_id: int | None = None
    rejected_id: int | None = None
    chosen_model: str | None = None
    rejected_model: str | None = None
    axis: str = DEFAULT_KEY  # the snapshot's axis: an import names the axis it judges

    def __post_init__(self) -> None:
        if not self.group_id:
            object.__setattr__(self, "group_id", prompt_hash(self.prompt))


@dataclass(frozen=True, slots=True)
class RawRanking:
    """One annotator's ranking of one item, as submitted. ``annotator`` must be a
    `pseudonym`: a builder refuses anything else, so no username or email can leak.
    ``labels`` is `Ranking.labels` (every axis's tiers, and a rating axis's scores by
    candidate id; empty for a project without axes), ``safety`` `Ranking.safety`."""

    ranking_id: int
    item_id: int
    annotator: str
    prompt: Sequence[Message]
    candidates: Mapping[int, CandidateInfo]
    tiers: Sequence[Sequence[int]]
    group_id: str = ""
    guideline_version: int | None = None
    flags: Sequence[str] = ()
    strength: int | None = None
    duration_ms: int | None = None
    created_at: str | None = None  # ISO 8601
    display_order: Sequence[int] = ()
    source: str = "human"  # "human", or "ai": an AI judge's ranking (judges/), then `judge` is its id
    judge: int | None = None
    labels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    safety: Mapping[int, bool] | None = None

    def __post_init__(self) -> None:
        if self.source not in ("human", "ai") or (self.source == "ai") != (self.judge is not None):
            raise ValueError(f"ranking {self.ranking_id}: source is human (no judge) or ai (with its judge id)")
        if not self.group_id:
            object.__setattr__(self, "group_id", prompt_hash(self.prompt))
        _check_strength(self.strength)


# --------------------------------------------------------------------------- helpers



def split_of(prompt_key: str, validation_fraction: float, seed: int) -> str:
    """"train" or "validation" for a prompt, from a seeded hash of its key: deterministic,
    independent of row order, and the same for every row of the prompt."""
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    digest = hashlib.sha256(f"{seed}:{prompt_key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return VALIDATION if position < validation_fraction else TRAIN


def pseudonym(salt: bytes, user_id: int) -> str:
    """A stable pseudonymous annotator id: HMAC-SHA256(salt, user id), 16 hex digits.

    The salt is the snapshot's secret export salt; without it the id cannot be linked
    back to a user, and a different salt gives unlinkable ids."""
    if len(salt) < 16:
        raise ValueError("the export salt must be at least 16 bytes")
    return hmac.new(salt, str(user_id).encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


# --------------------------------------------------------------------------- builders


def build_pairs(
    items: Iterable[SnapshotItem],
    options: ExportOptions | None = None,
    *,
    external: Iterable[ExternalPair] = (),
) -> Iterator[Row]:
    """Preference pairs for TRL's RewardTrainer: every pair of each item's consensus
    ranking (C(K,2) minus the pairs inside a tie), then the external pairs.

    ``ordinal_margin`` is the tier distance (1 for adjacent tiers), or for a pairwise item
    with a strength, ``STRENGTH_MARGIN[strength]``; for an external pair, its margin."""
    return _pair_rows(items, options or ExportOptions(), "pairs", external)


def build_dpo(
    items: Iterable[SnapshotItem],
    options: ExportOptions | None = None,
    *,
    external: Iterable[ExternalPair] = (),
) -> Iterator[Row]:
    """DPO rows for TRL's DPOTrainer: the same rows as `build_pairs`, one per pair
    (DPOTrainer reads ``prompt``/``chosen``/``rejected`` and ignores the rest), as messages
    unless the options ask for text."""
    return _pair_rows(items, options or ExportOptions(), "dpo", external)


def build_sft(items: Iterable[SnapshotItem], options: ExportOptions | None = None) -> Iterator[Row]:
    """One SFT example per item whose best answer is clear (see `sft_choice`):
    ``{"messages": prompt + [answer]}`` or ``{"prompt", "completion"}``."""
    options = options or ExportOptions()
    for item in items:
        chosen = sft_choice(item)
        if chosen is None:
            continue
        info = item.candidates[chosen]
        if options.conversational_for("sft"):
            shape: Row = {"messages": [*_messages(item.prompt), _answer(info.text)]}
        else:
            shape = {"prompt": plain_prompt(item.prompt), "completion": info.text}
        yield shape | _candidate_provenance(item, chosen, info, options)


def build_kto(items: Iterable[SnapshotItem], options: ExportOptions | None = None) -> Iterator[Row]:
    """Unpaired KTO rows ``{"prompt", "completion", "label"}``, by `kto_labels`."""
    options = options or ExportOptions()
    conversational = options.conversational_for("kto")
    for item in items:
        labels = kto_labels(item)
        if not labels:
            continue
        prompt = _prompt_value(item.prompt, conversational)
        for candidate, label in labels:
            info = item.candidates[candidate]
            completion = [_answer(info.text)] if conversational else info.text
            row = {"prompt": prompt, "completion": completion, "label": label}
            yield row | _candidate_provenance(item, candidate, info, options)


def build_raw(rankings: Iterable[RawRanking], options: ExportOptions | None = None) -> Iterator[Row]:
    """Every individual ranking, unaggregated: prompt messages, candidate texts, tiers and
    the pseudonymous annotator id. Raises ValueError if an annotator id is not a pseudonym."""
    options = options or ExportOptions()
    for ranking in rankings:
        if ranking.source == "ai" and ranking.annotator == f"ai:{ranking.judge}":
            pass  # a judge is named by its id: no person behind it
        elif not _PSEUDONYM.fullmatch(ranking.annotator):
            raise ValueError(f"ranking {ranking.ranking_id}: annotator must be a pseudonym(), not a name")
        check_tiers(ranking.tiers)
        _check_known(ranking.item_id, ranking.tiers, ranking.candidates)
        yield {
            "ranking_id": ranking.ranking_id,
            "item_id": ranking.item_id,
            "group_id": ranking.group_id,
            "annotator": ranking.annotator,
            "prompt": _messages(ranking.prompt),
            "candidates": [
                {"id": cid, "text": c.text, "model": c.model, "origin": c.origin,
                 "temperature": c.temperature, "seed": c.seed}
                for cid, c in ranking.candidates.items()
            ],
            "tiers": [list(tier) for tier in ranking.tiers],
            "display_order": list(ranking.display_order),
            "guideline_version": ranking.guideline_version,
            "flags": list(ranking.flags),
            "strength": ranking.strength,
            "duration_ms": ranking.duration_ms,
            "created_at": ranking.created_at,
            "source": ranking.source,
            "judge": ranking.judge,
            "labels": _raw_labels(ranking.labels),
            "safety": None if ranking.safety is None else [
                {"id": cid, "safe": safe} for cid, safe in sorted(ranking.safety.items())],
            "split": _split(ranking.group_id, options),
        }


def build_ratings(items: Iterable[SnapshotItem], options: ExportOptions | None = None, *,
                  axes: Sequence[str]) -> Iterator[Row]:
    """HelpSteer-style rows, one per (item, answer) with a score on some rating axis:
    ``{"prompt", "response"}``, then one column per rating axis in ``axes`` with the
    answer's mean 0..4 score over the annotators (null where the item has none on that
    axis), then the answer's provenance. Prompts are text unless the options ask for
    messages (as for reward pairs)."""
    options = options or ExportOptions()
    conversational = options.conversational_for("ratings")
    for item in items:
        rated = [c for c in item.candidates if any(c in item.scores.get(axis, {}) for axis in axes)]
        if not rated:
            continue
        prompt = _prompt_value(item.prompt, conversational)
        for candidate in rated:
            info = item.candidates[candidate]
            row: Row = {"prompt": prompt, "response": [_answer(info.text)] if conversational else info.text}
            for axis in axes:
                row[axis] = item.scores.get(axis, {}).get(candidate)
            yield row | _candidate_provenance(item, candidate, info, options)


# --------------------------------------------------------------------------- rules


def pair_safety_bin(chosen_safe: bool | None, rejected_safe: bool | None) -> str | None:
    """Llama 2's safety bin of a pair (chosen first), or None unless both answers are marked."""
    if chosen_safe is None or rejected_safe is None:
        return None
    return safety_bin(chosen_safe, rejected_safe)


def sft_choice(item: SnapshotItem) -> int | None:
    """The candidate an SFT example uses, or None to skip the item.

    A human demonstration is preferred: the single human-written candidate in the top
    tier (or, for an unranked item, the single human-written candidate). Otherwise the
    top tier's candidate if the top tier holds exactly one. Skipped: items flagged
    ``all_bad`` (nothing there is worth imitating) and top ties with no single human answer."""
    _check_item(item)
    if ALL_BAD in item.flags:
        return None
    pool = item.tiers[0] if item.tiers else list(item.candidates)
    humans = [c for c in pool if item.candidates[c].origin == HUMAN]
    if len(humans) == 1:
        return humans[0]
    return pool[0] if item.tiers and len(pool) == 1 else None


def kto_labels(item: SnapshotItem) -> list[tuple[int, bool]]:
    """KTO's desirable (True) / undesirable (False) labels for an item's candidates.

    The top tier is desirable and the bottom tier undesirable; middle tiers are left out
    (better than some, worse than others: neither label fits). An item flagged ``all_bad``
    marks every candidate undesirable. Skipped (empty): unranked items and full ties,
    which say nothing about absolute quality."""
    if not item.tiers:
        return []
    _check_item(item)
    if ALL_BAD in item.flags:
        return [(c, False) for tier in item.tiers for c in tier]
    if len(item.tiers) < 2:
        return []
    return [(c, True) for c in item.tiers[0]] + [(c, False) for c in item.tiers[-1]]


# --------------------------------------------------------------------------- internals


def _pair_rows(items: Iterable[SnapshotItem], options: ExportOptions, kind: str,
               external: Iterable[ExternalPair]) -> Iterator[Row]:
    conversational = options.conversational_for(kind)
    for item in items:
        yield from _item_pairs(item, options, conversational)
    for pair in external:
        yield _external_pair_row(pair, options, conversational)


def _item_pairs(item: SnapshotItem, options: ExportOptions, conversational: bool) -> Iterator[Row]:
    if not item.tiers:
        return
    pairs = pairs_from_ranking(item.tiers)  # validates the tiers
    _check_known(item.item_id, item.tiers, item.candidates)
    prompt = _prompt_value(item.prompt, conversational)
    answers = {c: [_answer(i.text)] if conversational else i.text for c, i in item.candidates.items()}
    # Shared by every pair of the item: computed once, referenced by each row.
    common = {
        "group_id": item.group_id,
        "item_id": item.item_id,
        "preference_id": None,
        # People's consensus, or "ai" for an AI judge's ranking (only when a snapshot asks).
        "source": "consensus" if item.judge is None else "ai",
        "axis": item.axis,
        "judge": item.judge,
        "strength": item.strength,
        "guideline_versions": list(item.guideline_versions),
        "item_agreement": item.agreement,
        "flags": list(item.flags),
        "split": _split(item.group_id, options),
    }
    strength_margin = None if item.strength is None else STRENGTH_MARGIN[item.strength]
    safety = item.safety or {}
    for better, worse, distance in pairs:
        b, w = item.candidates[better], item.candidates[worse]
        chosen_safe, rejected_safe = safety.get(better), safety.get(worse)
        yield {
            "prompt": prompt,
            "chosen": answers[better],
            "rejected": answers[worse],
            "ordinal_margin": float(distance) if strength_margin is None else strength_margin,
            "chosen_id": better,
            "rejected_id": worse,
            "chosen_model": b.model,
            "rejected_model": w.model,
            "chosen_origin": b.origin,
            "rejected_origin": w.origin,
            "chosen_temperature": b.temperature,
            "rejected_temperature": w.temperature,
            "chosen_seed": b.seed,
            "rejected_seed": w.seed,
            "chosen_safe": chosen_safe,
            "rejected_safe": rejected_safe,
            "safety_bin": pair_safety_bin(chosen_safe, rejected_safe),
            **common,
        }


def _external_pair_row(pair: ExternalPair, options: ExportOptions, conversational: bool) -> Row:
    chosen, rejected = pair.chosen, pair.rejected
    if conversational:
        chosen, rejected = [_answer(chosen)], [_answer(rejected)]
    return {
        "prompt": _prompt_value(pair.prompt, conversational),
        "chosen": chosen,
        "rejected": rejected,
        "ordinal_margin": None if pair.margin is None else float(pair.margin),
        "chosen_id": pair.chosen_id,
        "rejected_id": pair.rejected_id,
        "chosen_model": pair.chosen_model,
        "rejected_model": pair.rejected_model,
        "chosen_origin": "import",
        "rejected_origin": "import",
        "chosen_temperature": None,
        "rejected_temperature": None,
        "chosen_seed": None,
        "rejected_seed": None,
        "chosen_safe": None,
        "rejected_safe": None,
        "safety_bin": None,
        "group_id": pair.group_id,
        "item_id": None,
        "preference_id": pair.preference_id,
        "source": f"external:{pair.source}" if pair.source else "external",
        "axis": pair.axis,
        "judge": None,
        "strength": None,
        "guideline_versions": [],
        "item_agreement": None,
        "flags": [],
        "split": _split(pair.group_id, options),
    }


def _candidate_provenance(
    item: SnapshotItem, candidate: int, info: CandidateInfo, options: ExportOptions
) -> Row:
    return {
        "group_id": item.group_id,
        "item_id": item.item_id,
        "candidate_id": candidate,
        "model": info.model,
        "origin": info.origin,
        "temperature": info.temperature,
        "seed": info.seed,
        "guideline_versions": list(item.guideline_versions),
        "item_agreement": item.agreement,
        "flags": list(item.flags),
        "split": _split(item.group_id, options),
    }


def _raw_labels(labels: Mapping[str, Mapping[str, Any]]) -> list[Row]:
    """A ranking's labels as one struct per axis (Parquet needs fixed keys): its tiers,
    and for a rating axis its scores as (candidate id, score)."""
    return [
        {"axis": key, "tiers": [list(tier) for tier in entry.get("tiers", [])],
         "scores": None if "scores" not in entry else [
             {"id": int(cid), "score": int(score)}
             for cid, score in sorted(entry["scores"].items(), key=lambda kv: int(kv[0]))]}
        for key, entry in labels.items()
    ]


def _split(group_id: str, options: ExportOptions) -> str:
    if options.validation_fraction in (0.0, 1.0):  # no hash needed: everything on one side
        return VALIDATION if options.validation_fraction else TRAIN
    return split_of(group_id, options.validation_fraction, options.split_seed)


def _prompt_value(messages: Sequence[Message], conversational: bool) -> str | list[Message]:
    return _messages(messages) if conversational else plain_prompt(messages)


def _messages(messages: Sequence[Message]) -> list[Message]:
    """Role and content only: one struct type per file, whatever else a message held."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _answer(text: str) -> Message:
    return {"role": "assistant", "content": text}


def _check_item(item: SnapshotItem) -> None:
    if item.tiers:
        check_tiers(item.tiers)
        _check_known(item.item_id, item.tiers, item.candidates)


def _check_known(
    item_id: int, tiers: Sequence[Sequence[int]], candidates: Mapping[int, CandidateInfo]
) -> None:
    unknown = {c for tier in tiers for c in tier} - candidates.keys()
    if unknown:
        raise ValueError(f"item {item_id}: ranked candidates {sorted(unknown)} have no CandidateInfo")


def _check_strength(strength: int | None) -> None:
    if strength is not None and strength not in STRENGTH_MARGIN:
        raise ValueError(f"strength must be 1..4 (negligibly .. much better), got {strength}")
