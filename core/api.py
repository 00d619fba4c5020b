"""The API's edge: one error shape ({"detail": str, "code": str, ...fields}), a schema
that documents the errors every operation can answer with, and input serializers that
take JSON types as the schema states them. Clients (and the fuzzer,
tests/integration/test_api_fuzz.py) can rely on both."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.validators import UniqueValidator
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response({"detail": str(exc), "code": exc.code}, status=exc.http_status)
    if isinstance(exc, ValidationError) and isinstance(exc.detail, dict) and _only_unique(exc.get_codes()):
        # A value another row already has (a project's slug): the request is well formed
        # and conflicts with what is stored, so 409 as for the domain's other conflicts.
        first = next(str(message) for messages in exc.detail.values() for message in messages)
        return Response({"detail": first, "code": "unique", **exc.detail}, status=409)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "code" not in response.data:
        # DRF's own refusals name their kind too (not_authenticated, authentication_failed,
        # permission_denied, not_found, throttled...), so clients can tell them apart.
        codes = exc.get_codes() if hasattr(exc, "get_codes") else None
        if isinstance(codes, str) and "detail" in response.data:
            response.data["code"] = codes
    return response


def _only_unique(codes: object) -> bool:
    flat: list[object] = []
    stack = [codes]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        else:
            flat.append(value)
    return bool(flat) and all(code == "unique" for code in flat)


def has_unique_fields(serializer: object) -> bool:
    """Whether a request serializer checks a value against other rows (a 409 when taken)."""
    if isinstance(serializer, type):
        serializer = serializer()
    if not isinstance(serializer, serializers.Serializer):
        return False
    return any(isinstance(validator, UniqueValidator)
               for field in serializer.fields.values() for validator in field.validators)


class ApiErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(required=False, help_text="Set for the domain's own rules.")


# A character that is white space neither to Python's str.strip() (which DRF's CharField
# applies before its "may not be blank" check: it strips \x1c-\x1f and \x85 too) nor to
# ECMAScript's \s (JSON Schema's regexes, which count \ufeff as white space).
NOT_BLANK = r"[^\s\u001c-\u001f\u0085\ufeff]"

# A 400 is either a rule of the domain ({detail, code}) or the serializer's per-field
# messages ({"field": ["message", ...], "non_field_errors": [...]}).
VALIDATION_ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
    "additionalProperties": {},
    "description": "{detail, code} for a broken rule, or {field: [messages]} per invalid field.",
}


class ErrorDocumentingAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses DRF really sends: 400 for
    input (body or query), 403 for no or bad credentials (SessionAuthentication comes
    first, so DRF answers 403 rather than 401) or a role too low, 404 for an id outside the
    caller's projects, 409 for a value that must be unique and is taken, 414 for a query
    string too long for the WSGI server. A view's own
    @extend_schema entry for a code wins, except 400: it always has the shape above, since
    any serializer can answer with field messages besides the view's {detail, code}."""

    def _map_serializer_field(self, field: serializers.Field, direction: str,
                              bypass_extensions: bool = False) -> dict[str, Any]:
        """A string DRF trims and refuses when blank says so: minLength 1 alone would let
        "\x1d" through the schema, which DRF strips to "" and answers with a 400."""
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        own_pattern = any(isinstance(validator, RegexValidator) for validator in field.validators)
        if (direction == "request" and isinstance(field, serializers.CharField) and field.trim_whitespace
                and not field.allow_blank and schema.get("type") == "string" and not own_pattern):
            schema["pattern"] = NOT_BLANK
        return schema

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction=direction)
        errors: dict[str, Any] = {}
        if self.method != "DELETE":
            errors["400"] = OpenApiResponse(VALIDATION_ERROR, description="Invalid input.")
        if self.get_auth() and {} not in self.get_auth():
            errors["403"] = OpenApiResponse(ApiErrorSerializer, description=(
                "Not authenticated, or the caller's role may not do this."))
        if "{" in self.path:
            errors["404"] = OpenApiResponse(ApiErrorSerializer, description=(
                "No such object, or it belongs to a project the caller is not in."))
        if self.method == "GET" and any(p["in"] == "query" for p in self._get_parameters()):
            # Answered by gunicorn, before Django: its page is HTML, so no JSON body here.
            errors["414"] = OpenApiResponse(description=(
                "The request line is longer than the server takes (gunicorn: 4094 bytes)."))
        if self.method in ("POST", "PUT", "PATCH") and has_unique_fields(self.get_request_serializer()):
            errors["409"] = OpenApiResponse(ApiErrorSerializer, description=(
                "A value another row already has, such as a slug; the field's messages come with it."))
        for code, response in errors.items():
            if code not in responses or code == "400":
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses


def json_type_problem(field: serializers.Field, value: object) -> str | None:
    """Why `value` (parsed JSON) is not of the JSON type the schema gives `field`, or None.
    DRF coerces: a CharField takes 5 as "5", an IntegerField takes "5", a BooleanField
    takes "yes" and 1. Null and types DRF has no stricter reading for pass through."""
    if value is None:
        return None
    if isinstance(field, serializers.ChoiceField):
        strings = all(isinstance(choice, str) for choice in field.choices)
        return "must be a string" if strings and not isinstance(value, str) else None
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(field, serializers.IntegerField):
        # JSON Schema counts 2.0 as an integer, and so does DRF.
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if whole and not isinstance(value, bool) else "must be a whole number"
    if isinstance(field, serializers.FloatField | serializers.DecimalField):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "must be a number"
    if isinstance(field, serializers.CharField) and isinstance(value, str):
        # The schema's pattern for a string that may not be blank (see NOT_BLANK); DRF's own
        # check misses a value of white space and \ufeff, which the schema refuses.
        refused = field.trim_whitespace and not field.allow_blank and not re.search(NOT_BLANK, value)
        return "may not be blank" if refused else None
    if isinstance(field, serializers.CharField | serializers.DateField | serializers.DateTimeField):
        return None if isinstance(value, str) else "must be a string"
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "must be a list"
        return next((f"item {n}: {problem}" for n, item in enumerate(value)
                     if (problem := json_type_problem(field.child, item))), None)
    if isinstance(field, serializers.DictField):
        if not isinstance(value, dict):
            return "must be an object"
        # Stored as jsonb, which has no NUL character: PostgreSQL would refuse it with a 500.
        return "must not contain NUL characters" if _has_nul(value) else None
    return None


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def query_text(request: Any, name: str, default: str = "") -> str:
    """A free-text query parameter; one with a NUL character is a 400 (PostgreSQL cannot
    compare text with NUL in it, so filtering on it was a 500)."""
    value = request.query_params.get(name, default)
    if "\x00" in value:
        raise ValidationError({name: ["must not contain NUL characters"]})
    return value


# Mixin for every JSON input serializer: a key the serializer does not define is a 400
# naming it (DRF drops unknown keys silently, so a client sending `base_url` or a typo
# would believe it had been heard), and a JSON value of the wrong type is a 400 naming
# the field, before DRF's own (coercing) validation. Form input (uploads) is left alone:
# there every value is a string. (A comment, not a docstring: drf-spectacular would show
# a mixin's docstring as the description of every serializer that has none of its own.)
class StrictJSONInput:

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping) and not hasattr(data, "getlist"):
            known = ", ".join(self.fields)
            errors = {name: [f"unknown field; the fields are {known}"]
                      for name in sorted(set(data) - set(self.fields))}
            errors |= {
                name: [problem] for name, field in self.fields.items()
                if not field.read_only and name in data
                and (problem := json_type_problem(field, data[name]))
            }
            if errors:
                raise ValidationError(errors)
        return super().to_internal_value(data)


def closed_request_bodies(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: a JSON request body allows only the
    properties it lists (StrictJSONInput answers 400 for any other), so the schema says
    so and clients and fuzzers see the same contract."""
    schemas = result.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        if name.endswith("Request") and schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return result


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
