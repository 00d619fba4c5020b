"""factory_boy factories for the domain models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from core.rendering import render_markdown, render_messages
from labeling.importing.rows import text_hash
from labeling.models import Candidate, Membership, Project, Prompt, Role
from training.engine.prompt_format import prompt_hash

PASSWORD = "a-Long-test-passw0rd"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: ANN001, ANN202, N805
        if create:
            obj.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    project = factory.SubFactory(ProjectFactory)
    role = Role.ANNOTATOR


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    messages = factory.Sequence(lambda n: [{"role": "user", "content": f"Question {n}?"}])
    content_hash = factory.LazyAttribute(lambda o: prompt_hash(o.messages))
    messages_html = factory.LazyAttribute(lambda o: render_messages(o.messages))


class CandidateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Candidate

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Answer {n}.")
    text_html = factory.LazyAttribute(lambda o: str(render_markdown(o.text)))
    origin = Candidate.Origin.IMPORT
    model_name = "model-a"
    dedupe_key = factory.LazyAttribute(lambda o: f"import:{text_hash(o.text)}:0")


def make_items(project: Project, count: int, k: int = 3, model: str = "model-a") -> list:
    """`count` prompts with `k` candidates each, one item per prompt (via the service)."""
    from labeling.models import Item
    from labeling.services.items import items_create_for_prompt

    for _ in range(count):
        prompt = PromptFactory(project=project)
        ids = [CandidateFactory(prompt=prompt, model_name=model).pk for _ in range(k)]
        items_create_for_prompt(project=project, prompt_id=prompt.pk, candidate_ids=ids)
    return list(Item.objects.filter(project=project).order_by("id"))
