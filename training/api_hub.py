"""API of Hugging Face Hub pushes: push a built snapshot (admins), follow the push."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from core.api import StrictJSONInput
from labeling.models import Role
from training.hub import hub_push_create
from training.models import DatasetSnapshot, HubPush


class HubPushOutput(serializers.ModelSerializer):
    class Meta:
        model = HubPush
        fields = ["id", "project", "snapshot", "repo_id", "private", "license", "status", "attempts", "progress",
                  "error", "commit_url", "created_at", "started_at", "finished_at"]


class HubPushCreate(APIView):
    class HubPushInput(StrictJSONInput, serializers.Serializer):
        repo_id = serializers.CharField(max_length=200, help_text="The dataset repository, owner/name.")
        private = serializers.BooleanField(default=True)
        license = serializers.CharField(max_length=64, default="other",
                                        help_text="The card's license id (cc-by-4.0, apache-2.0, mit, other...).")

    @extend_schema(request=HubPushInput, responses={202: HubPushOutput})
    def post(self, request: Request, snapshot_id: int) -> Response:
        """Push the snapshot's Parquet files, with a dataset card made from its manifest, to
        the operator's Hugging Face Hub (HF_ENDPOINT, HF_HUB_PUSH_TOKEN) as one commit."""
        snapshot = access.object_for(request.user, DatasetSnapshot, snapshot_id, min_role=Role.ADMIN,
                                     what="dataset snapshot")
        data = self.HubPushInput(data=request.data)
        data.is_valid(raise_exception=True)
        push = hub_push_create(snapshot=snapshot, actor=request.user, **data.validated_data)
        return Response(HubPushOutput(push).data, status=status.HTTP_202_ACCEPTED)


class HubPushDetail(APIView):
    @extend_schema(responses=HubPushOutput)
    def get(self, request: Request, push_id: int) -> Response:
        push = access.object_for(request.user, HubPush, push_id, min_role=Role.ADMIN, what="hub push")
        return Response(HubPushOutput(push).data)
