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
"""Neuronpedia explanation records, one line each with its scores nested (the readable view),
written into a run folder."""
NEURONPEDIA_DIR = "neuronpedia"
"""Neuronpedia's import layout (``<modelId>/<layer>/explanations/batch-N.jsonl.gz``, ...),
written into an export folder by ``tokenlabel export --neuronpedia``."""
METHOD = "token_space_gd"
"""The labeling method (Schulz & Fallows, arXiv 2504.00754)."""
PAPER = "arXiv:2504.00754"

LABEL_METHODS = ("descended", "amortised", "warm_started")
"""How a label was found (`LabelResult.method`): by descent, accepted from an amortised
proposal, or by a descent warm-started from a rejected proposal."""
AMORTIZER_DIR = "amortizer"
"""The amortised labeler's folder inside a run folder (`amortize.Amortizer.save`)."""
