"""REST API of the labeling app: one view per operation, input/output serializers nested.

Every view fetches through core.access, so querysets are scoped to the caller's
projects: objects elsewhere answer 404, actions beyond the caller's role answer 403.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db import transaction
from django.db.models import ProtectedError
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.usernames import validate_username
from core import access
from core.api import ApiErrorSerializer, StrictJSONInput, StrictLimitOffsetPagination
from core.errors import DomainError
from guidelines.models import Guideline
from labeling import axes
from labeling.models import Invite, Membership, Project, Role
from labeling.services.members import (
    invite_create,
    invite_revoke,
    member_add,
    member_remove,
    user_create,
)
from labeling.services.projects import project_create, project_update

AXIS_SCHEMA = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$"},
        "name": {"type": "string", "maxLength": 100},
        "kind": {"type": "string", "enum": list(axes.KINDS),
                 "description": "ranking: order the answers (ties allowed); rating: 0..4 each."},
        "purpose": {"type": "string", "enum": list(axes.PURPOSES),
                    "description": "harmlessness: the safety axis (a safety bin per answer is "
                                   "asked, and RL may use its reward model as the safety RM)."},
        "required": {"type": "boolean", "description": "An item is accepted when every "
                                                       "required axis is."},
        "description": {"type": "string", "maxLength": 2000},
        "anchors": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 5,
                    "description": "Rating axes: what 0, 1, 2, 3 and 4 mean (exactly five); "
                                   "ranking axes: none."},
    },
    "required": ["key"],
    "additionalProperties": False,
}


@extend_schema_field({"type": "array", "items": AXIS_SCHEMA})
class AxesOutputField(serializers.Field):
    def to_representation(self, value: list) -> list[dict]:
        return [axis.as_dict() for axis in axes.axes_from_config(value)]


@extend_schema_field({"oneOf": [
    {"type": "string", "enum": list(axes.PRESETS), "description": "A preset."},
    {"type": "array", "items": AXIS_SCHEMA, "minItems": 1, "maxItems": axes.MAX_AXES},
]})
class AxesInputField(serializers.JSONField):
    """What answers are judged on: a preset name or a list of axes (labeling/axes.py).
    Fixed in keys and kinds once the project has rankings."""

    def to_internal_value(self, data: object) -> object:
        try:
            return axes.axes_clean(super().to_internal_value(data))
        except axes.AxisError as exc:
            raise ValidationError(str(exc)) from None


class ProjectOutput(serializers.ModelSerializer):
    axes = AxesOutputField(read_only=True, help_text="What answers are judged on, in order "
                                                     "(the first is the primary axis).")

    class Meta:
        model = Project
        fields = [
            "id", "name", "slug", "description", "k", "overlap", "agreement_threshold", "mode",
            "allow_ties", "gold_rate", "assignment_strategy", "generation_settings", "status",
            "demonstrations", "demonstrations_per_prompt", "mix_demonstrations",
            "lease_minutes", "adaptive_overlap", "guideline", "axes", "created_at",
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
    guideline = serializers.PrimaryKeyRelatedField(
        queryset=Guideline.objects.all(), allow_null=True, required=False,
        help_text="A shared guideline or one this project owns (another project's: 400); "
                  "null: none. Changing it is audited.")
    axes = AxesInputField(required=False)

    class Meta:
        model = Project
        fields = [
            "name", "slug", "description", "k", "overlap", "agreement_threshold", "mode",
            "allow_ties", "gold_rate", "assignment_strategy", "generation_settings", "status",
            "demonstrations", "demonstrations_per_prompt", "mix_demonstrations",
            "lease_minutes", "adaptive_overlap", "guideline", "axes",
        ]
        extra_kwargs = {
            "lease_minutes": {"min_value": 1, "max_value": 24 * 60},
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
        project = project_update(project=project, actor=request.user, **data.validated_data)
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
        try:
            membership = member_add(project=project, username=data.validated_data["username"],
                                    role=data.validated_data["role"], actor=request.user)
        except DomainError as exc:
            raise ValidationError({"username": [str(exc)]}) from None
        return Response(MemberOutput(membership).data)


class MemberRemove(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, project_id: int, user_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        user = get_user_model().objects.filter(pk=user_id).first()
        if user is not None:
            member_remove(project=project, user=user, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InviteStateOutput(serializers.ModelSerializer):
    state = serializers.CharField(help_text="open, used, revoked or expired")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)
    used_by = serializers.CharField(source="used_by.username", default=None, allow_null=True)

    class Meta:
        model = Invite
        fields = ["id", "role", "state", "created_by", "created_at", "expires_at", "used_at",
                  "used_by", "revoked_at"]


class InviteCreate(APIView):
    class InviteInput(StrictJSONInput, serializers.Serializer):
        role = serializers.ChoiceField(choices=Role.choices)

    @extend_schema(responses=InviteStateOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        """The project's invites, newest first, with their state (admins only). The link
        itself is shown once, when it is created: only its hash is stored."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        invites = project.invites.select_related("created_by", "used_by").order_by("-id")[:200]
        return Response(InviteStateOutput(invites, many=True).data)

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


class InviteRevoke(APIView):
    @extend_schema(request=None, responses=InviteStateOutput)
    def post(self, request: Request, invite_id: int) -> Response:
        """The link stops working at once (audited). A used invite answers 400."""
        invite = access.object_for(request.user, Invite, invite_id, min_role=Role.ADMIN, what="invite")
        return Response(InviteStateOutput(invite_revoke(invite=invite, actor=request.user)).data)


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
