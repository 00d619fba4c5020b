"""Guideline API for annotators and scripts: read the version in force, acknowledge it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from guidelines.services import acknowledge, acknowledgement_needed, guideline_current_version


class GuidelineVersionOutput(serializers.Serializer):
    number = serializers.IntegerField()
    change = serializers.CharField()
    body = serializers.CharField()
    changelog = serializers.CharField()
    published_at = serializers.DateTimeField()
    acknowledgement_needed = serializers.BooleanField()


class ProjectGuideline(APIView):
    @extend_schema(responses=GuidelineVersionOutput)
    def get(self, request: Request, project_id: int) -> Response:
        """The guideline version in force and whether you must acknowledge it."""
        project = access.project_for(request.user, project_id)
        version = guideline_current_version(project=project)
        if version is None:
            raise NotFound("This project has no published guideline.")
        pending = acknowledgement_needed(user=request.user, project=project)
        return Response(GuidelineVersionOutput({
            "number": version.number, "change": version.change, "body": version.body,
            "changelog": version.changelog, "published_at": version.published_at,
            "acknowledgement_needed": pending is not None,
        }).data)


class ProjectGuidelineAcknowledge(APIView):
    @extend_schema(request=None, responses={200: inline_serializer(
        "AcknowledgementOutput", {"acknowledged": serializers.IntegerField()})})
    def post(self, request: Request, project_id: int) -> Response:
        """Acknowledge the version in force (after reading it); unlocks the next item."""
        project = access.project_for(request.user, project_id)
        version = guideline_current_version(project=project)
        if version is None:
            raise NotFound("This project has no published guideline.")
        acknowledge(user=request.user, version=version)
        return Response({"acknowledged": version.number})
