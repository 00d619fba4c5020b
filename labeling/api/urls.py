from django.urls import path

from guidelines import api as guideline_api
from labeling.api import projects as api
from labeling.api import prompts as prompts_api
from labeling.api import quality as api_quality
from labeling.api import workspace as api_workspace

urlpatterns = [
    path("projects/", api.ProjectListCreate.as_view(), name="project-list"),
    path("projects/<int:project_id>/", api.ProjectDetail.as_view(), name="project-detail"),
    path("projects/<int:project_id>/members/", api.MemberListSet.as_view(), name="member-list"),
    path("projects/<int:project_id>/members/<int:user_id>/", api.MemberRemove.as_view(),
         name="member-remove"),
    path("projects/<int:project_id>/prompts/", prompts_api.PromptList.as_view(), name="prompt-list"),
    path("projects/<int:project_id>/candidates/", prompts_api.CandidateList.as_view(),
         name="candidate-list"),
    path("projects/<int:project_id>/imports", prompts_api.ImportListCreate.as_view(), name="import-list"),
    path("projects/<int:project_id>/invites", api.InviteCreate.as_view(), name="invite-create"),
    path("invites/<int:invite_id>/revoke", api.InviteRevoke.as_view(), name="invite-revoke"),
    path("projects/<int:project_id>/agreement", api_quality.ProjectAgreement.as_view(),
         name="project-agreement"),
    path("projects/<int:project_id>/annotators", api_quality.ProjectAnnotators.as_view(),
         name="project-annotators"),
    path("projects/<int:project_id>/models", api_quality.ProjectModels.as_view(),
         name="project-models"),
    path("items/<int:item_id>/agreement", api_quality.ItemAgreement.as_view(),
         name="item-agreement"),
    path("prompts/<int:prompt_id>/", prompts_api.PromptDetail.as_view(), name="prompt-detail"),
    path("imports/<int:import_id>", prompts_api.ImportDetail.as_view(), name="import-detail"),
    path("imports/<int:import_id>/import", prompts_api.ImportAfterDryRun.as_view(),
         name="import-after-dry-run"),
    path("users/", api.UserCreate.as_view(), name="user-create"),
    path("projects/<int:project_id>/next", api_workspace.NextItem.as_view(), name="next-item"),
    path("assignments/<int:assignment_id>/ranking", api_workspace.RankingCreate.as_view(),
         name="ranking-create"),
    path("assignments/<int:assignment_id>/demonstration",
         api_workspace.DemonstrationCreate.as_view(), name="demonstration-create"),
    path("projects/<int:project_id>/guideline", guideline_api.ProjectGuideline.as_view(),
         name="project-guideline"),
    path("projects/<int:project_id>/guideline/acknowledge",
         guideline_api.ProjectGuidelineAcknowledge.as_view(), name="project-guideline-ack"),
    path("assignments/<int:assignment_id>/revision", api_workspace.RankingRevise.as_view(),
         name="assignment-revision"),
    path("assignments/<int:assignment_id>/skip", api_workspace.AssignmentSkip.as_view(),
         name="assignment-skip"),
]
