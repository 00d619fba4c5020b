"""URL map: pages, the console, the API and its schema, health probes."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from labeling import console, views, views_annotate

api = [
    path("auth/token", obtain_auth_token, name="api-token"),
    path("", include("labeling.urls_api")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

console_urls = [
    path("", console.index, name="index"),
    path("projects/<int:project_id>/", console.project_detail, name="project"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/invite/<str:token>/", views.invite_accept_view, name="invite-accept"),
    path("annotate/<slug:slug>/", views_annotate.workspace, name="annotate"),
    path("annotate/<slug:slug>/prefetch", views_annotate.prefetch, name="annotate-prefetch"),
    path("console/", include((console_urls, "console"))),
    path("api/", include(api)),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
]
