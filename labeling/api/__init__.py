"""The labeling REST API: projects, members, prompts, imports and users (`projects`), the
annotator workspace (`workspace`), agreement and quality (`quality`); `urls` maps them."""
