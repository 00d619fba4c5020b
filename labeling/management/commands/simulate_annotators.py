"""python manage.py simulate_annotators --project SLUG: demo/test projects only."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Membership, Project, Role
from labeling.services.members import membership_set
from labeling.simulate import SimulatedAnnotator, simulate_annotator


class Command(BaseCommand):
    help = ("Rank open items as the project's annotator accounts, with settable noise, "
            "tie rate, position bias and speed. Refuses unless the project is a demo.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument("--noise", type=float, default=0.5)
        parser.add_argument("--tie-rate", type=float, default=0.1)
        parser.add_argument("--position-bias", type=float, default=0.0)
        parser.add_argument("--seconds", type=float, default=30.0, help="mean time per item")
        parser.add_argument("--max-items", type=int, default=None, help="per annotator")
        parser.add_argument("--create", type=int, default=0,
                            help="first create this many simulated annotator accounts")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project {options['project']!r}")
        if not project.is_demo:
            raise CommandError(f"project {project.slug!r} is not a demo or test project; "
                               "refusing to add simulated labels to it")
        for n in range(options["create"]):
            user, _ = get_user_model().objects.get_or_create(username=f"sim-{project.slug}-{n + 1}")
            membership_set(project=project, user=user, role=Role.ANNOTATOR)
        users = [m.user for m in Membership.objects.filter(project=project, role=Role.ANNOTATOR)
                 .select_related("user").order_by("user__username")]
        if not users:
            raise CommandError("the project has no annotator accounts; pass --create N")
        profile = SimulatedAnnotator(noise=options["noise"], tie_rate=options["tie_rate"],
                                     position_bias=options["position_bias"],
                                     mean_seconds=options["seconds"])
        # Round-robin, a few items at a time, so every item gets several different people.
        totals = {user.username: 0 for user in users}
        while True:
            progressed = 0
            for index, user in enumerate(users):
                done = simulate_annotator(user=user, project=project, profile=profile,
                                          seed=options["seed"] * 1000 + index * 97 + totals[user.username],
                                          max_items=1)
                totals[user.username] += done
                progressed += done
            if not progressed or (options["max_items"] and
                                  min(totals.values()) >= options["max_items"]):
                break
        for username, count in totals.items():
            self.stdout.write(f"{username}: {count} rankings")
        counts = {s: project.items.filter(status=s).count() for s in
                  ("open", "accepted", "disputed")}
        self.stdout.write(f"items: {counts}")
