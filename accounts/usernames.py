"""The one rule for usernames, on every path that creates or renames an account: invite
sign-up and POST /api/users/ (through labeling.services.user_create), the Django admin's
user forms and `createsuperuser` (through the model field, see attach_to_user_model).

A username is compared and stored in Unicode NFKC form (what Django's own forms do), is
at most 150 characters in that form, and has no character that renders as nothing or
reorders the text around it: control and format characters (zero-width spaces and
joiners, bidi overrides and isolates, the BOM), line and paragraph separators, spaces,
and the invisible letters and fillers Unicode classes as letters. Beyond that, Django's
rule: letters, digits and @ . + - _ only.
"""

from __future__ import annotations

import unicodedata

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError

MAX_LENGTH = 150  # auth.User.username's column
# Categories of characters that are invisible or change how the text around them is
# shown: Cc controls, Cf format (zero-width, bidi controls), Cs/Co/Cn surrogates,
# private use and unassigned, Zs/Zl/Zp separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# Blank characters outside those categories (letters or marks that draw nothing): the
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, the Braille blank.
INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0\u2800")
_django_rule = UnicodeUsernameValidator()


def normalize_username(value: str) -> str:
    """`value` in the form it is stored and compared in (NFKC), once it passes the rule;
    ValidationError (messages a person can act on) otherwise."""
    normalized = unicodedata.normalize("NFKC", value)
    validate_username(normalized)
    return normalized


def validate_username(value: str) -> None:
    """Django validator for the rule above (checks the NFKC form of `value`)."""
    value = unicodedata.normalize("NFKC", value)
    if not value:
        raise ValidationError("a username cannot be empty", code="blank")
    if len(value) > MAX_LENGTH:
        raise ValidationError(f"a username has at most {MAX_LENGTH} characters (this one has {len(value)})",
                              code="max_length")
    hidden = next((c for c in value if c in INVISIBLE or unicodedata.category(c) in REFUSED_CATEGORIES), None)
    if hidden is not None:
        raise ValidationError(
            f"a username cannot contain invisible or text-direction characters (U+{ord(hidden):04X})",
            code="invisible")
    _django_rule(value)


def attach_to_user_model() -> None:
    """Put the rule on auth.User's username field, in place of Django's narrower one.

    This project uses Django's User model (no custom one), so the rule is attached at
    start-up: the admin's user forms, `createsuperuser` and `full_clean` run the field's
    validators, and so reach it without code of ours in each of them."""
    from django.contrib.auth import get_user_model

    field = get_user_model()._meta.get_field("username")
    kept = [v for v in field.validators if not isinstance(v, UnicodeUsernameValidator) and v is not validate_username]
    field.validators[:] = [*kept, validate_username]
