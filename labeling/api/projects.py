"""REST API of the labeling app: one view per operation, input/output serializers nested.

Every view fetches through core.access, so querysets are scoped to the caller's
projects: objects elsewhere answer 404, actions beyond the caller's role answer 403.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db import transaction
from django.db.models import ProtectedError
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.usernames import validate_username
from core import access
from core.api import ApiErrorSerializer, StrictJSONInput, query_text
from core.runs import run_enqueue
from labeling.models import Candidate, ImportJob, Membership, Project, Prompt, Role
from labeling.prompt_metadata import unstorable_at
from labeling.services.members import invite_create, member_remove, membership_set, user_create
from labeling.services.projects import project_create

IMPORT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
PROMPT_ORDERINGS = ("id", "-id")


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """LimitOffsetPagination that answers 400 to a limit or offset that is not one whole
    number in range. DRF's falls back to the defaults, so `?limit=5O` or `?offset=-1`
    would silently return another page than the one asked for; and the page size is
    capped, so one request cannot load a whole project."""

    max_limit = 1000

    def get_limit(self, request: Request) -> int:
        value = self._whole_number(request, self.limit_query_param, minimum=1, maximum=self.max_limit)
        return self.default_limit if value is None else value

    def get_offset(self, request: Request) -> int:
        value = self._whole_number(request, self.offset_query_param, minimum=0)
        return value or 0

    @staticmethod
    def _whole_number(request: Request, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
        values = request.query_params.getlist(name)
        if not values:
            return None
        text = values[0]
        in_range = (len(values) == 1 and text.isascii() and text.isdigit() and len(text) <= 18
                    and minimum <= int(text) and (maximum is None or int(text) <= maximum))
        if not in_range:
            bounds = f"{minimum} to {maximum}" if maximum is not None else f"{minimum} or more"
            raise ValidationError({name: [f"must be one whole number, {bounds}"]})
        return int(text)

    def get_schema_operation_parameters(self, view: object) -> list[dict]:
        limit, offset = super().get_schema_operation_parameters(view)
        limit["schema"].update(minimum=1, maximum=self.max_limit)
        offset["schema"].update(minimum=0, maximum=10**18 - 1)
        return [limit, offset]


class ProjectOutput(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = [
            "id", "name", "slug", "description", "k", "overlap", "agreement_threshold", "mode",
            "allow_ties", "gold_rate", "assignment_strategy", "generation_settings", "status",
            "demonstrations", "demonstrations_per_prompt", "mix_demonstrations",
            "guideline", "created_at",
        ]


@extend_schema_field({
    "type": "object",
    "properties": {
        "pairs_per_prompt": {"type": "integer", "minimum": 1,
                             "description": "Sample this many pairs per prompt instead of all C(K,2)."},
        "duplicates": {"type": "string", "enum": ["keep", "drop"],
                       "description": "Drop sampled candidates that repeat another one's text."},
    },
    "additionalProperties": False,
})
class GenerationSettingsField(serializers.DictField):
    """An object of known keys, spelled out in the schema (a model JSONField would be
    documented as "any value", so a list or a bad key passed the schema and got a 400)."""

    KEYS = ("pairs_per_prompt", "duplicates")


class ProjectInput(StrictJSONInput, serializers.ModelSerializer):
    generation_settings = GenerationSettingsField(required=False)

    class Meta:
        model = Project
        fields = [
            "name", "slug", "description", "k", "overlap", "agreement_threshold", "mode",
            "allow_ties", "gold_rate", "assignment_strategy", "generation_settings", "status",
            "demonstrations", "demonstrations_per_prompt", "mix_demonstrations",
        ]
        extra_kwargs = {
            "demonstrations_per_prompt": {"min_value": 1, "max_value": 50},
            "agreement_threshold": {"min_value": 0.0, "max_value": 1.0},
            "gold_rate": {"min_value": 0.0, "max_value": 1.0},
            "k": {"min_value": 2, "max_value": 16},
            "overlap": {"min_value": 1, "max_value": 50},
        }

    def validate_generation_settings(self, value: dict) -> dict:
        unknown = sorted(set(value) - set(GenerationSettingsField.KEYS))
        if unknown:
            raise ValidationError(f"unknown keys {unknown}; the keys are {', '.join(GenerationSettingsField.KEYS)}")
        pairs = value.get("pairs_per_prompt", 1)
        if isinstance(pairs, float) and pairs.is_integer():  # JSON Schema's integers include 2.0
            pairs = value["pairs_per_prompt"] = int(pairs)
        if not isinstance(pairs, int) or isinstance(pairs, bool) or pairs < 1:  # null too: leave it out
            raise ValidationError("pairs_per_prompt must be a positive integer")
        if value.get("duplicates", "keep") not in ("keep", "drop"):  # a tuple: {} is unhashable
            raise ValidationError("duplicates must be 'keep' or 'drop'")
        return value


class ProjectListCreate(ListAPIView):
    """Projects the caller belongs to; staff create new ones."""

    serializer_class = ProjectOutput
    pagination_class = StrictLimitOffsetPagination

    def get_queryset(self):  # noqa: ANN201 - DRF hook
        return access.projects_for(self.request.user).order_by("id")

    @extend_schema(request=ProjectInput, responses={201: ProjectOutput})
    def post(self, request: Request) -> Response:
        if not request.user.is_staff:
            return Response({"detail": "Only staff can create projects."}, status=403)
        data = ProjectInput(data=request.data)
        data.is_valid(raise_exception=True)
        project = project_create(**data.validated_data, actor=request.user)
        return Response(ProjectOutput(project).data, status=status.HTTP_201_CREATED)


class ProjectDetail(APIView):
    @extend_schema(responses=ProjectOutput)
    def get(self, request: Request, project_id: int) -> Response:
        return Response(ProjectOutput(access.project_for(request.user, project_id)).data)

    @extend_schema(request=ProjectInput, responses=ProjectOutput)
    def patch(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = ProjectInput(project, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = data.save()
        if project.demonstrations == Project.Demonstrations.ONLY:
            # Switched to writing answers: every prompt without a demonstration item gets one.
            from labeling.services.demonstrations import demonstration_items_create

            demonstration_items_create(project=project)
        return Response(ProjectOutput(project).data)

    @extend_schema(responses={204: None, 409: ApiErrorSerializer})
    def delete(self, request: Request, project_id: int) -> Response:
        """Delete a project that holds no labels yet. Rankings, the items they rank and the
        snapshots and runs built on them are protected (their foreign keys say so): such a
        project answers 409, and is archived instead (PATCH status "archived")."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        try:
            with transaction.atomic():
                project.delete()
        except ProtectedError:
            return Response({"detail": "this project holds labels or runs, which are kept; archive it instead",
                             "code": "protected"}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberOutput(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    user_id = serializers.IntegerField()

    class Meta:
        model = Membership
        fields = ["user_id", "username", "role", "created_at"]


class MemberListSet(APIView):
    class MemberSetInput(StrictJSONInput, serializers.Serializer):
        username = serializers.CharField(max_length=150)
        role = serializers.ChoiceField(choices=Role.choices)

    @extend_schema(responses=MemberOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        members = project.memberships.select_related("user").order_by("user__username")
        return Response(MemberOutput(members, many=True).data)

    @extend_schema(request=MemberSetInput, responses=MemberOutput)
    def put(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = self.MemberSetInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = get_user_model().objects.filter(
            username=data.validated_data["username"], is_active=True
        ).first()
        if user is None:
            raise ValidationError({"username": ["no active user with this username"]})
        membership = membership_set(project=project, user=user, role=data.validated_data["role"],
                                    actor=request.user)
        return Response(MemberOutput(membership).data)


class MemberRemove(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, project_id: int, user_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        user = get_user_model().objects.filter(pk=user_id).first()
        if user is not None:
            member_remove(project=project, user=user, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


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
            "id", "project", "original_name", "skip_invalid", "status", "attempts", "progress",
            "error", "report", "created_at", "started_at", "finished_at",
        ]


class ImportListCreate(APIView):
    parser_classes = [MultiPartParser]

    class ImportUploadInput(serializers.Serializer):
        file = serializers.FileField()
        skip_invalid = serializers.BooleanField(default=False)

    @extend_schema(responses=ImportOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        return Response(ImportOutput(project.imports.order_by("-id")[:100], many=True).data)

    @extend_schema(request=ImportUploadInput, responses={202: ImportOutput})
    def post(self, request: Request, project_id: int) -> Response:
        """Upload a JSONL, CSV or Parquet file (optionally gzipped); a task on the
        default queue imports it. Poll GET /api/imports/{id} for status and report."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = self.ImportUploadInput(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        name = Path(upload.name or "").name
        if not name.lower().removesuffix(".gz").endswith(IMPORT_SUFFIXES):
            raise ValidationError({"file": ["use a .jsonl, .csv or .parquet file (optionally .gz)"]})
        if unstorable_at(name) is not None:
            raise ValidationError({"file": ["the file name holds a character that cannot be stored"]})
        if upload.size > settings.IMPORT_MAX_UPLOAD_BYTES:
            raise ValidationError(
                {"file": [f"the file is {upload.size} bytes; the limit is "
                          f"{settings.IMPORT_MAX_UPLOAD_BYTES}"]}
            )
        # Stored under a generated name outside any served path; the user's name is only
        # kept as a label (and for the format), never used as a path.
        settings.UPLOAD_ROOT.mkdir(parents=True, exist_ok=True)
        path = settings.UPLOAD_ROOT / f"{uuid.uuid4().hex}.upload"
        try:
            with open(path, "wb") as fh:
                for part in upload.chunks():
                    fh.write(part)
            with transaction.atomic():
                job = ImportJob.objects.create(
                    project=project, created_by=request.user, file_path=str(path),
                    original_name=name[:255], skip_invalid=data.validated_data["skip_invalid"],
                )
                run_enqueue(job)
        except BaseException:
            # No job holds the file (a full disk, a failed insert): nothing else would
            # ever delete it. Once a job exists, its task deletes it when the job ends.
            path.unlink(missing_ok=True)
            raise
        return Response(ImportOutput(job).data, status=status.HTTP_202_ACCEPTED)


class ImportDetail(APIView):
    @extend_schema(responses=ImportOutput)
    def get(self, request: Request, import_id: int) -> Response:
        return Response(ImportOutput(access.import_job_for(request.user, import_id)).data)


class InviteCreate(APIView):
    class InviteInput(StrictJSONInput, serializers.Serializer):
        role = serializers.ChoiceField(choices=Role.choices)

    @extend_schema(
        request=InviteInput,
        responses={201: inline_serializer("InviteOutput", {
            "url": serializers.CharField(), "role": serializers.CharField(),
            "expires_at": serializers.DateTimeField(),
        })},
    )
    def post(self, request: Request, project_id: int) -> Response:
        """A one-time sign-up link for one role in this project (admins only)."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = self.InviteInput(data=request.data)
        data.is_valid(raise_exception=True)
        invite, token = invite_create(
            project=project, role=data.validated_data["role"], created_by=request.user
        )
        url = request.build_absolute_uri(reverse("invite-accept", args=[token]))
        return Response(
            {"url": url, "role": invite.role, "expires_at": invite.expires_at},
            status=status.HTTP_201_CREATED,
        )


class UserCreate(APIView):
    """Staff create accounts directly (there is no open sign-up)."""

    permission_classes = [IsAdminUser]

    class UserCreateInput(StrictJSONInput, serializers.Serializer):
        # The one username rule (accounts.usernames), which user_create applies too; Django's
        # regex stays listed so the schema states the characters allowed.
        username = serializers.CharField(max_length=150, validators=[UnicodeUsernameValidator(),
                                                                     validate_username])
        password = serializers.CharField(write_only=True)

    @extend_schema(request=UserCreateInput, responses={201: inline_serializer("UserOutput", {
        "id": serializers.IntegerField(), "username": serializers.CharField()})})
    def post(self, request: Request) -> Response:
        data = self.UserCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_create(**data.validated_data)
        return Response({"id": user.pk, "username": user.username}, status=201)
