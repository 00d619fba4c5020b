"""Store each candidate's and prompt's sanitized HTML next to its text, so pages stop
running markdown on every view; existing rows are rendered here, in batches that each
commit (the migration is not atomic), so a large table is never held in one transaction."""

from django.db import migrations, models, transaction

BATCH = 1000


def _batches(queryset):  # noqa: ANN001, ANN202
    last = 0
    while True:
        rows = list(queryset.filter(pk__gt=last).order_by("pk")[:BATCH])
        if not rows:
            return
        yield rows
        last = rows[-1].pk


def backfill(apps, schema_editor) -> None:  # noqa: ANN001
    from core.rendering import render_markdown, render_messages

    Candidate = apps.get_model("labeling", "Candidate")
    Prompt = apps.get_model("labeling", "Prompt")
    for rows in _batches(Candidate.objects.only("pk", "text")):
        for row in rows:
            row.text_html = str(render_markdown(row.text))
        with transaction.atomic():
            Candidate.objects.bulk_update(rows, ["text_html"])
    for rows in _batches(Prompt.objects.only("pk", "messages")):
        for row in rows:
            row.messages_html = render_messages(row.messages)
        with transaction.atomic():
            Prompt.objects.bulk_update(rows, ["messages_html"])


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("labeling", "0007_prompt_metadata_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="candidate",
            name="text_html",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="prompt",
            name="messages_html",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
