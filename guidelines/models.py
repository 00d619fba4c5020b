"""Guideline documents and their versions. A published version is immutable; every
ranking points at the version in force when its item was claimed."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.safestring import SafeString, mark_safe


class Guideline(models.Model):
    """A guideline document, owned by one project or shared (project is null)."""

    project = models.ForeignKey(
        "labeling.Project", null=True, blank=True, on_delete=models.CASCADE,
        related_name="owned_guidelines",
    )
    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class GuidelineVersion(models.Model):
    class Change(models.TextChoices):
        MAJOR = "major"
        MINOR = "minor"

    guideline = models.ForeignKey(Guideline, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    body = models.TextField()
    body_html = models.TextField(blank=True, default="", help_text="`body` sanitized, rendered when written.")
    changelog = models.TextField(blank=True)
    change = models.CharField(max_length=8, choices=Change.choices, default=Change.MAJOR)
    sha256 = models.CharField(max_length=64)
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["guideline", "number"]
        constraints = [
            models.UniqueConstraint(fields=["guideline", "number"], name="guideline_version_unique"),
        ]

    @property
    def html(self) -> SafeString:
        return mark_safe(self.body_html)  # noqa: S308 - sanitized when written

    @property
    def is_published(self) -> bool:
        return self.published_at is not None

    def __str__(self) -> str:
        return f"{self.guideline.slug} v{self.number}"


class Acknowledgement(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="acknowledgements"
    )
    version = models.ForeignKey(
        GuidelineVersion, on_delete=models.CASCADE, related_name="acknowledgements"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "version"], name="acknowledgement_unique"),
        ]
