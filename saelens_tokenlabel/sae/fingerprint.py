"""Content hashes that key the activation cache: the model (as far as the hook), its
tokenizer, the SAE, the corpus and the settings. Two runs share a cache exactly when all agree.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

import torch

from ..records.names import METADATA_KEY

if TYPE_CHECKING:
    from sae_lens import SAE

CACHE_FORMAT_VERSION = 1
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def digest(obj: Any, size: int = 16) -> str:
    text = json.dumps(_jsonable(obj), sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).hexdigest()


def _hash_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.view(torch.uint8).numpy().tobytes())


def hash_state(state: dict[str, torch.Tensor], keep: Any = None) -> str:
    """Hash of the named tensors (those for which ``keep(name)`` is true)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        if keep is None or keep(name):
            _hash_tensor(h, name, state[name])
    return h.hexdigest()


def model_fingerprint(model: Any, stop_at_layer: int | None) -> dict[str, Any]:
    """The model's config, tokenizer and the weights that reach the hook (blocks from
    `stop_at_layer` on and the unembedding never influence the cached activations)."""

    def needed(name: str) -> bool:
        m = _BLOCK_RE.match(name)
        if m:
            return stop_at_layer is None or int(m.group(1)) < stop_at_layer
        if stop_at_layer is not None and name.startswith(("unembed.", "ln_final.")):
            return False
        return True

    cfg = {k: v for k, v in model.cfg.to_dict().items() if k not in ("device", "n_devices")}
    return {
        "name": str(model.cfg.model_name),
        "cfg": digest(cfg),
        "weights": hash_state(model.state_dict(), needed),
        "tokenizer": tokenizer_fingerprint(model.tokenizer),
    }


def tokenizer_fingerprint(tokenizer: Any) -> str:
    if tokenizer is None:
        return "none"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return hashlib.blake2b(backend.to_str().encode("utf-8"), digest_size=16).hexdigest()
    return digest(sorted(tokenizer.get_vocab().items()))


def sae_fingerprint(sae: SAE[Any]) -> dict[str, Any]:
    cfg = sae.cfg.to_dict()
    cfg.pop("device", None)
    meta = dict(cfg.pop("metadata", {}) or {})
    meta.pop(METADATA_KEY, None)  # our own labels must not change the key
    return {"cfg": digest(cfg), "metadata": digest(meta),
            "weights": hash_state(sae.state_dict())}
