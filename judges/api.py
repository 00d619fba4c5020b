"""API of the AI judges: configure (admins), run, cancel, and read their rankings and
figures (reviewers). One view per operation; writes go through judges.services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from core.api import StrictJSONInput
from core.errors import DomainError
from judges.metrics import figures_as_dict, judge_figures
from judges.models import Judge, JudgeRanking, JudgeRun
from judges.services import judge_create, judge_run_cancel, judge_run_create, judge_update
from labeling.models import Role
from training.models import ModelVersion

MAX_ID = 2**63 - 1  # a database id: larger numbers would overflow the query, not just miss


class JudgeOutput(serializers.ModelSerializer):
    class Meta:
        model = Judge
        fields = ["id", "project", "name", "kind", "endpoint", "model", "reward_version",
                  "prompt_template", "temperature", "max_tokens", "orders", "max_items_per_day",
                  "max_tokens_per_day", "trust_threshold", "routes_disagreements", "measured_agreement",
                  "version", "active", "created_at"]


class JudgeRunOutput(serializers.ModelSerializer):
    class Meta:
        model = JudgeRun
        fields = ["id", "judge", "judge_version", "status", "attempts", "progress", "stats", "error",
                  "created_at", "started_at", "finished_at"]


class JudgeRankingOutput(serializers.ModelSerializer):
    source = serializers.SerializerMethodField()

    class Meta:
        model = JudgeRanking
        fields = ["id", "source", "judge", "judge_version", "item", "guideline_version", "status",
                  "tiers", "confidence", "consistent", "rationale", "skip_reason", "judgements",
                  "prompt_tokens", "completion_tokens", "created_at"]

    def get_source(self, row: JudgeRanking) -> str:
        return "ai"


class _JudgeFields(serializers.Serializer):
    endpoint = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                     help_text="endpoint: a configured endpoint's name (never a URL).")
    model = serializers.CharField(required=False, allow_blank=True, max_length=500,
                                  help_text="endpoint: the model it serves; local: an accepted model.")
    reward_version = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_ID,
                                              help_text="reward_model: a registered reward model's id.")
    prompt_template = serializers.CharField(required=False, max_length=20000, trim_whitespace=False)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=32768)
    orders = serializers.IntegerField(required=False, min_value=2, max_value=4)
    max_items_per_day = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                                 max_value=10_000_000)
    max_tokens_per_day = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                                  max_value=10**12)
    trust_threshold = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    routes_disagreements = serializers.BooleanField(required=False)


def _reward_version(values: dict[str, Any], project_id: int) -> None:
    if values.get("reward_version") is not None:
        version = ModelVersion.objects.filter(pk=values["reward_version"], project_id=project_id).first()
        if version is None:
            raise DomainError("reward_version is not a model version of this project")
        values["reward_version"] = version


class JudgeListCreate(APIView):
    class JudgeInput(StrictJSONInput, _JudgeFields):
        name = serializers.CharField(max_length=100)
        kind = serializers.ChoiceField(choices=Judge.Kind.choices)

    @extend_schema(responses=JudgeOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        return Response(JudgeOutput(Judge.objects.filter(project=project), many=True).data)

    @extend_schema(request=JudgeInput, responses={201: JudgeOutput})
    def post(self, request: Request, project_id: int) -> Response:
        """Add an AI judge to the project (admins)."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = self.JudgeInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        _reward_version(values, project.pk)
        judge = judge_create(project=project, actor=request.user, **values)
        return Response(JudgeOutput(judge).data, status=status.HTTP_201_CREATED)


def judge_for(user: Any, judge_id: int, *, min_role: str = Role.REVIEWER) -> Judge:
    return access.object_for(user, Judge, judge_id, min_role=min_role, what="judge")


class JudgeDetail(APIView):
    class JudgeChange(StrictJSONInput, _JudgeFields):
        name = serializers.CharField(required=False, max_length=100)
        kind = serializers.ChoiceField(required=False, choices=Judge.Kind.choices)
        active = serializers.BooleanField(required=False)

    @extend_schema(responses=JudgeOutput)
    def get(self, request: Request, judge_id: int) -> Response:
        return Response(JudgeOutput(judge_for(request.user, judge_id)).data)

    @extend_schema(request=JudgeChange, responses=JudgeOutput)
    def patch(self, request: Request, judge_id: int) -> Response:
        """Change a judge (admins); a change to what it judges by makes a new version."""
        judge = judge_for(request.user, judge_id, min_role=Role.ADMIN)
        data = self.JudgeChange(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        _reward_version(values, judge.project_id)
        return Response(JudgeOutput(judge_update(judge=judge, actor=request.user, **values)).data)


class JudgeRunListCreate(APIView):
    class JudgeRunInput(StrictJSONInput, serializers.Serializer):
        item_ids = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False,
                                         max_length=100_000,
                                         help_text="Default: every item this judge version has not judged.")

    @extend_schema(responses=JudgeRunOutput(many=True))
    def get(self, request: Request, judge_id: int) -> Response:
        judge = judge_for(request.user, judge_id)
        return Response(JudgeRunOutput(judge.runs.order_by("-id")[:100], many=True).data)

    @extend_schema(request=JudgeRunInput, responses={202: JudgeRunOutput})
    def post(self, request: Request, judge_id: int) -> Response:
        """Start a judge run on the `generate` queue (admins)."""
        judge = judge_for(request.user, judge_id, min_role=Role.ADMIN)
        data = self.JudgeRunInput(data=request.data)
        data.is_valid(raise_exception=True)
        run = judge_run_create(judge=judge, actor=request.user,
                               item_ids=data.validated_data.get("item_ids"))
        return Response(JudgeRunOutput(run).data, status=status.HTTP_202_ACCEPTED)


def judge_run_for(user: Any, run_id: int, *, min_role: str = Role.REVIEWER) -> JudgeRun:
    return access.object_for(user, JudgeRun, run_id, min_role=min_role, what="judge run",
                             project_field="judge__project_id")


class JudgeRunDetail(APIView):
    @extend_schema(responses=JudgeRunOutput)
    def get(self, request: Request, run_id: int) -> Response:
        return Response(JudgeRunOutput(judge_run_for(request.user, run_id)).data)


class JudgeRunCancel(APIView):
    @extend_schema(request=None, responses=JudgeRunOutput)
    def post(self, request: Request, run_id: int) -> Response:
        """Stop at the next chunk; rankings already written are kept."""
        run = judge_run_for(request.user, run_id, min_role=Role.ADMIN)
        judge_run_cancel(run=run, actor=request.user)
        run.refresh_from_db()
        return Response(JudgeRunOutput(run).data)


class JudgeRankingList(APIView):
    @extend_schema(responses=JudgeRankingOutput(many=True))
    def get(self, request: Request, judge_id: int) -> Response:
        """The judge's latest 500 rankings and skips (raw answers included), newest first."""
        judge = judge_for(request.user, judge_id)
        rows = JudgeRanking.objects.filter(judge=judge).order_by("-id")[:500]
        return Response(JudgeRankingOutput(rows, many=True).data)


class JudgeFigures(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, judge_id: int) -> Response:
        """The judge measured like a person, per period ("all", "guideline:v<n>")."""
        judge = judge_for(request.user, judge_id)
        return Response({period: figures_as_dict(f) for period, f in judge_figures(judge).items()})
