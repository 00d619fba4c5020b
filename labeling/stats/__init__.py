"""Agreement and consensus statistics, pure numpy (no Django): the one place Ordinal
defines them. `agreement` (two annotators, one item, one annotator, Fleiss' kappa,
Krippendorff's alpha), `batch` (the same over a whole project at once), `bootstrap`
(confidence intervals), `consensus` (tiers, Borda, Bradley-Terry, pairs)."""
