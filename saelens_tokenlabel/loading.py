"""Loading evaluators: from a hub name (real runs) or a local folder (offline runs, tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

LOCAL_CONFIG = "tokenlabel_model.json"
LOCAL_WEIGHTS = "model.safetensors"
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    # bf16 halves memory and doubles throughput on GPU; on CPU bf16 matmuls are slow.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _cfg_to_json(cfg: Any) -> dict[str, Any]:
    out = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, torch.device):
            value = str(value)
        try:
            json.dumps(value)
        except TypeError:
            continue  # derived or runtime-only fields; the config rebuilds them
        out[key] = value
    return out


def save_local_model(model: HookedTransformer, directory: str | Path) -> Path:
    """Save a HookedTransformer and its tokenizer so `load_local_model` can rebuild it offline."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if model.tokenizer is None:
        raise ValueError(
            "save_local_model needs a model with a tokenizer (model.tokenizer is None)."
        )
    model.tokenizer.save_pretrained(directory)
    cfg = _cfg_to_json(model.cfg)
    (directory / LOCAL_CONFIG).write_text(json.dumps(cfg, indent=1, sort_keys=True))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / LOCAL_WEIGHTS))
    return directory


def load_local_model(
    directory: str | Path, device: str | None = None, dtype: torch.dtype | str | None = None
) -> HookedTransformer:
    """Load a model saved by `save_local_model`. Nothing is downloaded."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    directory = Path(directory)
    cfg_path = directory / LOCAL_CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{directory} holds no {LOCAL_CONFIG}: it was not written by "
            "stl.save_local_model(model, dir). Save the model with it first."
        )
    cfg_dict = json.loads(cfg_path.read_text())
    device = device or default_device()
    if isinstance(dtype, str):
        dtype = _DTYPES[dtype]
    cfg_dict["dtype"] = dtype or _DTYPES.get(cfg_dict.get("dtype", "float32"), torch.float32)
    cfg_dict["device"] = device
    known = set(HookedTransformerConfig.__dataclass_fields__)
    cfg = HookedTransformerConfig(**{k: v for k, v in cfg_dict.items() if k in known and
                                     HookedTransformerConfig.__dataclass_fields__[k].init})
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state = load_file(str(directory / LOCAL_WEIGHTS))
    model.load_state_dict(state, strict=True)
    return model.to(device)


def load_evaluator_model(
    name_or_dir: str, device: str | None = None, dtype: torch.dtype | None = None
) -> HookedTransformer:
    """A local folder from `save_local_model`, else a model name for `from_pretrained`."""
    from transformer_lens import HookedTransformer

    if Path(name_or_dir).is_dir():
        return load_local_model(name_or_dir, device=device, dtype=dtype)
    device = device or default_device()
    return HookedTransformer.from_pretrained(
        name_or_dir, device=device, dtype=dtype or default_dtype(device),
        default_prepend_bos=False,
    )
