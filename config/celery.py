"""The Celery app: three queues and their routes.

- default:  imports, snapshots, aggregates, the stale-run sweep (CPU, short)
- generate: sampling candidates (GPU workers)
- train:    reward / SFT / DPO / RL training (GPU workers)

Start a worker per queue, e.g. `celery -A config worker -Q generate --concurrency 1`.
Tasks carry only row ids; the database is the source of truth for every run.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("ordinal")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each queue bound under its own routing key, so the worker banner shows the routing
# that is used (a queue given only its name binds to exchange "default", key "default").
app.conf.task_queues = (
    Queue("default", routing_key="default"),
    Queue("generate", routing_key="generate"),
    Queue("train", routing_key="train"),
)
app.conf.task_routes = {
    "training.tasks.generate_*": {"queue": "generate"},
    "training.tasks.train_*": {"queue": "train"},
    "judges.tasks.generate_*": {"queue": "generate"},
}
# One task at a time per process: generation and training hold a GPU for minutes, and
# a prefetched message would sit unacked behind it.
app.conf.worker_prefetch_multiplier = 1
app.autodiscover_tasks()


def ensure_broker_dirs() -> None:
    """The filesystem transport needs its folders before the first publish."""
    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            os.makedirs(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key], exist_ok=True)
