"""Results and configs (layer 1): what a labeling run is told and what it returns.

Owns `LabelConfig`, `LabelResult` and their records, `FeatureData`, splits, names and file helpers,
and the package's error types (`errors.py`: one per kind of fault, under `TokenlabelError`).
May import nothing else of the package, and no torch: reading results needs plain Python only.
"""
