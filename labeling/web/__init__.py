"""Server-rendered pages of the labeling app: home and invite sign-up (`home`), the
annotator workspace (`annotate`) and feedback page (`feedback`), the console dashboard
(`console`) and the reviewers' pages (`review`)."""
