"""URL map: pages, the console, the API and its schema, health probes."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.defaults import page_not_found
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import api as accounts_api
from accounts import oidc
from accounts import views as accounts_views
from core import health, pages
from erasure import console as erasure_console
from guidelines import views as guideline_views
from judges import console as judges_console
from labeling.web import annotate, console, feedback, home, project_admin, review
from training import console as training_console
from training import console_models, launcher
from webhooks import console as webhooks_console

api = [
    path("auth/token", accounts_api.TokenObtain.as_view(), name="api-token"),
    path("auth/tokens", accounts_api.TokenList.as_view(), name="api-token-list"),
    path("auth/tokens/<int:token_id>", accounts_api.TokenRevoke.as_view(), name="api-token-revoke"),
    path("", include("labeling.api.urls")),
    path("", include("training.urls_api")),
    path("", include("webhooks.urls_api")),
    path("", include("judges.urls_api")),
    path("", include("erasure.urls_api")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its initializer as a file: no inline script for the CSP.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

console_urls = [
    path("", console.index, name="index"),
    path("projects/<int:project_id>/", console.project_detail, name="project"),
    path("projects/<int:project_id>/stale", console.stale_items, name="stale"),
    path("projects/<int:project_id>/disputes", review.disputes, name="disputes"),
    path("projects/<int:project_id>/annotators", review.annotators, name="annotators"),
    path("projects/<int:project_id>/annotators/<int:user_id>", review.annotator_detail,
         name="annotator"),
    path("projects/<int:project_id>/annotators/<int:user_id>/action",
         review.annotator_action, name="annotator-action"),
    path("projects/<int:project_id>/invite", review.invite, name="invite"),
    path("projects/<int:project_id>/models", review.models_page, name="models"),
    path("projects/new", project_admin.project_new, name="project-new"),
    path("projects/<int:project_id>/settings", project_admin.project_settings, name="settings"),
    path("projects/<int:project_id>/upload", project_admin.upload, name="upload"),
    path("projects/<int:project_id>/upload/<int:job_id>", project_admin.upload_job, name="upload-job"),
    path("projects/<int:project_id>/upload/<int:job_id>/status", project_admin.upload_status,
         name="upload-status"),
    path("projects/<int:project_id>/members", project_admin.members_page, name="members"),
    path("projects/<int:project_id>/runs", training_console.runs, name="runs"),
    path("projects/<int:project_id>/runs/status", launcher.runs_status, name="runs-status"),
    path("projects/<int:project_id>/runs/launch/<slug:what>", launcher.launch, name="launch"),
    path("projects/<int:project_id>/reward-models", console_models.reward_models, name="reward-models"),
    path("projects/<int:project_id>/schedule", training_console.schedule_page, name="schedule"),
    path("projects/<int:project_id>/webhooks", webhooks_console.webhooks_page, name="webhooks"),
    path("projects/<int:project_id>/judges", judges_console.judges_page, name="judges"),
    path("webhooks/<int:hook_id>", webhooks_console.webhook_page, name="webhook"),
    path("projects/<int:project_id>/erasure", erasure_console.project_erasure, name="erasure"),
    path("prompts/<int:prompt_id>/erase", erasure_console.erase_prompt, name="erase-prompt"),
    path("accounts/erasure", erasure_console.accounts_erasure, name="erasure-accounts"),
    path("items/<int:item_id>", review.adjudicate, name="adjudicate"),
    path("audit", review.audit_log, name="audit"),
    path("guidelines/", guideline_views.guideline_list, name="guidelines"),
    path("guidelines/<int:guideline_id>/", guideline_views.guideline_detail, name="guideline"),
    path("guidelines/<int:guideline_id>/drafts", guideline_views.draft_new,
         name="guideline-draft-new"),
    path("guidelines/<int:guideline_id>/diff", guideline_views.versions_diff,
         name="guideline-diff"),
    path("guidelines/versions/<int:version_id>/", guideline_views.version_detail,
         name="guideline-version"),
    path("guidelines/versions/<int:version_id>/edit", guideline_views.draft_edit,
         name="guideline-edit"),
    path("guidelines/preview", guideline_views.preview, name="guideline-preview"),
]

urlpatterns = [
    path("", home.home, name="home"),
    path("accounts/login/", accounts_views.LoginView.as_view(), name="login"),
    path("accounts/oidc/authenticate/", oidc.OidcStart.as_view(), name="oidc_authentication_init"),
    path("accounts/oidc/callback/", oidc.OidcCallback.as_view(), name="oidc_authentication_callback"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/invite/<str:token>/", home.invite_accept_view, name="invite-accept"),
    path("accounts/tokens/", accounts_views.tokens_page, name="account-tokens"),
    path("accounts/tokens/<int:token_id>/revoke", accounts_views.token_revoke_view,
         name="account-token-revoke"),
    path("annotate/<slug:slug>/", annotate.workspace, name="annotate"),
    path("annotate/<slug:slug>/prefetch", annotate.prefetch, name="annotate-prefetch"),
    path("annotate/<slug:slug>/recent", annotate.recent, name="annotate-recent"),
    path("annotate/<slug:slug>/revise/<int:assignment_id>", annotate.revise, name="annotate-revise"),
    path("annotate/<slug:slug>/preview", annotate.preview, name="annotate-preview"),
    path("annotate/<slug:slug>/guideline", guideline_views.acknowledge_page,
         name="annotate-guideline"),
    path("annotate/<slug:slug>/feedback", feedback.my_feedback, name="annotate-feedback"),
    path("console/", include((console_urls, "console"))),
    path("api/", include(api)),
    path("admin/", admin.site.urls),
    path("favicon.ico", pages.favicon, name="favicon"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A URL that matches no route: JSON in the API's error shape under /api/ (a client
    parses every answer there), the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "No such endpoint.", "code": "not_found"}, status=404)
    return page_not_found(request, exception)


handler404 = not_found
handler403 = pages.handler403
