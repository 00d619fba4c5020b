from django.urls import path

from judges import api

urlpatterns = [
    path("projects/<int:project_id>/judges", api.JudgeListCreate.as_view(), name="judge-list"),
    path("judges/<int:judge_id>", api.JudgeDetail.as_view(), name="judge-detail"),
    path("judges/<int:judge_id>/runs", api.JudgeRunListCreate.as_view(), name="judge-run-list"),
    path("judges/<int:judge_id>/rankings", api.JudgeRankingList.as_view(), name="judge-ranking-list"),
    path("judges/<int:judge_id>/figures", api.JudgeFigures.as_view(), name="judge-figures"),
    path("judge-runs/<int:run_id>", api.JudgeRunDetail.as_view(), name="judge-run-detail"),
    path("judge-runs/<int:run_id>/cancel", api.JudgeRunCancel.as_view(), name="judge-run-cancel"),
]
