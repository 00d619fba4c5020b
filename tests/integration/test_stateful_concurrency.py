"""The labeling services as a state machine on PostgreSQL, some steps run from two threads.

Hypothesis drives the real services (claim, submit, retry, skip, lease lapse and sweep,
reviewer adjudication, lease release, pause, guideline publishing) for four annotators, a
reviewer and an admin on a small project: 2..4 items with an overlap of 2..3, one gold
item, 3..4 candidates. The `*_concurrently` rules start two threads, each on its own
connection, so SKIP LOCKED, the row locks and the constraints are exercised for real.
After every step the invariants are read back from the database, never from the
machine's own notes:

- no non-gold item has more live rankings than its `required_rankings`;
- no annotator has two live rankings (or two assignments) on one item;
- every ranking carries its assignment's guideline version, which is the version in
  force when the item was claimed, and no ranking was stored after a later major version;
- `rankings_count` and `active_leases` equal the rows they count;
- one AuditEvent per reviewer/admin mutation that succeeded, none for one that failed.

Each Hypothesis example starts from empty tables (TRUNCATE in the machine's __init__).

    HYPOTHESIS_PROFILE=ci     bounded for CI (default): well under 3 minutes on 2 cores
    HYPOTHESIS_PROFILE=bench  the long run; bench/stateful_bench.py runs it and reports

With STATEFUL_STATS=<path> the test writes what it ran (examples, steps, rules,
outcomes) there as JSON, for the bench.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.utils import timezone
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from core.errors import DomainError
from guidelines.models import Guideline, GuidelineVersion
from guidelines.services import GuidelineError, acknowledge, draft_create, guideline_current_version, version_publish
from labeling.blind import tiers_as_shown
from labeling.models import Assignment, AuditEvent, Item, Membership, Project, Ranking, Role
from labeling.services.assignment import assignments_expire, next_item
from labeling.services.members import leases_release, membership_pause
from labeling.services.rankings import RankingInput, ranking_submit
from labeling.services.review import Adjudication, item_adjudicate
from labeling.services.submission import assignment_skip
from tests.factories import make_items

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Registered under their own names so that other modules' "ci" profiles can't replace them.
PROFILES = {
    "ci": {"max_examples": 20, "stateful_step_count": 30},
    "bench": {"max_examples": 100, "stateful_step_count": 50},
}
for _name, _values in PROFILES.items():
    settings.register_profile(
        f"stateful-{_name}", deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], **_values,
    )

ANNOTATORS = 4
RACERS = ("submit", "skip", "sweep", "release", "adjudicate", "claim")
# A known defect in labeling/services/assignment.py, tolerated here (and counted) so that the
# machine still checks that the invariants survive it: two claims by one annotator at
# once (two tabs) can pick the same item. The second statement's snapshot predates the
# first claim's commit and its row lock comes after it, so the insert hits
# assignment_once_per_item (IntegrityError, a 500); about 1 in 300 such pairs here.
# next_item answers a double claim by one annotator with the lease it holds (it used
# to raise IntegrityError); True would tolerate that error again.
KNOWN_DOUBLE_CLAIM = False
SHAPES = ("as_shown", "reversed", "top_tied", "all_tied")
STATS: Counter[str] = Counter()  # what ran, for the bench; never used by an assertion
OUTCOMES: Counter[str] = Counter()
ROWS: Counter[str] = Counter()
# Outcomes a caller is told about (HTTP 4xx): anything else from a service is a defect.
EXPECTED_ERRORS = (DomainError, GuidelineError)


def profile_name() -> str:
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    return name if name in PROFILES else "ci"


def chosen_settings() -> settings:
    """The selected profile; the bench may set STATEFUL_EXAMPLES / STATEFUL_STEPS."""
    overrides = {key: int(os.environ[var]) for key, var in (
        ("max_examples", "STATEFUL_EXAMPLES"), ("stateful_step_count", "STATEFUL_STEPS")) if os.environ.get(var)}
    return settings(settings.get_profile(f"stateful-{profile_name()}"), **overrides)


def reset_database() -> None:
    """Empty every table the machine writes (and, by CASCADE, those that point at them)."""
    models = [*apps.get_app_config("labeling").get_models(),
              *apps.get_app_config("guidelines").get_models(), get_user_model()]
    tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in models)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def run_concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls from one thread each, released together; a call's exception is its
    result. Each thread closes its own connection."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = call()
        except BaseException as exc:  # handed to the caller, which judges it
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a concurrent call hung for 60 s"
    return results


def judged(what: str, result: Any, *, known_double_claim: bool = False) -> Any:
    """Count the outcome; a domain error is an answer, any other exception a defect (but
    the known one the caller names, see KNOWN_DOUBLE_CLAIM)."""
    if known_double_claim and isinstance(result, IntegrityError) and "assignment_once_per_item" in str(result):
        OUTCOMES[f"{what}:known_double_claim"] += 1
        return None
    if isinstance(result, EXPECTED_ERRORS):
        OUTCOMES[f"{what}:{getattr(result, 'code', type(result).__name__)}"] += 1
        return None
    if isinstance(result, BaseException):
        raise AssertionError(f"{what} failed with {type(result).__name__}: {result}") from result
    OUTCOMES[f"{what}:ok"] += 1
    return result


def attempt(what: str, call: Callable[[], Any]) -> Any:
    try:
        result = call()
    except EXPECTED_ERRORS as exc:
        result = exc
    return judged(what, result)


def ranking_for(assignment: Assignment, shape: str) -> RankingInput:
    order = list(assignment.display_order)
    if shape == "reversed":
        order.reverse()
    tiers = [[cid] for cid in order]
    if shape == "top_tied":
        tiers = [order[:2], *tiers[2:]]
    elif shape == "all_tied":
        tiers = [order]
    return RankingInput(tiers=tiers_as_shown(assignment, tiers), duration_ms=1000)


class LabelingMachine(RuleBasedStateMachine):
    """Rules draw nothing that depends on the database: `pick` indexes the rows found when
    the rule runs, and a rule with nothing to act on does nothing. (The threads make the
    state differ between replays; a precondition that read it would make Hypothesis
    report a flaky strategy.)"""

    def __init__(self) -> None:
        super().__init__()
        reset_database()
        self.project: Project | None = None
        self.expected_audit: Counter[str] = Counter()
        self.keys = itertools.count()
        STATS["examples"] += 1

    # ------------------------------------------------------------------ set-up

    @initialize(overlap=st.integers(2, 3), k=st.integers(3, 4), regular=st.integers(2, 4),
                gold_rate=st.sampled_from([0.0, 0.4]), adaptive=st.booleans())
    def create_project(self, overlap: int, k: int, regular: int, gold_rate: float,
                       adaptive: bool) -> None:
        self.project = Project.objects.create(
            name="Stateful", slug="stateful", k=k, overlap=overlap, gold_rate=gold_rate,
            adaptive_overlap=adaptive,
        )
        self.guideline = Guideline.objects.create(slug="stateful", title="Stateful", project=self.project)
        Project.objects.filter(pk=self.project.pk).update(guideline=self.guideline)
        self.project.refresh_from_db()
        self.admin = self._member("admin", Role.ADMIN)
        self.reviewer = self._member("reviewer", Role.REVIEWER)
        self.annotators = [self._member(f"ann{i}", Role.ANNOTATOR) for i in range(ANNOTATORS)]
        self._publish(major=True)
        for annotator in self.annotators:
            acknowledge(user=annotator, version=guideline_current_version(project=self.project))
        *_, gold = make_items(self.project, regular + 1, k=k)
        ids = sorted(gold.item_candidates.values_list("candidate_id", flat=True))
        Item.objects.filter(pk=gold.pk).update(is_gold=True, gold_ranking=[[cid] for cid in ids])

    def _member(self, username: str, role: str):  # noqa: ANN202 - a user
        user = get_user_model().objects.create(username=username)  # no password: hashing is slow
        Membership.objects.create(user=user, project=self.project, role=role)
        return user

    def _publish(self, *, major: bool) -> None:
        number = self.guideline.versions.count() + 1
        change = GuidelineVersion.Change.MAJOR if major else GuidelineVersion.Change.MINOR
        draft = draft_create(guideline=self.guideline, body=f"# Rank well\n\nRevision {number}.",
                             change=change)
        version_publish(version=draft, user=self.admin)
        self.expected_audit["guideline.publish"] += 1

    # ------------------------------------------------------------------ helpers

    def _assignments(self, *, annotator: Any = None, active: bool = False) -> list[Assignment]:
        rows = Assignment.objects.filter(item__project=self.project).select_related("item", "annotator")
        if annotator is not None:
            rows = rows.filter(annotator=annotator)
        if active:
            rows = rows.filter(status=Assignment.Status.ACTIVE)
        return list(rows.order_by("id"))

    def _pick(self, rows: list[Any], pick: int) -> Any:
        return rows[pick % len(rows)] if rows else None

    def _claim_for(self, who: int) -> Assignment | None:
        user = self.annotators[who]
        self._read_guideline(user)
        claimed = attempt("lease", lambda: next_item(annotator=user, project=self.project))
        return claimed and Assignment.objects.select_related("item", "annotator").get(pk=claimed.pk)

    def _lease(self, pick: int) -> Assignment | None:
        """An active lease to act on: a held one, or else one claimed now (None when the
        annotator gets nothing)."""
        chosen = self._pick(self._assignments(active=True), pick)
        return chosen if chosen is not None else self._claim_for(pick % ANNOTATORS)

    def _contested(self, pick: int) -> list[Assignment]:
        """Two leases on one item: held, or else claimed now by two annotators in a row
        (FIFO gives both the same item while it has free slots)."""
        by_item: dict[int, list[Assignment]] = defaultdict(list)
        for assignment in self._assignments(active=True):
            by_item[assignment.item_id].append(assignment)
        contested = [rows[:2] for rows in by_item.values() if len(rows) >= 2]
        if contested:
            return self._pick(contested, pick)
        leases = [self._claim_for((pick + n) % ANNOTATORS) for n in range(2)]
        return [lease for lease in leases if lease is not None]

    def _submit_call(self, assignment: Assignment, shape: str, key: str) -> Callable[[], Any]:
        data = ranking_for(assignment, shape)
        return lambda: ranking_submit(annotator=assignment.annotator, assignment_id=assignment.pk,
                                      data=data, idempotency_key=key)

    def _key(self) -> str:
        return f"key-{next(self.keys)}"

    def _lapse(self, assignment: Assignment) -> None:
        """The clock passes the lease's end (the sweep has not run yet)."""
        Assignment.objects.filter(pk=assignment.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1))

    def _release_call(self, user: Any) -> Callable[[], int]:
        return lambda: leases_release(project=self.project, user=user, actor=self.reviewer,
                                      note="stateful")

    def _count_release(self, released: int | None) -> None:
        if released:
            self.expected_audit["member.release_leases"] += 1

    def _adjudicate_call(self, item: Item, action: str, extra: int) -> Callable[[], Item]:
        tiers = [[cid] for cid in sorted(item.item_candidates.values_list("candidate_id", flat=True))]
        return lambda: item_adjudicate(item_id=item.pk, reviewer=self.reviewer, action=action,
                                       note="stateful", tiers=tiers, extra_rankings=extra)

    def _count_adjudication(self, action: str, result: Item | None) -> None:
        if result is not None:
            self.expected_audit[f"item.{action}"] += 1

    # ------------------------------------------------------------------ annotators

    def _read_guideline(self, user: Any) -> None:
        acknowledge(user=user, version=guideline_current_version(project=self.project))

    @rule(who=st.integers(0, ANNOTATORS - 1), prefetch=st.booleans(), read_guideline=st.booleans())
    def claim(self, who: int, prefetch: bool, read_guideline: bool) -> None:
        STATS["claim"] += 1
        user = self.annotators[who]
        if read_guideline:
            self._read_guideline(user)
        assignment = attempt("claim", lambda: next_item(annotator=user, project=self.project,
                                                        prefetch=prefetch))
        note(f"ann{who} claim(prefetch={prefetch}) -> {assignment and assignment.item_id}")

    @rule(who=st.integers(0, ANNOTATORS - 1), shape=st.sampled_from(SHAPES), read_guideline=st.booleans())
    def annotate(self, who: int, shape: str, read_guideline: bool) -> None:
        """The usual round: ask for the next item and rank it."""
        STATS["annotate"] += 1
        user = self.annotators[who]
        if read_guideline:
            self._read_guideline(user)
        assignment = attempt("annotate:claim", lambda: next_item(annotator=user, project=self.project))
        note(f"ann{who} annotates {assignment and assignment.item_id}")
        if assignment is not None:
            attempt("annotate:submit", self._submit_call(assignment, shape, self._key()))

    @rule(pick=st.integers(0, 20), any_status=st.booleans(), shape=st.sampled_from(SHAPES))
    def submit(self, pick: int, any_status: bool, shape: str) -> None:
        """Submit a lease; with `any_status`, maybe one already submitted, skipped or expired."""
        STATS["submit"] += 1
        chosen = self._pick(self._assignments(active=not any_status), pick)
        if chosen is not None:
            note(f"{chosen.annotator} submits lease {chosen.pk} ({chosen.status}) on item {chosen.item_id}")
            attempt("submit", self._submit_call(chosen, shape, self._key()))

    @rule(pick=st.integers(0, 20))
    def retry_submit(self, pick: int) -> None:
        """A retried request with the key of a stored ranking gets that ranking back."""
        STATS["retry_submit"] += 1
        ranking = self._pick(list(Ranking.objects.filter(item__project=self.project)
                                  .select_related("assignment", "annotator").order_by("id")), pick)
        if ranking is None:
            return
        again, created = ranking_submit(
            annotator=ranking.annotator, assignment_id=ranking.assignment_id,
            data=RankingInput(tiers=tiers_as_shown(ranking.assignment, ranking.tiers)),
            idempotency_key=ranking.idempotency_key)
        assert (again.pk, created) == (ranking.pk, False)

    @rule(pick=st.integers(0, 20), any_status=st.booleans())
    def skip(self, pick: int, any_status: bool) -> None:
        STATS["skip"] += 1
        chosen = self._pick(self._assignments(active=not any_status), pick)
        if chosen is not None:
            note(f"{chosen.annotator} skips lease {chosen.pk} ({chosen.status})")
            attempt("skip", lambda: assignment_skip(annotator=chosen.annotator, assignment_id=chosen.pk,
                                                    reason="broken text"))

    @rule(pick=st.integers(0, 20))
    def lease_lapses(self, pick: int) -> None:
        STATS["lease_lapses"] += 1
        chosen = self._lease(pick)
        if chosen is not None:
            note(f"lease {chosen.pk} on item {chosen.item_id} lapses")
            self._lapse(chosen)
            OUTCOMES["lease_lapses:lapsed"] += 1

    @rule()
    def sweep(self) -> None:
        STATS["sweep"] += 1
        OUTCOMES["sweep:expired"] += assignments_expire()

    # ------------------------------------------------------------------ reviewers, admins

    @rule(pick=st.integers(0, 20), action=st.sampled_from(Adjudication.ALL), extra=st.integers(1, 2))
    def adjudicate(self, pick: int, action: str, extra: int) -> None:
        STATS["adjudicate"] += 1
        item = self._pick(list(Item.objects.filter(project=self.project).order_by("id")), pick)
        note(f"reviewer {action} item {item.pk} ({item.status})")
        self._count_adjudication(action, attempt("adjudicate", self._adjudicate_call(item, action, extra)))

    @rule(who=st.integers(0, ANNOTATORS - 1))
    def release_leases(self, who: int) -> None:
        STATS["release_leases"] += 1
        user = self.annotators[who]
        held = len(self._assignments(annotator=user, active=True))
        released = self._release_call(user)()
        assert released == held
        self._count_release(released)

    @rule(who=st.integers(0, ANNOTATORS - 1), paused=st.booleans())
    def pause(self, who: int, paused: bool) -> None:
        STATS["pause"] += 1
        user = self.annotators[who]
        held = len(self._assignments(annotator=user, active=True))
        membership_pause(project=self.project, user=user, paused=paused, actor=self.admin, note="stateful")
        self.expected_audit["member.pause" if paused else "member.resume"] += 1
        self._count_release(held if paused else 0)

    @rule(major=st.booleans())
    def publish_guideline(self, major: bool) -> None:
        STATS["publish_guideline"] += 1
        note(f"admin publishes a {'major' if major else 'minor'} version")
        self._publish(major=major)

    # ------------------------------------------------------------------ two threads at once

    @rule(first=st.integers(0, ANNOTATORS - 1), second=st.integers(0, ANNOTATORS - 1),
          prefetch=st.tuples(st.booleans(), st.booleans()))
    def claim_concurrently(self, first: int, second: int, prefetch: tuple[bool, bool]) -> None:
        """Two annotators (or one, in two tabs) ask for work at the same moment."""
        STATS["claim_concurrently"] += 1
        users = self.annotators[first], self.annotators[second]
        results = run_concurrently(*(
            lambda user=user, pre=pre: next_item(annotator=user, project=self.project, prefetch=pre)
            for user, pre in zip(users, prefetch, strict=True)))
        note(f"ann{first}+ann{second} claim concurrently -> {results}")
        for result in results:
            judged("claim_concurrently", result, known_double_claim=KNOWN_DOUBLE_CLAIM and first == second)

    @rule(mode=st.sampled_from(["two_annotators", "same_key", "fresh_keys"]), pick=st.integers(0, 20),
          shapes=st.tuples(st.sampled_from(SHAPES), st.sampled_from(SHAPES)), lapse=st.booleans())
    def submit_concurrently(self, mode: str, pick: int, shapes: tuple[str, str], lapse: bool) -> None:
        """Two annotators race for an item's last slots, or one request arrives twice."""
        STATS["submit_concurrently"] += 1
        if mode == "two_annotators":
            pair = self._contested(pick)
        else:
            chosen = self._lease(pick)
            pair = [chosen, chosen] if chosen is not None else []
        if len(pair) < 2:
            return
        if lapse:
            self._lapse(pair[0])
        keys = [self._key()] * 2 if mode == "same_key" else [self._key(), self._key()]
        note(f"{mode}: submit {[a.pk for a in pair]} concurrently (first lapsed: {lapse})")
        results = run_concurrently(*(self._submit_call(a, shape, key)
                                     for a, shape, key in zip(pair, shapes, keys, strict=True)))
        stored = [judged(f"submit_concurrently:{mode}", result) for result in results]
        if mode == "same_key" and all(stored):
            assert stored[0][0].pk == stored[1][0].pk, "one key stored two rankings"

    @rule(ops=st.tuples(st.sampled_from(RACERS), st.sampled_from(RACERS)), pick=st.integers(0, 20),
          claimer=st.integers(0, ANNOTATORS - 1), action=st.sampled_from(Adjudication.ALL),
          lapse=st.booleans(), shape=st.sampled_from(SHAPES))
    def race(self, ops: tuple[str, str], pick: int, claimer: int, action: str, lapse: bool,
             shape: str) -> None:
        """Two writers of one lease or its item at the same moment: a submission, a skip,
        the expiry sweep, a lease release, a reviewer's decision, another claim."""
        STATS["race:" + "+".join(sorted(ops))] += 1
        chosen = self._lease(pick)
        if chosen is None:
            return
        if lapse:
            self._lapse(chosen)
        calls: dict[str, Callable[[], Any]] = {
            "submit": self._submit_call(chosen, shape, self._key()),
            "skip": lambda: assignment_skip(annotator=chosen.annotator, assignment_id=chosen.pk,
                                            reason="changed my mind"),
            "sweep": assignments_expire,
            "release": self._release_call(chosen.annotator),
            "adjudicate": self._adjudicate_call(chosen.item, action, 1),
            "claim": lambda: next_item(annotator=self.annotators[claimer], project=self.project),
        }
        note(f"race {ops} on lease {chosen.pk}, item {chosen.item_id} (lapsed: {lapse}, {action}, "
             f"claimer ann{claimer})")
        results = run_concurrently(*(calls[op] for op in ops))
        double_claim = KNOWN_DOUBLE_CLAIM and ops == ("claim", "claim")
        for op, result in zip(ops, results, strict=True):
            outcome = judged(f"race:{op}", result, known_double_claim=double_claim)
            if op == "release":
                self._count_release(outcome)
            elif op == "adjudicate":
                self._count_adjudication(action, outcome)

    def teardown(self) -> None:
        if self.project is not None:
            ROWS["rankings"] += Ranking.objects.count()
            ROWS["assignments"] += Assignment.objects.count()
            ROWS["audit_events"] += AuditEvent.objects.count()
            ROWS["items_decided"] += Item.objects.exclude(status=Item.Status.OPEN).count()

    # ------------------------------------------------------------------ invariants (from the database)

    @invariant()
    def overlap_is_never_exceeded(self) -> None:
        if self.project is None:
            return
        live = Count("rankings", filter=Q(rankings__superseded_by__isnull=True), distinct=True)
        over = (Item.objects.filter(project=self.project, is_gold=False).annotate(live=live)
                .filter(live__gt=F("required_rankings")).values_list("id", "live", "required_rankings"))
        assert list(over) == [], "items with more live rankings than required (id, live, required)"

    @invariant()
    def one_ranking_and_one_assignment_per_annotator_and_item(self) -> None:
        if self.project is None:
            return
        for model in (Ranking, Assignment):
            twice = (model.objects.filter(item__project=self.project).values("item_id", "annotator_id")
                     .annotate(n=Count("id")).filter(n__gt=1))
            assert list(twice) == [], f"{model.__name__} rows twice for one annotator and item"

    @invariant()
    def rankings_carry_the_guideline_in_force_at_claim(self) -> None:
        if self.project is None:
            return
        in_force = (GuidelineVersion.objects.filter(guideline=self.guideline,
                                                    published_at__lte=OuterRef("leased_at"))
                    .order_by("-number").values("id")[:1])
        wrong_claims = (Assignment.objects.filter(item__project=self.project)
                        .annotate(in_force=Subquery(in_force)).exclude(guideline_version_id=F("in_force")))
        assert list(wrong_claims.values_list("id", "guideline_version_id", "in_force")) == []
        rankings = Ranking.objects.filter(item__project=self.project)
        assert list(rankings.exclude(guideline_version_id=F("assignment__guideline_version_id"))
                    .values_list("id", flat=True)) == [], "ranking and assignment versions differ"
        superseded = GuidelineVersion.objects.filter(
            guideline=self.guideline, change=GuidelineVersion.Change.MAJOR,
            number__gt=OuterRef("guideline_version__number"), published_at__lt=OuterRef("created_at"))
        assert list(rankings.filter(Exists(superseded)).values_list("id", flat=True)) == [], (
            "rankings stored after a later major version was published")

    @invariant()
    def counters_match_rows(self) -> None:
        if self.project is None:
            return
        items = Item.objects.filter(project=self.project).annotate(
            n_rankings=Count("rankings", distinct=True),
            n_leases=Count("assignments", filter=Q(assignments__status=Assignment.Status.ACTIVE),
                           distinct=True),
        )
        wrong = [(item.pk, item.rankings_count, item.n_rankings, item.active_leases, item.n_leases)
                 for item in items
                 if (item.rankings_count, item.active_leases) != (item.n_rankings, item.n_leases)]
        assert wrong == [], "(item, rankings_count, rankings, active_leases, active assignments)"
        stuck = items.filter(is_gold=False, status=Item.Status.OPEN,
                             rankings_count__gte=F("required_rankings")).values_list("id", flat=True)
        assert list(stuck) == [], "open items that already have their required rankings"

    @invariant()
    def each_submitted_assignment_has_its_one_ranking(self) -> None:
        if self.project is None:
            return
        assignments = Assignment.objects.filter(item__project=self.project).annotate(n=Count("rankings"))
        wrong = assignments.exclude(
            Q(status=Assignment.Status.SUBMITTED, n=1) | (~Q(status=Assignment.Status.SUBMITTED) & Q(n=0)))
        assert list(wrong.values_list("id", "status", "n")) == []
        mismatched = Ranking.objects.filter(item__project=self.project).exclude(
            item_id=F("assignment__item_id"), annotator_id=F("assignment__annotator_id"))
        assert not mismatched.exists(), "a ranking on another item or by another person than its lease"

    @invariant()
    def one_audit_event_per_reviewer_or_admin_mutation(self) -> None:
        if self.project is None:
            return
        events = AuditEvent.objects.all()
        assert Counter(events.values_list("action", flat=True)) == +self.expected_audit
        staff = {self.admin.pk, self.reviewer.pk}
        assert set(events.values_list("actor_id", "project_id")) <= {(pk, self.project.pk) for pk in staff}


def test_labeling_services_keep_their_invariants_under_concurrency() -> None:
    assert connection.vendor == "postgresql"
    for counter in (STATS, OUTCOMES, ROWS):
        counter.clear()
    chosen = chosen_settings()
    started = time.monotonic()
    try:
        run_state_machine_as_test(LabelingMachine, settings=chosen)
    finally:
        if path := os.environ.get("STATEFUL_STATS"):
            examples = STATS.pop("examples", 0)
            steps = sum(STATS.values())
            Path(path).write_text(json.dumps({
                "profile": profile_name(), "max_examples": chosen.max_examples,
                "stateful_step_count": chosen.stateful_step_count, "examples": examples, "steps": steps,
                "machine_seconds": round(time.monotonic() - started, 1),
                "rules": dict(sorted(STATS.items())), "outcomes": dict(sorted(OUTCOMES.items())), "rows": dict(ROWS),
            }))


# ---------------------------------------------------------------------- lock order, deterministically
# The machine above found submissions deadlocking with the other lease writers: lease
# release (labeling/services/members.py), skip and the expiry sweep (labeling/services/assignment.py) took
# the lease's lock before the item's, the reverse of ranking_submit. These tests force
# the interleaving: a third connection holds a row lock, the other writer queues on it
# first and the submission second; when the holder lets go, a writer that takes the
# lease before the item deadlocks with the submission (PostgreSQL aborts one of them).


def hold_row_lock(rows: Any, locked: threading.Event, release: threading.Event) -> None:
    try:
        with transaction.atomic():
            list(rows.select_for_update())
            locked.set()
            release.wait(timeout=30)
    finally:
        connection.close()


def wait_until_blocked_or_done(threads: list[threading.Thread], timeout: float = 10) -> None:
    """Until each running thread waits for a lock (or has finished without waiting)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) "
                "WHERE NOT pg_locks.granted AND pg_stat_activity.datname = current_database()")
            if cursor.fetchone()[0] >= sum(thread.is_alive() for thread in threads):
                return
            time.sleep(0.02)
    raise AssertionError("a thread neither finished nor waited for a lock")


def race_with_submission(held: Any, writer: Callable[[], Any], assignment: Assignment) -> list[Any]:
    """Queue `writer`, then a submission of `assignment`, behind a lock on the `held`
    rows; returns [writer's result, submission's result], an exception as a result."""
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_row_lock, args=(held, locked, release))
    holder.start()
    assert locked.wait(timeout=10)
    results: list[Any] = [None, None]

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            results[index] = call()
        except BaseException as exc:  # judged by the test
            results[index] = exc
        finally:
            connection.close()

    data = ranking_for(assignment, "as_shown")
    calls = [writer, lambda: ranking_submit(annotator=assignment.annotator, assignment_id=assignment.pk,
                                            data=data, idempotency_key="racing")]
    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for started in range(1, len(threads) + 1):
        threads[started - 1].start()
        wait_until_blocked_or_done(threads[:started])  # queued in this order
    release.set()
    for thread in (holder, *threads):
        thread.join(timeout=30)
    return results


def assert_no_deadlock(results: list[Any]) -> None:
    """Either may be refused (already skipped, lease expired); neither may fail."""
    errors = [result for result in results
              if isinstance(result, BaseException) and not isinstance(result, EXPECTED_ERRORS)]
    assert errors == [], "a lease writer or a submission failed"


@pytest.fixture
def leased(project: Project, annotator: Any) -> Assignment:
    make_items(project, 2)
    return next_item(annotator=annotator, project=project)


def test_lease_release_and_a_submission_never_deadlock(project: Project, reviewer: Any, leased: Assignment,
                                                       ) -> None:
    results = race_with_submission(
        Assignment.objects.filter(pk=leased.pk),
        lambda: leases_release(project=project, user=leased.annotator, actor=reviewer), leased)

    assert_no_deadlock(results)
    item = Item.objects.get(pk=leased.item_id)
    assert (item.active_leases, item.rankings_count) == (0, Ranking.objects.filter(item=item).count())
    assert AuditEvent.objects.filter(action="member.release_leases").count() == 1


def test_skip_and_a_submission_of_the_same_lease_never_deadlock(leased: Assignment) -> None:
    results = race_with_submission(
        Assignment.objects.filter(pk=leased.pk),
        lambda: assignment_skip(annotator=leased.annotator, assignment_id=leased.pk, reason="broken"), leased)

    assert_no_deadlock(results)


def test_expiry_sweep_and_a_late_submission_never_deadlock(project: Project, leased: Assignment) -> None:
    behind = next_item(annotator=leased.annotator, project=project, prefetch=True)
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    # A sweep that locked both leases, then waited for the first item, deadlocked with the
    # submission of the second lease, which holds the second item and waits for its lease.
    results = race_with_submission(Item.objects.filter(pk=leased.item_id), assignments_expire, behind)

    assert_no_deadlock(results)
