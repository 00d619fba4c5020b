"""The erasure log: proof of what was erased and when, holding no erased data.

A row keeps a keyed hash (erasure.services.erasure_hash) of what was erased: the
username and e-mail of an account, the content hash of a prompt. Whoever is asked
"was X erased?" hashes X again and looks it up; the row alone gives nothing back.
Rows are append-only, like the audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ErasureRecord(models.Model):
    class Kind(models.TextChoices):
        USER = "user"
        PROMPT = "prompt"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    subject_hashes = models.JSONField(
        help_text="Keyed hashes of what was erased (username, e-mail; a prompt's content hash).")
    subject_id = models.PositiveBigIntegerField(
        help_text="The account's id (kept, now the pseudonym's) or the deleted prompt's id.")
    pseudonym = models.CharField(max_length=150, blank=True,
                                 help_text="The username the account now has.")
    project = models.ForeignKey("labeling.Project", null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="+")
    options = models.JSONField(default=dict, blank=True, help_text="What the admin chose.")
    counts = models.JSONField(default=dict, blank=True, help_text="Rows and files removed, by kind.")
    snapshots = models.JSONField(default=list, blank=True,
                                 help_text="Snapshots marked contains_erased (their files deleted).")
    model_versions = models.JSONField(default=list, blank=True,
                                      help_text="Model versions flagged as trained on erased data.")
    erased_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"erasure {self.pk} ({self.kind} {self.subject_id})"
