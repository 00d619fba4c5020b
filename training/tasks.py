"""Celery tasks of the training app (generation on the `generate` queue, training on
`train`). Thin adapters: an id in, a claim, one engine call. The engine (and torch) is
imported inside the task bodies so the web process never loads it."""
