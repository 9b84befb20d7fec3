"""Names shared by the SAE stages: the metadata key, the sidecar file, the method."""

METADATA_KEY = "tokenlabel"
"""Key of the label summary in `sae.cfg.metadata`."""
SIDECAR_FILENAME = "tokenlabel_labels.json"
"""Full results, written beside SAELens's ``cfg.json``."""
METHOD = "token_space_gd"
"""The labeling method (Schulz & Fallows, arXiv 2504.00754)."""
PAPER = "arXiv:2504.00754"
