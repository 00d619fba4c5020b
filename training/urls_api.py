from django.urls import path

from training import api, api_hub

urlpatterns = [
    path("projects/<int:project_id>/generation-runs", api.GenerationRunListCreate.as_view(),
         name="generation-run-list"),
    path("projects/<int:project_id>/generation-options", api.GenerationOptions.as_view(),
         name="generation-options"),
    path("generation-runs/<int:run_id>", api.GenerationRunDetail.as_view(),
         name="generation-run-detail"),
    path("generation-runs/<int:run_id>/cancel", api.GenerationRunCancel.as_view(),
         name="generation-run-cancel"),
    path("projects/<int:project_id>/datasets", api.SnapshotListCreate.as_view(),
         name="snapshot-list"),
    path("datasets/<int:snapshot_id>", api.SnapshotDetail.as_view(), name="snapshot-detail"),
    path("datasets/<int:snapshot_id>/files/<str:name>", api.SnapshotFile.as_view(),
         name="snapshot-file"),
    path("datasets/<int:snapshot_id>/hub-push", api_hub.HubPushCreate.as_view(), name="snapshot-hub-push"),
    path("hub-pushes/<int:push_id>", api_hub.HubPushDetail.as_view(), name="hub-push-detail"),
    path("projects/<int:project_id>/training-runs", api.TrainingRunListCreate.as_view(),
         name="training-run-list"),
    path("training-runs/<int:run_id>", api.TrainingRunDetail.as_view(),
         name="training-run-detail"),
    path("training-runs/<int:run_id>/metrics", api.TrainingRunMetrics.as_view(),
         name="training-run-metrics"),
    path("training-runs/<int:run_id>/cancel", api.TrainingRunCancel.as_view(),
         name="training-run-cancel"),
    path("projects/<int:project_id>/model-versions", api.ModelVersionList.as_view(),
         name="model-version-list"),
    path("models/<int:version_id>/promote", api.ModelVersionPromote.as_view(),
         name="model-version-promote"),
]
