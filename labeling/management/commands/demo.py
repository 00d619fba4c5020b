"""python manage.py demo: the whole product on one machine, no servers to install.

Migrates the SQLite database, loads the demo project and accounts, then runs the web
server, a Celery worker (kombu's filesystem broker under var/broker) and Celery beat
until Ctrl-C. `--setup-only` stops after loading the data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from config.celery import ensure_broker_dirs
from labeling.demo import demo_setup


class Command(BaseCommand):
    help = "Set up the demo project and run web server, worker and beat together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", 8000)))
        parser.add_argument("--setup-only", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        for folder in (settings.VAR_DIR, settings.ARTIFACT_ROOT, settings.UPLOAD_ROOT):
            folder.mkdir(parents=True, exist_ok=True)
        ensure_broker_dirs()
        call_command("migrate", verbosity=0)
        project, report, passwords = demo_setup()
        self.stdout.write(
            f"demo project {project.slug!r}: {report.prompts_added} prompts added "
            f"({report.prompts_skipped} already there), {project.items.count()} items"
        )
        if options["setup_only"]:
            self._print_logins(passwords, options["port"])
            return
        self._serve(options["port"], passwords)

    def _print_logins(self, passwords: dict[str, str], port: int) -> None:
        self.stdout.write(self.style.SUCCESS(f"\nOrdinal is at http://127.0.0.1:{port}/"))
        self.stdout.write(f"console: http://127.0.0.1:{port}/console/   API docs: "
                          f"http://127.0.0.1:{port}/api/docs/")
        self.stdout.write(f"rank: http://127.0.0.1:{port}/annotate/demo/   write answers: "
                          f"http://127.0.0.1:{port}/annotate/demo-write/   two axes (helpful, "
                          f"harmless): http://127.0.0.1:{port}/annotate/demo-hh/")
        self.stdout.write(self.loop_hint(port))
        for username, password in passwords.items():
            self.stdout.write(f"  {username:<12} {password}")
        self.stdout.write("(passwords are new each time `make demo` starts)\n")

    @staticmethod
    def loop_hint(port: int) -> str:
        """Where an admin starts the whole loop in the console (README: "The product, by role")."""
        from labeling.demo import SIMULATED_SLUG
        from labeling.models import Project

        site = f"http://127.0.0.1:{port}"
        simulated = Project.objects.filter(slug=SIMULATED_SLUG).values_list("pk", flat=True).first()
        lines = [f"run the loop as admin: {site}/console/projects/new  (create a project, attach a guideline, "
                 "upload prompts, generate, rank, snapshot, train, promote)"]
        if simulated:
            lines.append(f"  or with labels already there: {site}/console/projects/{simulated}/runs  "
                         "(build a pairs snapshot, train a reward model, compare and promote it on Reward models)")
        return "\n".join(lines)

    def _serve(self, port: int, passwords: dict[str, str]) -> None:
        python = sys.executable
        env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "1")}
        processes = [
            subprocess.Popen([python, "-m", "celery", "-A", "config", "worker", "-Q",
                              "default,generate,train", "--concurrency", "1", "-l", "INFO"],
                             env=env),
            subprocess.Popen([python, "-m", "celery", "-A", "config", "beat", "-l", "INFO"],
                             env=env),
            subprocess.Popen([python, "manage.py", "runserver", f"127.0.0.1:{port}",
                              "--noreload"], env=env),
        ]
        time.sleep(3)
        self._print_logins(passwords, port)
        try:
            while all(p.poll() is None for p in processes):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
