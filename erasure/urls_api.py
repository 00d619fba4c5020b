from django.urls import path

from erasure import api

urlpatterns = [
    path("users/<int:user_id>/erasure", api.UserErasure.as_view(), name="user-erasure"),
    path("prompts/<int:prompt_id>/erasure", api.PromptErasure.as_view(), name="prompt-erasure"),
    path("datasets/<int:snapshot_id>/rebuild", api.SnapshotRebuild.as_view(), name="snapshot-rebuild"),
    path("erasures", api.ErasureLog.as_view(), name="erasure-log"),
]
