"""Store each guideline version's sanitized HTML next to its markdown (rendered once,
not on every page that shows it); existing versions are rendered here."""

from django.db import migrations, models


def backfill(apps, schema_editor) -> None:  # noqa: ANN001
    from core.rendering import render_markdown

    GuidelineVersion = apps.get_model("guidelines", "GuidelineVersion")
    for version in GuidelineVersion.objects.only("pk", "body").iterator(chunk_size=200):
        GuidelineVersion.objects.filter(pk=version.pk).update(
            body_html=str(render_markdown(version.body)))


class Migration(migrations.Migration):

    dependencies = [
        ("guidelines", "0002_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="guidelineversion",
            name="body_html",
            field=models.TextField(blank=True, default="", help_text="`body` sanitized, rendered when written."),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
