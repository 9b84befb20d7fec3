"""Names shared by every layer: the version, the metadata key, the files, the method.

Layer 1 (results and configs): imports nothing from the package.
"""

__version__ = "0.1.0"
"""The package version, recorded in every run's info and LabelSet summary."""
METADATA_KEY = "tokenlabel"
"""Key of the label summary in `sae.cfg.metadata`."""
SIDECAR_FILENAME = "tokenlabel_labels.json"
"""Full results, written beside SAELens's ``cfg.json``."""
RUN_STORE_FILENAME = "run.sqlite"
"""The run store inside a run folder (``tokenlabel label --out``)."""
LABELS_TSV = "labels.tsv"
"""One line per feature, written into a run folder at the end of ``tokenlabel label``."""
NEURONPEDIA_JSONL = "neuronpedia.jsonl"
"""Neuronpedia explanation records, written into a run folder."""
METHOD = "token_space_gd"
"""The labeling method (Schulz & Fallows, arXiv 2504.00754)."""
PAPER = "arXiv:2504.00754"
