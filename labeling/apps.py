from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the app's Celery tasks in every process (web, worker, beat), so
        # runs are enqueued by task object and eager mode works in tests.
        from labeling import tasks  # noqa: F401
