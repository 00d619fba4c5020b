"""python manage.py erase_user USERNAME|ID (--remove-text | --keep-text) [--yes]

Without --yes, prints what would be removed and kept and changes nothing."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.audit import audit_origin
from core.errors import DomainError
from erasure.services.users import user_erase, user_erasure_preview


class Command(BaseCommand):
    help = "Erase an account's personal data; its labels stay under a pseudonym."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account", help="username or numeric id")
        text = parser.add_mutually_exclusive_group(required=True)
        text.add_argument("--remove-text", action="store_true",
                          help="empty the rationales, notes and demonstrations they wrote")
        text.add_argument("--keep-text", action="store_true",
                          help="keep them (their username and e-mail are taken out)")
        parser.add_argument("--yes", action="store_true", help="erase (default: only show)")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model().objects
        account = options["account"]
        user = users.filter(username=account).first() or (
            users.filter(pk=int(account)).first() if account.isdigit() else None)
        if user is None:
            raise CommandError(f"no account {account!r}")
        preview = user_erasure_preview(user=user)
        self.stdout.write(f"account {user.pk} becomes {preview.pseudonym}")
        for name, count in preview.counts.items():
            self.stdout.write(f"  {name}: {count}")
        if not options["yes"]:
            self.stdout.write("nothing changed: add --yes to erase")
            return
        try:
            with audit_origin("cli"):  # the audit event says it came from the CLI
                record = user_erase(user=user, actor=None, remove_text=options["remove_text"])
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"erased: account {user.pk} is now {record.pseudonym} (erasure {record.pk})")
