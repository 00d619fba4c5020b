from django.apps import AppConfig


class JudgesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "judges"
    verbose_name = "AI judges"

    def ready(self) -> None:
        from judges import tasks  # noqa: F401 - registers the run task (sent by name)
