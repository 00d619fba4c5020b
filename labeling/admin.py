"""Django admin: raw data only. Reviewers and admins work in /console/."""

from django.contrib import admin

from labeling import models


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "mode", "k", "overlap", "status"]
    search_fields = ["slug", "name"]


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role"]
    list_filter = ["role"]


@admin.register(models.Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "source", "created_at"]
    list_filter = ["project"]


@admin.register(models.Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "status", "rankings_count", "required_rankings", "is_gold"]
    list_filter = ["status", "project"]


@admin.register(models.ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "original_name", "status", "created_at"]
    # The task reads this file and deletes it when the job ends: only the API sets it.
    readonly_fields = ["file_path"]
