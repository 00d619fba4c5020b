"""The API for what a project holds: prompts, candidates (reviewers and admins: they
carry model names) and imports (admins)."""

from __future__ import annotations

from pathlib import Path

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from core.api import StrictJSONInput, StrictLimitOffsetPagination, query_text
from labeling.importing import import_axis_problem
from labeling.models import Candidate, ImportJob, Project, Prompt, Role
from labeling.services.imports import import_after_dry_run, import_upload, upload_name_problem

PROMPT_ORDERINGS = ("id", "-id")


class PromptOutput(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "project", "messages", "source", "metadata", "created_at"]
        extra_kwargs = {"metadata": {"help_text": "Reviewers and admins only: absent for annotators."}}


class AnnotatorPromptOutput(PromptOutput):
    """Annotators rank the prompt itself; its metadata (where it came from, reference
    answers, notes) is for reviewers and admins, and may be up to IMPORT_MAX_METADATA_BYTES."""

    class Meta(PromptOutput.Meta):
        fields = [name for name in PromptOutput.Meta.fields if name != "metadata"]


def prompt_output_for(user: access.User, project: Project) -> type[PromptOutput]:
    return PromptOutput if access.sees_prompt_metadata(user, project) else AnnotatorPromptOutput


class PromptList(ListAPIView):
    """Prompts of one project, filterable by `source`, ordered by id. Metadata only for
    reviewers and admins."""

    serializer_class = PromptOutput
    pagination_class = StrictLimitOffsetPagination

    @extend_schema(parameters=[
        OpenApiParameter("source", str, description="Only prompts imported from this source."),
        OpenApiParameter("ordering", str, enum=list(PROMPT_ORDERINGS)),
    ])
    def get(self, request: Request, project_id: int) -> Response:
        return super().get(request, project_id)

    def get_serializer_class(self) -> type[PromptOutput]:
        project = getattr(self, "project", None)  # None while the schema is generated
        return PromptOutput if project is None else prompt_output_for(self.request.user, project)

    def get_queryset(self):  # noqa: ANN201 - DRF hook
        project = self.project = access.project_for(self.request.user, self.kwargs["project_id"])
        prompts = Prompt.objects.filter(project=project)
        source = query_text(self.request, "source")
        if source:
            prompts = prompts.filter(source=source)
        # Ordering is allow-listed: arbitrary field paths would leak data through sorting.
        # Anything else is refused rather than ignored, so a client's typo isn't a wrong order.
        ordering = self.request.query_params.get("ordering", "id")
        if ordering not in PROMPT_ORDERINGS:
            raise ValidationError({"ordering": [f"must be one of {', '.join(PROMPT_ORDERINGS)}"]})
        return prompts.order_by(ordering)


class PromptDetail(APIView):
    @extend_schema(responses=PromptOutput)
    def get(self, request: Request, prompt_id: int) -> Response:
        """One prompt; metadata only for reviewers and admins."""
        prompt = access.prompt_for(request.user, prompt_id)
        return Response(prompt_output_for(request.user, prompt.project)(prompt).data)


class CandidateOutput(serializers.ModelSerializer):
    class Meta:
        model = Candidate
        fields = [
            "id", "prompt", "text", "origin", "model_name", "sampling_params", "seed",
            "prompt_tokens", "completion_tokens", "sample_index", "is_duplicate", "created_at",
        ]


class CandidateList(ListAPIView):
    """Candidates with provenance: reviewers and admins only (annotators rank blind)."""

    serializer_class = CandidateOutput
    pagination_class = StrictLimitOffsetPagination

    @extend_schema(parameters=[OpenApiParameter(
        "prompt", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}, description="Filter by prompt.")])
    def get(self, request: Request, project_id: int) -> Response:
        return super().get(request, project_id)

    def get_queryset(self):  # noqa: ANN201 - DRF hook
        project = access.project_for(self.request.user, self.kwargs["project_id"])
        candidates = access.candidates_for(self.request.user, project)
        prompt = self.request.query_params.get("prompt")
        if prompt is not None:
            # isascii: "²".isdigit() is true, and int("²") raises.
            if not (prompt.isascii() and prompt.isdigit() and len(prompt) <= 18):
                raise ValidationError({"prompt": ["must be a prompt id"]})
            candidates = candidates.filter(prompt_id=int(prompt))
        return candidates.order_by("id")


class ImportOutput(serializers.ModelSerializer):
    class Meta:
        model = ImportJob
        fields = [
            "id", "project", "original_name", "skip_invalid", "dry_run", "dry_run_of", "axis", "status",
            "attempts", "progress", "error", "report", "created_at", "started_at", "finished_at",
        ]


class ImportListCreate(APIView):
    parser_classes = [MultiPartParser]

    class ImportUploadInput(serializers.Serializer):
        file = serializers.FileField()
        skip_invalid = serializers.BooleanField(default=False)
        dry_run = serializers.BooleanField(
            default=False, help_text="Validate only: the report lists every invalid row with its "
                                     "line and reason, nothing is written; then POST "
                                     "/api/imports/{id}/import to import the same upload.")
        axis = serializers.CharField(
            default="", allow_blank=True, max_length=40,
            help_text="The project axis the file's preference pairs (chosen/rejected) judge, e.g. "
                      "\"harmless\" for HH-RLHF's harmless file; blank: the primary axis.")

    @extend_schema(responses=ImportOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        return Response(ImportOutput(project.imports.order_by("-id")[:100], many=True).data)

    @extend_schema(request=ImportUploadInput, responses={202: ImportOutput})
    def post(self, request: Request, project_id: int) -> Response:
        """Upload a JSONL, CSV or Parquet file (optionally gzipped); a task on the
        default queue imports it (or, with `dry_run`, validates it). Poll GET
        /api/imports/{id} for status and report."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        unknown = sorted(set(request.data) - {"file", "skip_invalid", "dry_run", "axis"})
        if unknown:
            raise ValidationError({name: ["unknown field"] for name in unknown})
        data = self.ImportUploadInput(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        name = Path(upload.name or "").name
        problem = upload_name_problem(name, upload.size)
        if problem:
            raise ValidationError({"file": [problem]})
        problem = import_axis_problem(project, data.validated_data["axis"])
        if problem:
            raise ValidationError({"axis": [problem]})
        job = import_upload(project=project, name=name, size=upload.size, chunks=upload.chunks(),
                            actor=request.user, dry_run=data.validated_data["dry_run"],
                            skip_invalid=data.validated_data["skip_invalid"],
                            axis=data.validated_data["axis"])
        return Response(ImportOutput(job).data, status=status.HTTP_202_ACCEPTED)


class ImportDetail(APIView):
    @extend_schema(responses=ImportOutput)
    def get(self, request: Request, import_id: int) -> Response:
        return Response(ImportOutput(access.import_job_for(request.user, import_id)).data)


class ImportAfterDryRun(APIView):
    class ImportAfterInput(StrictJSONInput, serializers.Serializer):
        skip_invalid = serializers.BooleanField(
            default=False, help_text="Import the valid rows of a file the dry run found invalid "
                                     "rows in; without it such a file answers 400.")

    @extend_schema(request=ImportAfterInput, responses={202: ImportOutput})
    def post(self, request: Request, import_id: int) -> Response:
        """Import the upload of a finished dry run (once)."""
        dry_run = access.import_job_for(request.user, import_id)
        data = self.ImportAfterInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = import_after_dry_run(dry_run=dry_run, skip_invalid=data.validated_data["skip_invalid"],
                                   actor=request.user)
        return Response(ImportOutput(job).data, status=status.HTTP_202_ACCEPTED)
