"""The annotator's API: next item, submit a ranking, skip. The same services as the
web page; blind (no model names, no other annotators' work)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from core.api import StrictJSONInput
from labeling.blind import labels_as_shown, safety_as_shown, shown_id, tiers_as_shown
from labeling.models import Assignment, Ranking
from labeling.selectors.workspace import assignment_for, assignment_payload
from labeling.services.assignment import next_item
from labeling.services.demonstrations import DemonstrationInput, demonstration_submit
from labeling.services.rankings import RankingInput, ranking_submit
from labeling.services.revisions import ranking_revise
from labeling.services.submission import assignment_skip


class MessageOutput(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField()


class ShownCandidateOutput(serializers.Serializer):
    id = serializers.CharField(
        help_text="Opaque and valid for this assignment only: rank with these ids.")
    label = serializers.CharField()
    text = serializers.CharField()


class AxisOutput(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["ranking", "rating"],
                                   help_text="ranking: order the answers; rating: 0..4 each.")
    purpose = serializers.CharField()
    required = serializers.BooleanField()
    description = serializers.CharField()
    anchors = serializers.ListField(child=serializers.CharField(),
                                    help_text="Rating axes: what 0, 1, 2, 3 and 4 mean.")


class AssignmentOutput(serializers.Serializer):
    id = serializers.IntegerField()
    item = serializers.IntegerField()
    task = serializers.ChoiceField(
        choices=["ranking", "demonstration"],
        help_text="ranking: order the candidates. demonstration: write the answer you wish "
                  "the model gave (POST .../demonstration); a candidate, if any, may be rewritten.")
    expires_at = serializers.DateTimeField()
    mode = serializers.CharField()
    allow_ties = serializers.BooleanField()
    top_k = serializers.IntegerField(allow_null=True)
    content_warning = serializers.BooleanField()
    guideline_version = serializers.IntegerField(allow_null=True)
    messages = MessageOutput(many=True)
    candidates = ShownCandidateOutput(many=True)
    axes = AxisOutput(many=True, help_text="Label every axis (the first is `tiers`' axis).")
    ask_safety = serializers.BooleanField(
        help_text="Mark each answer safe or unsafe in `safety` (the project has a harmlessness axis).")


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=True,
    description="Client-generated; a retry with the same key stores nothing new and returns "
                "the first result.")


class ErrorOutput(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


class NextItem(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("prefetch", bool, description=(
            "Also claim the item behind the current one, so it is ready in advance."))],
        responses={200: AssignmentOutput, 204: OpenApiResponse(description="Nothing left."),
                   409: ErrorOutput},
    )
    def get(self, request: Request, project_id: int) -> Response:
        """Your current item (the same one until you submit or skip it), or a new one."""
        values = request.query_params.getlist("prefetch")
        if len(values) > 1 or (values and values[0] not in {"true", "false", "1", "0"}):
            raise ValidationError({"prefetch": ["must be one of true, false"]})
        project = access.project_for(request.user, project_id)
        prefetch = bool(values) and values[0] in {"1", "true"}
        assignment = next_item(annotator=request.user, project=project, prefetch=prefetch)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(AssignmentOutput(assignment_payload(assignment)).data)


def _ranking_shown(assignment: Assignment, ranking: Ranking) -> dict:
    """A stored ranking in the ids its annotator was shown."""
    return {"id": ranking.pk, "assignment_id": ranking.assignment_id,
            "tiers": tiers_as_shown(assignment, ranking.tiers),
            "axes": labels_as_shown(assignment, ranking.labels),
            "safety": safety_as_shown(assignment, ranking.safety),
            "created_at": ranking.created_at}


class RankingCreate(APIView):
    class RankingSubmitInput(StrictJSONInput, serializers.Serializer):
        tiers = serializers.ListField(
            child=serializers.ListField(child=serializers.CharField(max_length=64), min_length=1),
            min_length=1, required=False,
            help_text="Best to worst, in the candidate ids this assignment showed "
                      "(GET .../next); candidates in one inner list are tied. The primary "
                      "axis's; a project with axes may send it in `axes` instead.",
        )
        axes = serializers.DictField(
            child=serializers.DictField(), required=False, allow_empty=False,
            help_text='Projects with axes: every axis by key, {"tiers": [[id, ...], ...]} for '
                      'a ranking axis, {"scores": {id: 0..4}} for a rating axis.')
        safety = serializers.DictField(
            child=serializers.BooleanField(), required=False, allow_null=True,
            help_text="With a harmlessness axis: every answer's id -> safe (true) or not.")
        unsafe = serializers.BooleanField(default=False)
        all_bad = serializers.BooleanField(default=False)
        needs_expert = serializers.BooleanField(default=False)
        rationale = serializers.CharField(default="", allow_blank=True, max_length=5000)
        strength = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                            max_value=4)
        duration_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                               max_value=24 * 3600 * 1000)

    class RankingOutput(serializers.Serializer):
        id = serializers.IntegerField()
        assignment = serializers.IntegerField(source="assignment_id")
        tiers = serializers.ListField(child=serializers.ListField(child=serializers.CharField()),
                                      help_text="In the ids this assignment showed.")
        axes = serializers.DictField(child=serializers.DictField(),
                                     help_text="Every axis's labels (projects with axes).")
        safety = serializers.DictField(child=serializers.BooleanField(), allow_null=True)
        created_at = serializers.DateTimeField()

    @extend_schema(
        request=RankingSubmitInput,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: RankingOutput, 200: RankingOutput, 400: ErrorOutput, 409: ErrorOutput},
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        data = self.RankingSubmitInput(data=request.data)
        if not data.is_valid():
            assignment_for(request.user, assignment_id)  # someone else's assignment: 404 first
            raise ValidationError(data.errors)
        # The service checks what assignment_for would (the caller's own assignment, while
        # they are in its project) in the statement that locks it: one query less (#19).
        try:
            ranking, created = ranking_submit(
                annotator=request.user, assignment_id=assignment_id,
                data=RankingInput(**data.validated_data),
                idempotency_key=request.headers.get("Idempotency-Key", ""), members_only=True,
            )
        except Assignment.DoesNotExist:
            raise Http404("No such assignment.") from None
        return Response(self.RankingOutput(_ranking_shown(ranking.assignment, ranking)).data,
                        status=201 if created else 200)


class DemonstrationCreate(APIView):
    class DemonstrationSubmitInput(StrictJSONInput, serializers.Serializer):
        text = serializers.CharField(max_length=100_000, help_text="The answer, in markdown.")
        rewrite = serializers.BooleanField(
            default=False, help_text="True when it started from the item's candidate "
                                     "(its edit distance to it is stored).")
        duration_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                               max_value=24 * 3600 * 1000)

    class DemonstrationOutput(serializers.Serializer):
        id = serializers.IntegerField()
        assignment = serializers.IntegerField(source="assignment_id")
        candidate = serializers.CharField(
            help_text="The answer you wrote, as an opaque id of this assignment.")
        edit_distance = serializers.IntegerField(allow_null=True)
        created_at = serializers.DateTimeField()

    @extend_schema(
        request=DemonstrationSubmitInput,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: DemonstrationOutput, 200: DemonstrationOutput, 400: ErrorOutput,
                   409: ErrorOutput},
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        """Submit the answer you wrote for a demonstration item (idempotent like rankings)."""
        assignment = assignment_for(request.user, assignment_id)
        data = self.DemonstrationSubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        demonstration, created = demonstration_submit(
            annotator=request.user, assignment_id=assignment.pk,
            data=DemonstrationInput(**data.validated_data),
            idempotency_key=request.headers.get("Idempotency-Key", ""),
        )
        shown = {"id": demonstration.pk, "assignment_id": demonstration.assignment_id,
                 "candidate": shown_id(assignment.pk, demonstration.candidate_id),
                 "edit_distance": demonstration.edit_distance,
                 "created_at": demonstration.created_at}
        return Response(self.DemonstrationOutput(shown).data, status=201 if created else 200)


class AssignmentSkip(APIView):
    class SkipInput(StrictJSONInput, serializers.Serializer):
        reason = serializers.CharField(max_length=500)

    @extend_schema(request=SkipInput, responses={200: None, 409: ErrorOutput})
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = assignment_for(request.user, assignment_id)
        data = self.SkipInput(data=request.data)
        data.is_valid(raise_exception=True)
        assignment_skip(annotator=request.user, assignment_id=assignment.pk,
                        reason=data.validated_data["reason"])
        return Response({"status": "skipped"})


class RankingRevise(APIView):
    @extend_schema(
        request=RankingCreate.RankingSubmitInput,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: RankingCreate.RankingOutput, 200: RankingCreate.RankingOutput,
                   400: ErrorOutput, 409: ErrorOutput},
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        """Go back: change the ranking you sent for this assignment while its item is not
        decided (one of your last few). The new ranking replaces the old one."""
        assignment = assignment_for(request.user, assignment_id)
        data = RankingCreate.RankingSubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        ranking, created = ranking_revise(
            annotator=request.user, assignment_id=assignment.pk,
            data=RankingInput(**data.validated_data),
            idempotency_key=request.headers.get("Idempotency-Key", ""),
        )
        return Response(RankingCreate.RankingOutput(_ranking_shown(assignment, ranking)).data,
                        status=201 if created else 200)
