from django.urls import path

from training import api

urlpatterns = [
    path("projects/<int:project_id>/generation-runs", api.GenerationRunListCreate.as_view(),
         name="generation-run-list"),
    path("generation-runs/<int:run_id>", api.GenerationRunDetail.as_view(),
         name="generation-run-detail"),
    path("generation-runs/<int:run_id>/cancel", api.GenerationRunCancel.as_view(),
         name="generation-run-cancel"),
]
