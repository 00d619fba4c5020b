"""API of webhooks (project admins): register, list, change and delete hooks, read a
hook's delivery log, redeliver one delivery. The secret is in the create answer only."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import access
from core.api import StrictJSONInput
from labeling.models import Role
from webhooks.models import EventType, Webhook, WebhookAttempt, WebhookDelivery
from webhooks.services import delivery_redeliver, webhook_create, webhook_delete, webhook_update

LOG_LIMIT = 100


def hook_for(user: access.User, hook_id: int) -> Webhook:
    return access.object_for(user, Webhook, hook_id, min_role=Role.ADMIN, what="webhook")


def delivery_for(user: access.User, delivery_id: int) -> WebhookDelivery:
    return access.object_for(user, WebhookDelivery, delivery_id, min_role=Role.ADMIN,
                             what="webhook delivery", project_field="hook__project_id")


class WebhookOutput(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices))

    class Meta:
        model = Webhook
        fields = ["id", "project", "url", "events", "active", "description", "created_at", "updated_at"]


class WebhookCreatedOutput(WebhookOutput):
    secret = serializers.CharField(help_text="Verifies X-Ordinal-Signature. Shown once, in this answer.")

    class Meta(WebhookOutput.Meta):
        fields = [*WebhookOutput.Meta.fields, "secret"]


class AttemptOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "status_code", "latency_ms", "error", "response_excerpt", "created_at"]


class DeliveryOutput(serializers.ModelSerializer):
    event_id = serializers.UUIDField(source="event.event_id")
    event_type = serializers.ChoiceField(source="event.type", choices=EventType.choices)
    log = serializers.SerializerMethodField()

    class Meta:
        model = WebhookDelivery
        fields = ["id", "hook", "event_id", "event_type", "status", "attempts", "next_attempt_at",
                  "last_status_code", "last_latency_ms", "last_error", "created_at", "log"]

    @extend_schema_field(AttemptOutput(many=True))
    def get_log(self, delivery: WebhookDelivery) -> list:
        return AttemptOutput(delivery.log.all()[:20], many=True).data


class WebhookInput(StrictJSONInput, serializers.Serializer):
    url = serializers.CharField(max_length=500, help_text="An http(s) URL on a host in WEBHOOK_ALLOWED_HOSTS.")
    events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices), min_length=1,
                                   max_length=len(EventType.values))
    active = serializers.BooleanField(default=True)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class WebhookListCreate(APIView):
    @extend_schema(responses=WebhookOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        return Response(WebhookOutput(project.webhooks.order_by("id"), many=True).data)

    @extend_schema(request=WebhookInput, responses={201: WebhookCreatedOutput})
    def post(self, request: Request, project_id: int) -> Response:
        """Register a hook; its URL must be on a host the operator allows. The answer
        carries the signing secret, once."""
        project = access.project_for(request.user, project_id, min_role=Role.ADMIN)
        data = WebhookInput(data=request.data)
        data.is_valid(raise_exception=True)
        hook = webhook_create(project=project, actor=request.user, **data.validated_data)
        return Response(WebhookCreatedOutput(hook).data, status=status.HTTP_201_CREATED)


class WebhookDetail(APIView):
    @extend_schema(responses=WebhookOutput)
    def get(self, request: Request, hook_id: int) -> Response:
        return Response(WebhookOutput(hook_for(request.user, hook_id)).data)

    @extend_schema(request=WebhookInput(partial=True), responses=WebhookOutput)
    def patch(self, request: Request, hook_id: int) -> Response:
        hook = hook_for(request.user, hook_id)
        data = WebhookInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        hook = webhook_update(hook=hook, actor=request.user, **data.validated_data)
        return Response(WebhookOutput(hook).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, hook_id: int) -> Response:
        webhook_delete(hook=hook_for(request.user, hook_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveries(APIView):
    @extend_schema(responses=DeliveryOutput(many=True))
    def get(self, request: Request, hook_id: int) -> Response:
        """The hook's latest deliveries (newest first), each with its attempts."""
        hook = hook_for(request.user, hook_id)
        deliveries = hook.deliveries.select_related("event").prefetch_related("log").order_by("-id")[:LOG_LIMIT]
        return Response(DeliveryOutput(deliveries, many=True).data)


class DeliveryRedeliver(APIView):
    @extend_schema(request=None, responses={202: DeliveryOutput})
    def post(self, request: Request, delivery_id: int) -> Response:
        """Send this delivery's event again: the same event id, a fresh set of attempts."""
        delivery = delivery_redeliver(delivery=delivery_for(request.user, delivery_id), actor=request.user)
        return Response(DeliveryOutput(delivery).data, status=status.HTTP_202_ACCEPTED)
