"""Ordinal's ML engine: sampling backends, rankings -> pairs, trainers.

Pure Python + torch/transformers/trl; it never imports Django, so it runs (and is
tested) with no database. torch is imported lazily inside the functions that need it,
so importing this package costs nothing in the web process.
"""
