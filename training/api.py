"""API for generation runs (and, as they land, snapshots and training runs)."""

from __future__ import annotations

import json

from django.http import FileResponse, Http404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from core.api import ApiErrorSerializer, StrictJSONInput
from labeling.models import Role
from training.artifacts import artifact_open
from training.endpoints import endpoints_configured
from training.generation import generation_run_create
from training.model_refs import builtin_models, model_folders
from training.models import DatasetSnapshot, GenerationRun, ModelVersion, TrainingMetric, TrainingRun
from training.registry import model_version_promote
from training.runs import run_stop, training_run_create, version_axis
from training.snapshots import FORMATS, KINDS, snapshot_create, snapshot_dir


class GenerationRunOutput(serializers.ModelSerializer):
    class Meta:
        model = GenerationRun
        fields = ["id", "project", "backend", "model", "endpoint", "params", "backend_options",
                  "policy", "status",
                  "attempts", "progress", "stats", "errors", "error", "created_at",
                  "started_at", "finished_at"]


def generation_run_for(user, run_id: int, *, min_role: str = Role.REVIEWER) -> GenerationRun:  # noqa: ANN001
    return access.object_for(user, GenerationRun, run_id, min_role=min_role,
                             what="generation run")


class GenerationRunListCreate(APIView):
    class GenerationRunInput(StrictJSONInput, serializers.Serializer):
        backend = serializers.ChoiceField(
            choices=GenerationRun.Backend.choices, required=False,
            help_text="Left out (with no policy): sample from the project's promoted policy.")
        policy = serializers.IntegerField(
            required=False, min_value=1, max_value=2**63 - 1,
            help_text="A model version id of this project (kind policy) to sample from; "
                      "default when no backend is given: the current promoted policy.")
        model = serializers.CharField(
            required=False, allow_blank=True, max_length=500,
            help_text="transformers, vllm: a hub id (owner/name) or a folder under MODEL_DIRS; "
                      "openai: the model name the endpoint serves; builtin-tiny: none.")
        endpoint = serializers.CharField(
            required=False, allow_blank=True, max_length=64,
            help_text="openai: the name of a configured endpoint (generation-options lists "
                      "them); may be left out when only one is configured.")
        k = serializers.IntegerField(default=4)
        temperature = serializers.FloatField(default=1.0)
        top_p = serializers.FloatField(default=1.0)
        max_new_tokens = serializers.IntegerField(default=256)
        seed = serializers.IntegerField(default=0)
        stop = serializers.ListField(child=serializers.CharField(), default=list)
        system_prompt = serializers.CharField(required=False, allow_null=True, default=None)
        prompt_ids = serializers.ListField(child=serializers.IntegerField(), required=False,
                                           help_text="Default: every prompt with fewer than K "
                                                     "model-sampled candidates.")

    @extend_schema(responses=GenerationRunOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        runs = GenerationRun.objects.filter(project=project).order_by("-id")[:100]
        return Response(GenerationRunOutput(runs, many=True).data)

    @extend_schema(request=GenerationRunInput, responses={202: GenerationRunOutput})
    def post(self, request: Request, project_id: int) -> Response:
        """Start sampling K candidates per prompt on the `generate` queue."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = self.GenerationRunInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        policy = None
        if "policy" in values:
            policy = ModelVersion.objects.filter(project=project, pk=values.pop("policy"),
                                                 kind=ModelVersion.Kind.POLICY).first()
            if policy is None:
                raise ValidationError({"policy": ["no registered policy of this project has this id"]})
        run = generation_run_create(
            project=project, backend=values.pop("backend", ""), model=values.pop("model", ""),
            policy=policy,
            endpoint=values.pop("endpoint", ""), prompt_ids=values.pop("prompt_ids", None),
            params=values, user=request.user,
        )
        return Response(GenerationRunOutput(run).data, status=status.HTTP_202_ACCEPTED)


class GenerationEndpointOutput(serializers.Serializer):
    name = serializers.CharField()
    models = serializers.ListField(child=serializers.CharField(),
                                   help_text="The model names it serves; empty: any.")


class ModelFolderOutput(serializers.Serializer):
    name = serializers.CharField()
    model = serializers.CharField(help_text="The value to send as `model` or `base_model`.")


class GenerationOptionsOutput(serializers.Serializer):
    backends = serializers.ListField(child=serializers.CharField())
    endpoints = GenerationEndpointOutput(many=True)
    model_folders = ModelFolderOutput(many=True)
    builtin_models = serializers.ListField(child=serializers.CharField())


class GenerationOptions(APIView):
    @extend_schema(responses=GenerationOptionsOutput)
    def get(self, request: Request, project_id: int) -> Response:
        """What a generation or training run may name: the configured endpoints (by name,
        never their URLs or keys), the backends, the local model folders and built-ins."""
        access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        endpoints = sorted(endpoints_configured().values(), key=lambda e: e.name)
        return Response(GenerationOptionsOutput({
            "backends": GenerationRun.Backend.values,
            "endpoints": [{"name": e.name, "models": list(e.models)} for e in endpoints],
            "model_folders": model_folders(),
            "builtin_models": sorted(builtin_models()),
        }).data)


class GenerationRunDetail(APIView):
    @extend_schema(responses=GenerationRunOutput)
    def get(self, request: Request, run_id: int) -> Response:
        return Response(GenerationRunOutput(generation_run_for(request.user, run_id)).data)


class GenerationRunCancel(APIView):
    @extend_schema(request=None, responses=GenerationRunOutput)
    def post(self, request: Request, run_id: int) -> Response:
        """Stop at the next chunk; candidates already written are kept."""
        run = generation_run_for(request.user, run_id, min_role=Role.ADMIN)
        run_stop(run=run, actor=request.user)
        run.refresh_from_db()
        return Response(GenerationRunOutput(run).data)


class SnapshotOutput(serializers.ModelSerializer):
    manifest = serializers.SerializerMethodField()

    class Meta:
        model = DatasetSnapshot
        fields = ["id", "project", "kinds", "formats", "filters", "options", "status", "progress",
                  "counts", "files", "error", "created_at", "finished_at", "manifest",
                  "contains_erased"]

    def get_manifest(self, snapshot: DatasetSnapshot) -> dict | None:
        if snapshot.status != "done" or snapshot.contains_erased:
            return None
        try:
            with artifact_open(snapshot_dir(snapshot) / "manifest.json") as manifest:
                return json.load(manifest)
        except FileNotFoundError:
            return None


def snapshot_for(user, snapshot_id: int) -> DatasetSnapshot:  # noqa: ANN001
    return access.object_for(user, DatasetSnapshot, snapshot_id, min_role=Role.REVIEWER,
                             what="dataset snapshot")


class SnapshotListCreate(APIView):
    class SnapshotInput(StrictJSONInput, serializers.Serializer):
        kinds = serializers.ListField(child=serializers.ChoiceField(choices=KINDS), min_length=1)
        formats = serializers.ListField(child=serializers.ChoiceField(choices=FORMATS),
                                        default=["parquet", "jsonl"])
        include_external = serializers.BooleanField(default=False)
        include_ai = serializers.BooleanField(
            default=False, help_text="Also AI judges' rankings: raw rows with source \"ai\" and the judge "
                                     "id (people's: \"human\"); pairs and dpo rows with source \"ai\" "
                                     "and the judge id (people's consensus: \"consensus\").")
        judges = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
                                       required=False, min_length=1,
                                       max_length=100, help_text="With include_ai: only these judges.")
        exclude_flagged = serializers.BooleanField(default=True)
        axis = serializers.CharField(
            required=False, max_length=40,
            help_text="A key of the project's axes: pairs and dpo come from that axis's consensus over "
                      "the items accepted on it, external preferences from those imported to it. "
                      "Absent: the primary axis. Unknown keys answer 400 with the project's keys.")
        min_agreement = serializers.FloatField(required=False, min_value=0, max_value=1)
        guideline_versions = serializers.ListField(child=serializers.IntegerField(),
                                                   required=False)
        since = serializers.DateField(required=False)
        until = serializers.DateField(required=False)
        conversational = serializers.BooleanField(
            allow_null=True, default=None,
            help_text="Prompts and answers as message lists (true) or plain-format text (false) in "
                      "every file; null: messages for sft, dpo and kto (policy training needs them), "
                      "text for pairs (reward models).")
        validation_fraction = serializers.FloatField(default=0.0, min_value=0, max_value=0.9)
        split_seed = serializers.IntegerField(default=0)

    @extend_schema(responses=SnapshotOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        return Response(SnapshotOutput(project.snapshots.order_by("-id")[:100], many=True).data)

    @extend_schema(request=SnapshotInput, responses={202: SnapshotOutput})
    def post(self, request: Request, project_id: int) -> Response:
        """Freeze accepted labels into files (built by a task on the default queue)."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = self.SnapshotInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        options = {name: values.pop(name)
                   for name in ("conversational", "validation_fraction", "split_seed")}
        kinds, formats = values.pop("kinds"), values.pop("formats")
        filters = {key: (str(value) if key in {"since", "until"} else value)
                   for key, value in values.items()}
        snapshot = snapshot_create(project=project, kinds=kinds, formats=formats,
                                   filters=filters, options=options, user=request.user)
        return Response(SnapshotOutput(snapshot).data, status=status.HTTP_202_ACCEPTED)


class SnapshotDetail(APIView):
    @extend_schema(responses=SnapshotOutput)
    def get(self, request: Request, snapshot_id: int) -> Response:
        return Response(SnapshotOutput(snapshot_for(request.user, snapshot_id)).data)


class SnapshotGoneOutput(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    rebuild = serializers.CharField(help_text="POST here to build a new snapshot without the erased data.")


def snapshot_gone(snapshot: DatasetSnapshot) -> Response:
    """410 Gone: the files were deleted by an erasure; the answer says where to rebuild."""
    rebuild = reverse("snapshot-rebuild", kwargs={"snapshot_id": snapshot.pk})
    response = Response(SnapshotGoneOutput({
        "detail": f"Snapshot {snapshot.pk} held data that was erased; its files are deleted. "
                  f"POST {rebuild} to build a new snapshot without it.",
        "code": "gone", "rebuild": rebuild}).data, status=status.HTTP_410_GONE)
    response["Link"] = f'<{rebuild}>; rel="rebuild"'
    return response


class SnapshotFile(APIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes, 410: SnapshotGoneOutput})
    def get(self, request: Request, snapshot_id: int, name: str) -> FileResponse | Response:
        """Download one file as an attachment (streamed; never from a static path)."""
        snapshot = snapshot_for(request.user, snapshot_id)
        if snapshot.contains_erased:
            return snapshot_gone(snapshot)
        if snapshot.status != "done" or name not in snapshot.files:
            raise Http404("No such file in this snapshot.")
        try:
            opened = artifact_open(snapshot_dir(snapshot) / name)
        except FileNotFoundError:
            raise Http404("This file is no longer in the artifact storage.") from None
        response = FileResponse(opened, as_attachment=True, filename=name,
                                content_type="application/octet-stream")
        response["X-Content-Type-Options"] = "nosniff"
        return response


class TrainingRunOutput(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = ["id", "project", "kind", "base_model", "base_version", "snapshot",
                  "reward_version", "config", "devices", "status", "attempts", "progress",
                  "results", "error", "created_at", "started_at", "finished_at"]


class TrainingMetricOutput(serializers.ModelSerializer):
    class Meta:
        model = TrainingMetric
        fields = ["step", "values", "created_at"]


class ModelVersionOutput(serializers.ModelSerializer):
    axis = serializers.SerializerMethodField(
        help_text="Reward models: the label axis it learned (versions from before axes: the primary axis); "
                  "policies: empty.")

    class Meta:
        model = ModelVersion
        fields = ["id", "project", "kind", "name", "version", "base_model", "adapter_path",
                  "merged_path", "metrics", "source_run", "snapshot", "guideline_versions", "axis",
                  "warnings", "is_current", "trained_on_erased", "created_at"]

    def get_axis(self, version: ModelVersion) -> str:
        return version_axis(version) if version.kind == ModelVersion.Kind.REWARD else ""


def training_run_for(user, run_id: int, *, min_role: str = Role.REVIEWER) -> TrainingRun:  # noqa: ANN001
    return access.object_for(user, TrainingRun, run_id, min_role=min_role,
                             what="training run")


class TrainingRunListCreate(APIView):
    class TrainingRunInput(StrictJSONInput, serializers.Serializer):
        kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
        snapshot = serializers.IntegerField()
        base_model = serializers.CharField(
            required=False, allow_blank=True, max_length=500,
            help_text="A hub id (owner/name), a folder under MODEL_DIRS, builtin-tiny or minilm; "
                      "default: the built-in model of the kind. A model of this project: "
                      "base_version.")
        base_version = serializers.IntegerField(required=False)
        config = serializers.DictField(required=False, default=dict)
        devices = serializers.IntegerField(default=1, min_value=1, max_value=64)

    @extend_schema(responses=TrainingRunOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        return Response(TrainingRunOutput(project.training_runs.order_by("-id")[:100],
                                          many=True).data)

    @extend_schema(request=TrainingRunInput, responses={202: TrainingRunOutput})
    def post(self, request: Request, project_id: int) -> Response:
        """Start a reward / SFT / DPO / RL run on the `train` queue."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = self.TrainingRunInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        run = training_run_create(
            project=project, kind=values["kind"],
            snapshot=DatasetSnapshot.objects.filter(pk=values["snapshot"], project=project).first(),
            base_model=values.get("base_model", ""),
            base_version=ModelVersion.objects.filter(project=project,
                                                     pk=values.get("base_version")).first()
            if values.get("base_version") else None,
            config=values["config"], devices=values["devices"], user=request.user,
        )
        return Response(TrainingRunOutput(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunDetail(APIView):
    @extend_schema(responses=TrainingRunOutput)
    def get(self, request: Request, run_id: int) -> Response:
        return Response(TrainingRunOutput(training_run_for(request.user, run_id)).data)


class TrainingRunMetrics(APIView):
    @extend_schema(responses=TrainingMetricOutput(many=True))
    def get(self, request: Request, run_id: int) -> Response:
        run = training_run_for(request.user, run_id)
        return Response(TrainingMetricOutput(run.metrics.order_by("step"), many=True).data)


class TrainingRunCancel(APIView):
    @extend_schema(request=None, responses=TrainingRunOutput)
    def post(self, request: Request, run_id: int) -> Response:
        """Stop at the end of the current step; checkpoints are kept."""
        run = training_run_for(request.user, run_id, min_role=Role.ADMIN)
        run_stop(run=run, actor=request.user)
        run.refresh_from_db()
        return Response(TrainingRunOutput(run).data)


class ModelVersionList(APIView):
    @extend_schema(responses=ModelVersionOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.REVIEWER)
        return Response(ModelVersionOutput(project.model_versions.all(), many=True).data)


class ModelVersionPromote(APIView):
    class PromoteInput(StrictJSONInput, serializers.Serializer):
        confirm = serializers.BooleanField(
            default=False, help_text="Promote even though the version has warnings (its run may "
                                     "have learned nothing); without it such a version answers 409.")

    @extend_schema(request=PromoteInput, responses={200: ModelVersionOutput, 409: ApiErrorSerializer})
    def post(self, request: Request, version_id: int) -> Response:
        """Make this the project's current policy or reward model. A version whose `warnings`
        are not empty answers 409 (code `confirmation_required`) unless `confirm` is true."""
        version = access.object_for(request.user, ModelVersion, version_id, min_role=Role.ADMIN,
                                    what="model version")
        data = self.PromoteInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = model_version_promote(version=version, actor=request.user,
                                        confirm=data.validated_data["confirm"])
        return Response(ModelVersionOutput(version).data)
