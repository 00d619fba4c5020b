"""The web process must not import torch: load the URLconf and every views, api, web,
tasks and service module the web reaches in a fresh interpreter and look at sys.modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, pkgutil, sys
import django
django.setup()
import config.wsgi, config.urls
from django.urls import get_resolver
get_resolver().url_patterns
WEB = {"views", "api", "web", "tasks", "console", "urls", "generation", "health", "runs", "registry"}
for app in ("core", "accounts", "labeling", "guidelines", "training", "webhooks", "judges", "erasure"):
    package = importlib.import_module(app)
    for info in pkgutil.walk_packages(package.__path__, app + "."):
        parts = info.name.split(".")
        if "engine" not in parts and (WEB & set(parts) or parts[-1].startswith(("views", "api", "console"))):
            importlib.import_module(info.name)
heavy = sorted(m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def test_web_modules_do_not_import_torch() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "HEAVY:\n" in result.stdout or result.stdout.strip().endswith("HEAVY:"), result.stdout
