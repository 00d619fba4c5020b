"""Python client of Ordinal's REST API (httpx only; `datasets` optional, for Snapshot.load).

    from ordinal_client import Ordinal
    ordinal = Ordinal("https://ordinal.example.com", token="...")
    project = ordinal.project("my-project")
"""

from ordinal_client.client import Ordinal
from ordinal_client.errors import (
    ApiError,
    AuthenticationError,
    ChecksumMismatch,
    ConfirmationRequired,
    Conflict,
    NotFound,
    OrdinalError,
    PermissionDenied,
    RateLimited,
    RunFailed,
    ServerError,
    SignatureError,
    ValidationError,
    WaitTimeout,
)
from ordinal_client.resources import (
    Agreement,
    AnnotatorQuality,
    GenerationRun,
    HubPush,
    ImportJob,
    ModelVersion,
    Project,
    Snapshot,
    TrainingRun,
    Webhook,
)
from ordinal_client.webhooks import verify_signature

__version__ = "0.1.0"
__all__ = [
    "Agreement", "AnnotatorQuality", "ApiError", "AuthenticationError", "ChecksumMismatch", "ConfirmationRequired",
    "Conflict", "GenerationRun", "HubPush", "ImportJob", "ModelVersion", "NotFound", "Ordinal", "OrdinalError",
    "PermissionDenied", "Project", "RateLimited", "RunFailed", "ServerError", "SignatureError", "Snapshot",
    "TrainingRun", "ValidationError", "WaitTimeout", "Webhook", "verify_signature",
]
