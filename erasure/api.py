"""Erasure API: preview and erase an account (staff) or a prompt (project admins),
rebuild a snapshot that held erased data, and read the erasure log (staff)."""

from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from core.api import StrictJSONInput
from erasure.access import account_for_erasure, prompt_for_erasure
from erasure.models import ErasureRecord
from erasure.services.prompts import prompt_erase, prompt_erasure_preview
from erasure.services.snapshots import snapshot_rebuild
from erasure.services.users import user_erase, user_erasure_preview
from labeling.models import Role
from training.api import SnapshotOutput
from training.models import DatasetSnapshot


class ErasureRecordOutput(serializers.ModelSerializer):
    class Meta:
        model = ErasureRecord
        fields = ["id", "kind", "subject_id", "subject_hashes", "pseudonym", "project", "options",
                  "counts", "snapshots", "model_versions", "erased_by", "created_at"]


class UserErasurePreviewOutput(serializers.Serializer):
    user_id = serializers.IntegerField()
    pseudonym = serializers.CharField()
    counts = serializers.DictField(child=serializers.IntegerField())


class PromptErasurePreviewOutput(serializers.Serializer):
    prompt_id = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())
    snapshots = serializers.ListField(child=serializers.IntegerField())
    model_versions = serializers.ListField(child=serializers.IntegerField())


class UserErasure(APIView):
    class UserErasureInput(StrictJSONInput, serializers.Serializer):
        remove_text = serializers.BooleanField(
            help_text="true: empty the rationales, skip reasons, review notes and demonstrations "
                      "the person wrote; false: keep them (their username and e-mail are still "
                      "taken out of the text).")

    @extend_schema(responses=UserErasurePreviewOutput)
    def get(self, request: Request, user_id: int) -> Response:
        """What erasing the account would remove and keep (changes nothing)."""
        account = account_for_erasure(request.user, user_id)
        return Response(UserErasurePreviewOutput(asdict(user_erasure_preview(user=account))).data)

    @extend_schema(request=UserErasureInput, responses=ErasureRecordOutput)
    def post(self, request: Request, user_id: int) -> Response:
        """Erase the account's personal data; its labels stay under a pseudonym."""
        account = account_for_erasure(request.user, user_id)
        data = self.UserErasureInput(data=request.data)
        data.is_valid(raise_exception=True)
        record = user_erase(user=account, actor=request.user,
                            remove_text=data.validated_data["remove_text"])
        return Response(ErasureRecordOutput(record).data)


class PromptErasure(APIView):
    class PromptErasureInput(StrictJSONInput, serializers.Serializer):
        confirm = serializers.IntegerField(help_text="The prompt's id again: erasing can't be undone.")

    @extend_schema(responses=PromptErasurePreviewOutput)
    def get(self, request: Request, prompt_id: int) -> Response:
        """What erasing the prompt would delete, mark and flag (changes nothing)."""
        prompt = prompt_for_erasure(request.user, prompt_id)
        return Response(PromptErasurePreviewOutput(asdict(prompt_erasure_preview(prompt=prompt))).data)

    @extend_schema(request=PromptErasureInput, responses=ErasureRecordOutput)
    def post(self, request: Request, prompt_id: int) -> Response:
        """Delete the prompt and everything on it; mark and empty the snapshots that hold it."""
        prompt = prompt_for_erasure(request.user, prompt_id)
        data = self.PromptErasureInput(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["confirm"] != prompt.pk:
            raise serializers.ValidationError({"confirm": ["must be the id of the prompt to erase"]})
        return Response(ErasureRecordOutput(prompt_erase(prompt=prompt, actor=request.user)).data)


class SnapshotRebuild(APIView):
    @extend_schema(request=None, responses={202: SnapshotOutput})
    def post(self, request: Request, snapshot_id: int) -> Response:
        """Build a new snapshot like this one, without the erased data (queued)."""
        snapshot = access.object_for(request.user, DatasetSnapshot, snapshot_id, min_role=Role.ADMIN,
                                     what="dataset snapshot")
        rebuilt = snapshot_rebuild(snapshot=snapshot, user=request.user)
        return Response(SnapshotOutput(rebuilt).data, status=status.HTTP_202_ACCEPTED)


class ErasureLog(APIView):
    @extend_schema(responses=ErasureRecordOutput(many=True))
    def get(self, request: Request) -> Response:
        """The latest 200 erasures (staff)."""
        if not request.user.is_staff:
            raise PermissionDenied("The erasure log is for staff.")
        return Response(ErasureRecordOutput(ErasureRecord.objects.all()[:200], many=True).data)
