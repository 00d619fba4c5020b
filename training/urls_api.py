from django.urls import path

from training import api

urlpatterns = [
    path("projects/<int:project_id>/generation-runs", api.GenerationRunListCreate.as_view(),
         name="generation-run-list"),
    path("generation-runs/<int:run_id>", api.GenerationRunDetail.as_view(),
         name="generation-run-detail"),
    path("generation-runs/<int:run_id>/cancel", api.GenerationRunCancel.as_view(),
         name="generation-run-cancel"),
    path("projects/<int:project_id>/datasets", api.SnapshotListCreate.as_view(),
         name="snapshot-list"),
    path("datasets/<int:snapshot_id>", api.SnapshotDetail.as_view(), name="snapshot-detail"),
    path("datasets/<int:snapshot_id>/files/<str:name>", api.SnapshotFile.as_view(),
         name="snapshot-file"),
]
