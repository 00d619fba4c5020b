"""The demo project: our own small data set and the demo accounts.

`demo_setup()` is idempotent: it creates the project and accounts when missing,
imports the shipped prompts (a re-import adds nothing) and sets fresh passwords,
which it returns so `manage.py demo` can print them.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from guidelines.models import Guideline
from guidelines.services import guidelines_sync
from labeling.importing import ImportReport, prompts_import
from labeling.models import Project, Role
from labeling.services import membership_set, project_create

DEMO_PROMPTS = Path(__file__).with_name("prompts.jsonl")
DEMO_SLUG = "demo"
DEMO_USERS = [
    ("admin", Role.ADMIN),
    ("reviewer", Role.REVIEWER),
    ("annotator1", Role.ANNOTATOR),
    ("annotator2", Role.ANNOTATOR),
    ("annotator3", Role.ANNOTATOR),
]


@transaction.atomic
def demo_accounts(project: Project) -> dict[str, str]:
    user_model = get_user_model()
    passwords = {}
    for username, role in DEMO_USERS:
        user, _ = user_model.objects.get_or_create(username=username)
        password = f"{username}-{secrets.token_hex(4)}"
        user.set_password(password)
        user.is_staff = user.is_superuser = username == "admin"
        user.save()
        membership_set(project=project, user=user, role=role)
        passwords[username] = password
    return passwords


def demo_setup() -> tuple[Project, ImportReport, dict[str, str]]:
    guidelines_sync()
    project = Project.objects.filter(slug=DEMO_SLUG).first() or project_create(
        name="Demo: helpful answers", slug=DEMO_SLUG, is_demo=True, k=4, overlap=3,
        description="Rank answers to everyday questions by helpfulness, honesty and care.",
        guideline=Guideline.objects.get(slug="default"),
    )
    report = prompts_import(project=project, path=DEMO_PROMPTS, source="demo")
    return project, report, demo_accounts(project)
