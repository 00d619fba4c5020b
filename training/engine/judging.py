"""AI judges: the pure part. Build a judge's prompt, parse its answer strictly, choose
the answer orders an item is judged in, and reconcile those judgements into one ranking.

No Django and no network here: judges/services.py loads rows, calls a backend (an
OpenAI-compatible endpoint, a local model, or a reward model's scores) and stores what
these functions return. Everything is deterministic for a given seed.

Position bias is removed by design, not by hoping the judge has none: an item is judged
in at least two answer orders (a seeded shuffle and its reverse, so every answer is
shown once near the front and once near the back), and the rankings are combined by mean
rank. A pair the orders disagree on becomes a tie (the judge was not consistent about
it), and the confidence is the share of pairs the orders agree on: a judge that always
prefers the first answer shown ends with every pair tied and confidence 0.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

LABELS = "ABCDEFGHIJKLMNOP"  # K is at most 16 (labeling.Project k range)
MAX_RATIONALE_CHARS = 4000
MAX_TEMPLATE_CHARS = 20000
PLACEHOLDERS = ("{guideline}", "{conversation}", "{answers}", "{labels}", "{example}")
REQUIRED_PLACEHOLDERS = ("{conversation}", "{answers}")
RANK_TOLERANCE = 1e-9

DEFAULT_TEMPLATE = """You are a careful annotator. Rank the answers below from best to worst \
by following the guideline.

# Guideline
{guideline}

# Conversation
{conversation}

# Answers
{answers}

# Your reply
First explain your judgement in a few sentences. Then end with exactly one line of the form
RANKING: {example}
using every label ({labels}) exactly once, best first. Separate answers with ">" \
and write "=" between answers that are equally good."""

Tiers = list[list[int]]


class JudgeOutputError(ValueError):
    """The judge's text does not hold exactly one valid RANKING line."""


class TemplateError(ValueError):
    """A prompt template that cannot be rendered (too long or missing a placeholder)."""


def check_template(template: str) -> str:
    """The template as stored, or TemplateError naming what is wrong."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the prompt template is longer than {MAX_TEMPLATE_CHARS} characters")
    missing = [p for p in REQUIRED_PLACEHOLDERS if p not in template]
    if missing:
        raise TemplateError(f"the prompt template needs {', '.join(missing)}")
    return template


# --------------------------------------------------------------------------- the prompt


def render_conversation(messages: Sequence[dict[str, Any]]) -> str:
    """The conversation as the judge reads it: one block per message, its role first."""
    return "\n\n".join(f"[{str(m.get('role', 'user')).upper()}]\n{m.get('content', '')}"
                       for m in messages)


def render_judge_prompt(template: str, *, guideline: str, messages: Sequence[dict[str, Any]],
                        answers: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages sent to the judge: the template with its placeholders filled,
    answers labelled A, B, ... in the order given. Blind: no model names, no ids.

    Placeholders are replaced in one pass, so text inside an answer that looks like a
    placeholder is never expanded."""
    if not 2 <= len(answers) <= len(LABELS):
        raise ValueError(f"a judge ranks 2 to {len(LABELS)} answers, not {len(answers)}")
    labels = LABELS[: len(answers)]
    values = {
        "{guideline}": guideline.strip() or "(no guideline: use your best judgement)",
        "{conversation}": render_conversation(messages),
        "{answers}": "\n\n".join(f"## Answer {label}\n{text}" for label, text in zip(labels, answers, strict=True)),
        "{labels}": ", ".join(labels),
        "{example}": " > ".join(labels[:2]) + (" = " + " > ".join(labels[2:]) if len(labels) > 2 else ""),
    }
    pattern = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
    text = pattern.sub(lambda match: values[match.group(0)], check_template(template))
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------- the answer


@dataclass(frozen=True)
class ParsedJudgement:
    tiers: Tiers  # positions in the order shown (0 = the answer labelled A), best first
    rationale: str


_RANKING_LINE = re.compile(r"^\s*\**\s*RANKING\s*\**\s*:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_TIER_SPLIT = re.compile(r"\s*>\s*")
_TIE_SPLIT = re.compile(r"\s*=\s*")


def parse_judgement(text: str, k: int) -> ParsedJudgement:
    """Strict: exactly one "RANKING: ..." line naming each of the K labels once, tiers
    separated by ">", ties by "="; anything else raises JudgeOutputError. The text
    before that line is the rationale."""
    found = _RANKING_LINE.findall(text)
    if len(found) != 1:
        raise JudgeOutputError("no RANKING line" if not found else "more than one RANKING line")
    labels = LABELS[:k]
    tiers: Tiers = []
    seen: set[str] = set()
    for chunk in _TIER_SPLIT.split(found[0].strip().rstrip(".")):
        tier = []
        for token in _TIE_SPLIT.split(chunk):
            label = token.strip().strip("*").strip()
            if len(label) != 1 or label.upper() not in labels:
                raise JudgeOutputError(f"{token.strip()!r} is not one of the labels {', '.join(labels)}")
            label = label.upper()
            if label in seen:
                raise JudgeOutputError(f"label {label} appears twice")
            seen.add(label)
            tier.append(labels.index(label))
        tiers.append(sorted(tier))
    if len(seen) != k:
        raise JudgeOutputError(f"missing label(s) {', '.join(sorted(set(labels) - seen))}")
    rationale = text[: _RANKING_LINE.search(text).start()].strip()  # type: ignore[union-attr]
    return ParsedJudgement(tiers=tiers, rationale=rationale[:MAX_RATIONALE_CHARS])


def tiers_in_candidates(positions: Tiers, order: Sequence[int]) -> Tiers:
    """Tiers of positions in `order` (as parsed) -> tiers of candidate ids."""
    return [sorted(order[p] for p in tier) for tier in positions]


# --------------------------------------------------------------------------- orders


def judging_orders(candidates: Sequence[int], *, n_orders: int = 2, seed: int = 0) -> list[list[int]]:
    """The answer orders one item is shown to the judge in: a shuffle seeded by `seed`
    and its reverse (every answer once near the top, once near the bottom), then more
    seeded shuffles when n_orders > 2. Deterministic, so a resumed run asks the same."""
    if n_orders < 2:
        raise ValueError("an item is judged in at least two orders")
    rng = random.Random(seed)  # noqa: S311 - an order, not a secret
    base = list(candidates)
    rng.shuffle(base)
    orders = [base, base[::-1]]
    while len(orders) < n_orders:
        extra = list(candidates)
        rng.shuffle(extra)
        orders.append(extra)
    return orders


# --------------------------------------------------------------------------- reconciling


@dataclass(frozen=True)
class Reconciled:
    tiers: Tiers  # candidate ids, best first
    confidence: float  # share of candidate pairs every order agreed on (ties: half credit)
    consistent: bool  # every order gave the same ranking
    inconsistent_pairs: list[tuple[int, int]] = field(default_factory=list)


def mid_ranks(tiers: Tiers) -> dict[int, float]:
    """Candidate -> mean of the positions its tier occupies (1 = best)."""
    ranks, start = {}, 1
    for tier in tiers:
        middle = start + (len(tier) - 1) / 2
        for candidate in tier:
            ranks[candidate] = middle
        start += len(tier)
    return ranks


def _sign(x: float) -> int:
    return (x > RANK_TOLERANCE) - (x < -RANK_TOLERANCE)


def reconcile(judgements: Sequence[Tiers]) -> Reconciled:
    """One ranking from the same item judged in several orders (each in candidate ids).

    Mean rank over the orders, then every pair the orders ordered oppositely is tied
    (the tiers between them merge). Confidence: mean over the pairs of the share of
    order pairs that agree on it (1 agree, 1/2 one tie, 0 opposite)."""
    if len(judgements) < 2:
        raise ValueError("reconciling needs the item judged in at least two orders")
    ranks = [mid_ranks(t) for t in judgements]
    candidates = sorted(ranks[0])
    if any(sorted(r) != candidates for r in ranks):
        raise ValueError("the judgements rank different candidates")
    mean = {c: sum(r[c] for r in ranks) / len(ranks) for c in candidates}
    tiers = _tiers_by_score(mean)
    agreements, inconsistent = [], []
    for a, b in combinations(candidates, 2):
        signs = [_sign(r[a] - r[b]) for r in ranks]
        pair_scores = [1.0 - abs(x - y) / 2 for x, y in combinations(signs, 2)]
        agreements.append(sum(pair_scores) / len(pair_scores))
        if 1 in signs and -1 in signs:
            inconsistent.append((a, b))
    for a, b in inconsistent:
        tiers = _merge_between(tiers, a, b)
    consistent = all(r == ranks[0] for r in ranks[1:])
    return Reconciled(tiers=tiers, confidence=sum(agreements) / len(agreements),
                      consistent=consistent, inconsistent_pairs=inconsistent)


def reconcile_scores(scores: dict[int, float]) -> Reconciled:
    """A reward model's ranking: by score, higher first. It scores each answer alone, so
    the order shown cannot matter; confidence is the mean over pairs of |2 sigmoid(gap) - 1|
    (how sure a Bradley-Terry reading of the scores is about each pair)."""
    if len(scores) < 2:
        raise ValueError("a ranking needs at least two answers")
    tiers = _tiers_by_score({c: -s for c, s in scores.items()})
    sure = [abs(2.0 / (1.0 + math.exp(-(scores[a] - scores[b]))) - 1.0)
            for a, b in combinations(sorted(scores), 2)]
    return Reconciled(tiers=tiers, confidence=sum(sure) / len(sure), consistent=True)


def _tiers_by_score(scores: dict[int, float]) -> Tiers:
    """Lower score first; scores within the tolerance of a tier's first share it."""
    ordered = sorted(scores, key=lambda c: (scores[c], c))
    tiers: Tiers = [[ordered[0]]]
    for candidate in ordered[1:]:
        if abs(scores[candidate] - scores[tiers[-1][0]]) <= RANK_TOLERANCE:
            tiers[-1].append(candidate)
        else:
            tiers.append([candidate])
    return [sorted(t) for t in tiers]


def _merge_between(tiers: Tiers, a: int, b: int) -> Tiers:
    index = {c: i for i, tier in enumerate(tiers) for c in tier}
    low, high = sorted((index[a], index[b]))
    if low == high:
        return tiers
    merged = sorted(c for tier in tiers[low:high + 1] for c in tier)
    return [*tiers[:low], merged, *tiers[high + 1:]]


# --------------------------------------------------------------------------- position


def first_shown_credit(tiers: Tiers, order: Sequence[int]) -> float:
    """1/t when the first answer shown is in the top tier of size t, else 0 (the credit
    labeling.stats.agreement.position_bias averages; 1/K means no position effect)."""
    return 1.0 / len(tiers[0]) if order[0] in tiers[0] else 0.0


def net_position_preference(tiers: Tiers, orders: Sequence[Sequence[int]]) -> float:
    """How much the final ranking favours whatever was shown first, over the orders the
    item was judged in: mean first-shown credit minus 1/K (0 = no net preference)."""
    k = sum(len(t) for t in tiers)
    return sum(first_shown_credit(tiers, o) for o in orders) / len(orders) - 1.0 / k
