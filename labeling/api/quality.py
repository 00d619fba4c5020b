"""Agreement, annotator quality and model comparison (reviewers and admins only:
annotators never see other people's rankings or figures)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from core.api import query_text
from labeling.axes import axes_from_config
from labeling.models import AnnotatorQuality, Item, Role
from labeling.selectors.dashboard import model_comparison, project_agreement_summary
from labeling.selectors.review import live_rankings
from labeling.stats.axes import disputed_axes


class AxisAgreementOutput(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.CharField()
    required = serializers.BooleanField()
    decided_items = serializers.IntegerField()
    agreement = serializers.FloatField(allow_null=True)
    agreement_ci = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    accepted = serializers.IntegerField()
    disputed = serializers.IntegerField()


class AgreementOutput(serializers.Serializer):
    items = serializers.DictField(child=serializers.IntegerField())
    decided_items = serializers.IntegerField()
    pairwise_agreement = serializers.FloatField(allow_null=True)
    pairwise_agreement_ci = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    rankings_saved_by_adaptive_overlap = serializers.IntegerField()
    axes = AxisAgreementOutput(many=True, help_text=(
        "Per axis of a project with axes (empty without): agreement and items accepted or "
        "disputed on that axis; the fields above are the primary (first) axis's."))


class ProjectAgreement(APIView):
    @extend_schema(responses=AgreementOutput)
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        return Response(AgreementOutput(project_agreement_summary(project=project)).data)


class QualityOutput(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")

    class Meta:
        model = AnnotatorQuality
        fields = ["annotator", "period", "rankings", "loo_agreement", "gold_items",
                  "gold_accuracy", "median_seconds", "tie_rate", "position_bias",
                  "position_expected", "length_bias", "flags", "updated_at"]


class ProjectAnnotators(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("period", str, description=(
            "'all' (default), 'week:2026-W48', 'guideline:v2', or 'axis:<key>' for one axis's "
            "figures in a project with axes (e.g. 'axis:harmless')"))],
        responses=QualityOutput(many=True),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        period = query_text(request, "period", "all")[:32]
        rows = AnnotatorQuality.objects.filter(project=project, period=period).select_related(
            "annotator").order_by("annotator__username")
        return Response(QualityOutput(rows, many=True).data)


class ModelRow(serializers.Serializer):
    model = serializers.CharField()
    bt_score = serializers.FloatField()
    bt_ci = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    win_rate = serializers.DictField(child=serializers.FloatField())
    comparisons = serializers.IntegerField()


class ModelsOutput(serializers.Serializer):
    items = serializers.IntegerField()
    models = ModelRow(many=True)


class ProjectModels(APIView):
    @extend_schema(responses=ModelsOutput)
    def get(self, request: Request, project_id: int) -> Response:
        """Which model's answers win: win rates and Bradley-Terry scores (bootstrap 95%)."""
        project = access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        return Response(ModelsOutput(model_comparison(project=project)).data)


class ItemRankingOutput(serializers.Serializer):
    annotator = serializers.CharField()
    tiers = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    labels = serializers.DictField(help_text="Every axis's labels (empty for a project without axes)")
    safety = serializers.DictField(child=serializers.BooleanField(), allow_null=True,
                                   help_text="Answer id -> marked safe (projects with a harmlessness axis)")
    guideline_version = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class ItemAgreementOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    required_rankings = serializers.IntegerField()
    agreement = serializers.FloatField(allow_null=True)
    consensus = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()),
                                      allow_null=True)
    rankings = ItemRankingOutput(many=True)
    axes = serializers.DictField(help_text=(
        "Per axis: agreement, consensus, status (accepted|disputed), rankings, and mean "
        "scores for a rating axis; empty for a project without axes"))
    disputed_axes = serializers.ListField(child=serializers.CharField(),
                                          help_text="The axes whose rankings disagree, in order")


class ItemAgreement(APIView):
    @extend_schema(responses=ItemAgreementOutput)
    def get(self, request: Request, item_id: int) -> Response:
        item = access.object_for(request.user, Item, item_id, min_role=Role.REVIEWER, what="item")
        rankings = [
            {"annotator": r.annotator.username, "tiers": r.tiers, "created_at": r.created_at,
             "labels": r.labels or {}, "safety": r.safety,
             "guideline_version": r.guideline_version.number if r.guideline_version else None}
            for r in live_rankings(item)
        ]
        return Response(ItemAgreementOutput({
            "id": item.pk, "status": item.status, "required_rankings": item.required_rankings,
            "agreement": item.agreement, "consensus": item.consensus, "rankings": rankings,
            "axes": item.axes or {},
            "disputed_axes": disputed_axes(axes_from_config(item.project.axes), item.axes or {}),
        }).data)
