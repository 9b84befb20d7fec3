"""Settings of the SAE stages: the activation cache and the examples drawn from it.

`LabelConfig` (the optimisation) stays the core's; these two only say which tokens the
labeler sees. Each checks itself on construction, so a bad value fails before any model runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..records.serial import Config

CACHE_ENV = "SAELENS_TOKENLABEL_CACHE"


def default_cache_dir() -> Path:
    """`$SAELENS_TOKENLABEL_CACHE`, else `~/.cache/saelens_tokenlabel/activations`."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "saelens_tokenlabel" / "activations"


@dataclass
class CacheConfig(Config):
    """How the subject model and the SAE are run over the corpus, and where the sparse
    activations are kept."""

    cache_dir: str | Path | None = None
    """Root folder of activation caches. None: `default_cache_dir()`."""
    context_size: int | None = None
    """Tokens per context (BOS included). None: the SAE's `metadata.context_size`, else 128;
    never more than the model's `n_ctx`."""
    prepend_bos: bool | None = None
    """Start every context with BOS. None: the SAE's `metadata.prepend_bos`, else True."""
    batch_size: int = 16
    """Contexts per forward pass of the subject model."""
    encode_batch_tokens: int = 2048
    """Tokens per `sae.encode` call. Bounds the dense ``[tokens x d_sae]`` block that exists
    for one call only."""
    shard_tokens: int = 1 << 18
    """Tokens per shard file. Bounds what the writer holds before flushing to disk."""
    max_tokens: int | None = None
    """Stop after this many corpus tokens (BOS not counted). None: the whole corpus."""
    max_documents: int | None = None
    """Stop after this many documents. None: all."""
    overwrite: bool = False
    """Recompute the cache even when a matching one exists."""

    def check(self) -> None:
        self.need(self.context_size is None or self.context_size >= 2,
              f"context_size must be >= 2, got {self.context_size}")
        self.need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        self.need(self.encode_batch_tokens >= 1,
              f"encode_batch_tokens must be >= 1, got {self.encode_batch_tokens}")
        self.need(self.shard_tokens >= 1, f"shard_tokens must be >= 1, got {self.shard_tokens}")
        self.need(self.max_tokens is None or self.max_tokens >= 1,
              f"max_tokens must be >= 1 or None, got {self.max_tokens}")
        self.need(self.max_documents is None or self.max_documents >= 1,
              f"max_documents must be >= 1 or None, got {self.max_documents}")

    def root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()

    def corpora_dir(self) -> Path:
        """Where corpus files' hashes are remembered (`sae.identity`): beside the caches
        they key, so that one cache folder serves every run folder that reads it."""
        return self.root() / "corpora"


@dataclass
class ExampleConfig(Config):
    """Which (context, token) pairs become rating examples of a feature."""

    n_top: int = 20
    """Top-activating tokens (over the whole corpus)."""
    n_quantile: int = 20
    """Further activating tokens, spread over the activation quantiles."""
    n_quantile_bins: int = 5
    """Equal-count activation bins the quantile examples are drawn from, evenly."""
    n_random: int = 20
    """Inactive tokens drawn uniformly from the corpus."""
    n_near_miss: int = 20
    """Inactive tokens from the windows of the chosen activating tokens."""
    n_contrast: int = 20
    """Same-word contrasts: occurrences of the words the feature fires on where it is silent
    (over the whole word), spread over those words in proportion to how often it fires on
    each, then over distinct contexts (`contrasts.py`). They tell a label from a broader one
    ("livestock" from "animal"). 0: none."""
    reservoir_size: int = 256
    """Activating tokens kept per feature (a uniform sample) to draw the quantiles from."""
    window_before: int = 24
    """Subject tokens of context shown before the token."""
    window_after: int = 8
    """Subject tokens of context shown after the token."""
    max_merge: int = 8
    """Most neighbouring byte-fragment tokens merged into one word (UTF-8 needs at most 3
    neighbours; a few more cover fragments that span two characters)."""
    keep_examples: bool = True
    """Keep the examples (text, word, activation, kind) in `LabelResult.extra`."""
    seed: int = 0
    """Seeds every random draw; the same seed and cache give the same examples."""

    @classmethod
    def from_stored(cls, d: dict) -> ExampleConfig:
        """The config a run stored (``info["example_config"]``). One stored before contrast
        examples existed was made without them (``n_contrast=0``), whatever the default is
        now: its examples are rebuilt as they were."""
        return cls.from_dict({"n_contrast": 0, **d})

    def check(self) -> None:
        for name in ("n_top", "n_quantile", "n_random", "n_near_miss", "n_contrast",
                     "window_before", "window_after"):
            self.need(getattr(self, name) >= 0, f"{name} must be >= 0, got "
                  f"{getattr(self, name)}")
        self.need(self.n_top + self.n_quantile >= 1,
              "n_top + n_quantile must be >= 1: a feature needs activating examples")
        self.need(self.n_random + self.n_near_miss >= 1,
              "n_random + n_near_miss must be >= 1: a feature needs inactive examples")
        self.need(self.n_quantile_bins >= 1,
              f"n_quantile_bins must be >= 1, got {self.n_quantile_bins}")
        self.need(self.reservoir_size >= 1,
              f"reservoir_size must be >= 1, got {self.reservoir_size}")
        self.need(self.max_merge >= 1, f"max_merge must be >= 1, got {self.max_merge}")
