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
from labeling.services.members import membership_set
from labeling.services.projects import project_create

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


SIMULATED_SLUG = "demo-simulated"


def demo_simulated_project() -> Project:
    """A second copy of the demo prompts, already ranked by three simulated annotators,
    so the console has agreement, disputes and quality figures to show from the start."""
    from labeling.simulate import SimulatedAnnotator, simulate_annotator

    project = Project.objects.filter(slug=SIMULATED_SLUG).first()
    if project is not None:
        return project
    project = project_create(
        name="Demo: simulated annotators", slug=SIMULATED_SLUG, is_demo=True, k=4, overlap=3,
        description="The demo prompts ranked by simulated annotators (manage.py "
                    "simulate_annotators), one of them careless.",
        guideline=Guideline.objects.get(slug="default"),
    )
    prompts_import(project=project, path=DEMO_PROMPTS, source="demo")
    user_model = get_user_model()
    profiles = [SimulatedAnnotator(noise=0.4), SimulatedAnnotator(noise=0.5, tie_rate=0.2),
                SimulatedAnnotator(noise=2.0, position_bias=0.5, mean_seconds=4.0)]
    users = []
    for n in range(len(profiles)):
        user, _ = user_model.objects.get_or_create(username=f"sim-annotator{n + 1}")
        user.set_unusable_password()
        user.save()
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
        users.append(user)
    for _round in range(project.items.count()):
        done = sum(simulate_annotator(user=user, project=project, profile=profile,
                                      seed=n * 1000 + _round, max_items=1)
                   for n, (user, profile) in enumerate(zip(users, profiles, strict=True)))
        if not done:
            break
    return project


WRITE_SLUG = "demo-write"


def demo_write_project() -> Project:
    """Demonstrations only: annotators write the answer they wish the model gave."""
    project = Project.objects.filter(slug=WRITE_SLUG).first() or project_create(
        name="Demo: write answers", slug=WRITE_SLUG, is_demo=True, k=4, overlap=3,
        demonstrations=Project.Demonstrations.ONLY, demonstrations_per_prompt=1,
        description="Write the best answer you can to everyday questions (SFT data).",
        guideline=Guideline.objects.get(slug="default"),
    )
    prompts_import(project=project, path=DEMO_PROMPTS, source="demo")
    return project


AXES_SLUG = "demo-hh"


def demo_axes_project() -> Project:
    """Two axes, Llama 2 style: rank helpfulness and harmlessness separately and mark
    each answer safe or not (labeling/axes.py)."""
    project = Project.objects.filter(slug=AXES_SLUG).first() or project_create(
        name="Demo: helpful and harmless", slug=AXES_SLUG, is_demo=True, k=4, overlap=3,
        axes="helpful_harmless",
        description="Rank the answers twice, for helpfulness and for harmlessness, and mark "
                    "each answer safe or unsafe.",
        guideline=Guideline.objects.get(slug="default"),
    )
    prompts_import(project=project, path=DEMO_PROMPTS, source="demo")
    return project


def demo_setup() -> tuple[Project, ImportReport, dict[str, str]]:
    guidelines_sync()
    project = Project.objects.filter(slug=DEMO_SLUG).first() or project_create(
        name="Demo: helpful answers", slug=DEMO_SLUG, is_demo=True, k=4, overlap=3,
        # Once an item's ranking is accepted, one annotator rewrites its best answer, and
        # that rewrite is ranked against the model's answers in a new item.
        demonstrations=Project.Demonstrations.AFTER, mix_demonstrations=True,
        description="Rank answers to everyday questions by helpfulness, honesty and care.",
        guideline=Guideline.objects.get(slug="default"),
    )
    report = prompts_import(project=project, path=DEMO_PROMPTS, source="demo")
    passwords = demo_accounts(project)
    for extra in (demo_write_project(), demo_axes_project()):
        for username, role in DEMO_USERS:
            membership_set(project=extra, user=get_user_model().objects.get(username=username), role=role)
    simulated = demo_simulated_project()
    for username in ("admin", "reviewer"):
        membership_set(project=simulated, user=get_user_model().objects.get(username=username),
                       role=Role.ADMIN if username == "admin" else Role.REVIEWER)
    from labeling.services.quality import quality_refresh

    quality_refresh(project=simulated)
    return project, report, passwords
