"""A password hasher for the test suite only: PBKDF2 with one iteration.

One real PBKDF2 hash (1,000,000 iterations in Django 5.2) costs about a second on the CI
machine, and the factories hash a password for every user they create. The algorithm
name stays ``pbkdf2_sha256``, so the servers and workers the integration tests start with
the production settings still verify these hashes (the iteration count travels inside
each hash)."""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class OneIterationPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1
