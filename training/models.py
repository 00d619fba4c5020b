"""Generation runs, dataset snapshots, training runs and the model registry.

Filled in by the generation, datasets and training issues; each run subclasses
labeling.runs.Run so the stale-run sweep recovers it.
"""
