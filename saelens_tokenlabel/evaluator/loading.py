"""Loading evaluators: from a hub name (real runs) or a local folder (offline runs, tests).

A model that does not load is one line (`ModelLoadError`, a ValueError): a hub name that
cannot be reached (no network) says so and how to pass a local folder instead; an unknown
name says where the names are listed; a damaged local folder names the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..records.errors import ModelLoadError
from .suffix import local_window, unsupported

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase

LOCAL_CONFIG = "tokenlabel_model.json"
LOCAL_WEIGHTS = "model.safetensors"
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def tokenizer_of(model: Any) -> PreTrainedTokenizerBase:
    """A model's tokenizer; a one-line error when it has none (TransformerLens leaves
    `model.tokenizer` None for a model built without one)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        name = getattr(getattr(model, "cfg", None), "model_name", type(model).__name__)
        raise ValueError(f"The model {name!r} has no tokenizer; load it with "
                         "HookedTransformer.from_pretrained(...) or pass tokenizer=....")
    return tok
_LOCAL_HINT = ("pass a local folder instead (--evaluator DIR, --model DIR): one written by "
               "stl.save_local_model(model, DIR) on a machine with network, or a Hugging Face "
               "model folder with the bridge backend; or, with the model in the Hugging Face "
               "cache, set HF_HUB_OFFLINE=1")


def _first_line(err: BaseException, width: int = 160) -> str:
    text = " ".join(str(err).split("\n")[0].split())
    return text if len(text) <= width else text[: width - 1] + "…"


def weights_error(err: BaseException, width: int = 200) -> str:
    """The telling line of torch's `load_state_dict` error: its first size mismatch (or
    missing or unexpected keys), not the dozens of lines that follow."""
    lines = [" ".join(line.split()) for line in str(err).splitlines() if line.strip()]
    line = next((x for x in lines if x.startswith(("size mismatch", "Missing key",
                                                   "Unexpected key"))), lines[0] if lines
                else type(err).__name__)
    return line if len(line) <= width else line[: width - 1] + "…"


def from_hub(name: str, load: Any, what: str = "model", local: str = _LOCAL_HINT) -> Any:
    """``load()``, with its failures said in one line (`ModelLoadError`): the hub cannot be
    reached (`local` says what to pass instead), the name is unknown. `what` names the thing
    in the message."""
    try:
        return load()
    except (OSError, ConnectionError) as err:
        raise ModelLoadError(
            f"Could not load the {what} {name!r} from the Hugging Face hub "
            f"({_first_line(err)}). Without network, {local}.") from None
    except ValueError as err:
        if "not found" not in str(err):
            raise
        raise ModelLoadError(
            f"{what.capitalize()} {name!r} is not a model name TransformerLens knows (see "
            "transformer_lens.loading.OFFICIAL_MODEL_NAMES), nor a folder here. Check the "
            "name, or pass a folder written by stl.save_local_model.") from None


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
    try:
        cfg_dict = json.loads(cfg_path.read_text())
    except ValueError as err:
        raise ModelLoadError(f"{cfg_path} is not valid JSON ({err}): the folder is damaged or "
                             "was cut short. Save the model again with "
                             "stl.save_local_model(model, dir).") from None
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
    try:
        model.load_state_dict(load_file(str(directory / LOCAL_WEIGHTS)), strict=True)
    except (RuntimeError, OSError) as err:
        raise ModelLoadError(
            f"The weights in {directory / LOCAL_WEIGHTS} do not fit {cfg_path} "
            f"({weights_error(err)}). Save the model again with "
            "stl.save_local_model(model, dir).") from None
    return model.to(device)


BACKENDS = ("hooked", "bridge")
"""How a model is loaded: TransformerLens's HookedTransformer, or a TransformerLens 3
TransformerBridge around the Hugging Face model."""


def load_evaluator_model(
    name_or_dir: str, device: str | None = None, dtype: torch.dtype | None = None,
    backend: str = "hooked",
) -> Any:
    """The evaluator LLM: `load_model` (default dtype bf16 on GPU, fp32 on CPU)."""
    device = device or default_device()
    return load_model(name_or_dir, device, dtype or default_dtype(device), backend)


def load_model(name_or_dir: str, device: str | None = None, dtype: torch.dtype | None = None,
               backend: str = "hooked", **from_pretrained: Any) -> Any:
    """A local folder from `save_local_model`, else a model name (or, for the bridge, a Hugging
    Face folder) for ``HookedTransformer.from_pretrained`` (with `from_pretrained`) /
    ``TransformerBridge.boot_transformers``. A `save_local_model` folder loads as a bridge too,
    through `hooked_to_hf_llama`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}.")
    device = device or default_device()
    local = Path(name_or_dir).is_dir() and (Path(name_or_dir) / LOCAL_CONFIG).is_file()
    if backend == "bridge":
        if local:
            hooked = load_local_model(name_or_dir, device=device, dtype=dtype)
            return boot_bridge(hooked_to_hf_llama(hooked), hooked.tokenizer, dtype)
        from transformer_lens.model_bridge import TransformerBridge

        return from_hub(name_or_dir, lambda: TransformerBridge.boot_transformers(
            name_or_dir, device=device, dtype=dtype or torch.float32))
    if Path(name_or_dir).is_dir():
        return load_local_model(name_or_dir, device=device, dtype=dtype)
    from transformer_lens import HookedTransformer

    kwargs = {"default_prepend_bos": False, **from_pretrained}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return from_hub(name_or_dir, lambda: HookedTransformer.from_pretrained(
        name_or_dir, device=device, **kwargs))


def boot_bridge(hf_model: Any, tokenizer: Any, dtype: torch.dtype | None = None) -> Any:
    """A `TransformerBridge` around a Hugging Face model already in memory."""
    from transformer_lens.model_bridge import TransformerBridge

    dtype = dtype or next(hf_model.parameters()).dtype
    return TransformerBridge.boot_transformers(
        str(hf_model.config.name_or_path), hf_model=hf_model, tokenizer=tokenizer,
        device=str(next(hf_model.parameters()).device), dtype=dtype)


def hooked_to_hf_llama(model: HookedTransformer) -> Any:
    """The same network as a Hugging Face `LlamaForCausalLM`, weights copied (not shared), for
    booting a `TransformerBridge` on a model that exists only as a HookedTransformer (the toy
    evaluator, the planted subject).

    Llama-shaped HookedTransformers only: RMSNorm, rotary embeddings, gated SiLU MLP, global
    causal attention (`suffix.unsupported` lists the rest). TransformerLens's biases map onto
    Llama's optional ``attention_bias``/``mlp_bias``; an unembedding bias, which Llama does not
    have, becomes a bias on ``lm_head`` (in memory: `save_pretrained` would drop it)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    why = _not_plain_llama(model)
    if why is not None:
        raise ValueError(f"Cannot write {cfg.model_name!r} as a Hugging Face Llama: {why}. "
                         "Load it as a HookedTransformer (backend 'hooked'), or boot the "
                         "bridge from its Hugging Face checkpoint.")
    hf_cfg = LlamaConfig(
        vocab_size=cfg.d_vocab, hidden_size=cfg.d_model, intermediate_size=int(cfg.d_mlp or 0),
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_key_value_heads or cfg.n_heads, head_dim=cfg.d_head,
        max_position_embeddings=cfg.n_ctx, rms_norm_eps=cfg.eps, attention_bias=True,
        mlp_bias=True, tie_word_embeddings=False, pad_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rotary_base)})
    hf: Any = LlamaForCausalLM(hf_cfg).to(cfg.dtype)  # type: ignore[arg-type]  # stub: .to(dtype)
    hf.lm_head = torch.nn.Linear(cfg.d_model, cfg.d_vocab, bias=True, dtype=cfg.dtype)
    hf.load_state_dict(_llama_state(model), strict=True)
    hf.config.name_or_path = str(cfg.model_name)
    hf = hf.to(model.W_E.device).eval()
    _check_same_logits(model, hf)
    return hf


def _not_plain_llama(model: HookedTransformer) -> str | None:
    """Why `model` is not the network `LlamaConfig` with default rotary embeddings builds."""
    cfg = model.cfg
    why = unsupported(model)
    checks = (
        (cfg.normalization_type == "RMS", f"normalization_type is {cfg.normalization_type!r} "
                                          "(LayerNorm folded into the weights)"),
        (cfg.gated_mlp and cfg.act_fn == "silu", "its MLP is not gated SiLU"),
        (cfg.rotary_dim == cfg.d_head, f"rotary_dim {cfg.rotary_dim} is not d_head"),
        (not cfg.rotary_adjacent_pairs, "it rotates adjacent pairs"),
        (not (cfg.use_NTK_by_parts_rope or cfg.use_yarn_rope)
         and cfg.rotary_scaling_factor == 1.0, "its rotary embeddings are scaled"),
        (cfg.use_attn_scale and abs(cfg.attn_scale - cfg.d_head ** 0.5) < 1e-9,
         f"attn_scale is {cfg.attn_scale}, not sqrt(d_head)"),
        (local_window(model) is None, "it has local (sliding-window) attention layers"),
        (not (cfg.attn_scores_soft_cap > 0 or cfg.output_logits_soft_cap > 0),
         "it soft-caps attention scores or logits"),
        (not cfg.use_qk_norm, "it normalises queries and keys (QK-norm)"),
        (not cfg.use_normalization_before_and_after,
         "it normalises the attention and MLP outputs too"),
        (not cfg.attn_only, "it has no MLPs (attn_only)"),
    )
    for ok, reason in checks:
        if why is None and not ok:
            why = reason
    return why


def _check_same_logits(model: HookedTransformer, hf: Any) -> None:
    """The conversion's proof: the same logits on a few tokens (else an error, never a
    silently different model)."""
    n = min(8, int(model.cfg.n_ctx))
    tokens = torch.arange(n, device=model.W_E.device)[None] % int(model.cfg.d_vocab)
    with torch.no_grad():
        want, got = model(tokens), hf(tokens).logits
    # Hugging Face normalises in float32 and the two sum in other orders.
    tol = 1e-3 * (1.0 + float(want.abs().max()))
    if not torch.allclose(got.float(), want.float(), rtol=0, atol=tol * (
            100 if model.cfg.dtype in (torch.bfloat16, torch.float16) else 1)):
        raise ValueError(f"Writing {model.cfg.model_name!r} as a Hugging Face Llama changed "
                         f"its logits (by up to {float((got - want).abs().max()):.3g}); load "
                         "it as a HookedTransformer (backend 'hooked').")


def _llama_state(model: HookedTransformer) -> dict[str, torch.Tensor]:
    """TransformerLens weights in `LlamaForCausalLM`'s names and layouts."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}

    def heads_in(w: torch.Tensor) -> torch.Tensor:  # [head, d_model, d_head] -> [hd, d_model]
        return w.permute(0, 2, 1).reshape(-1, w.shape[1]).clone()

    out = {"model.embed_tokens.weight": sd["embed.W_E"].clone(),
           "model.norm.weight": sd["ln_final.w"].clone(),
           "lm_head.weight": sd["unembed.W_U"].T.clone(),
           "lm_head.bias": sd["unembed.b_U"].clone()}
    for i in range(model.cfg.n_layers):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        k = "attn._W_K" if b + "attn._W_K" in sd else "attn.W_K"
        v = "attn._W_V" if b + "attn._W_V" in sd else "attn.W_V"
        w_o = sd[b + "attn.W_O"]
        out.update({
            h + "input_layernorm.weight": sd[b + "ln1.w"].clone(),
            h + "post_attention_layernorm.weight": sd[b + "ln2.w"].clone(),
            h + "self_attn.q_proj.weight": heads_in(sd[b + "attn.W_Q"]),
            h + "self_attn.q_proj.bias": sd[b + "attn.b_Q"].flatten().clone(),
            h + "self_attn.k_proj.weight": heads_in(sd[b + k]),
            h + "self_attn.k_proj.bias": sd[b + k.replace("W_", "b_")].flatten().clone(),
            h + "self_attn.v_proj.weight": heads_in(sd[b + v]),
            h + "self_attn.v_proj.bias": sd[b + v.replace("W_", "b_")].flatten().clone(),
            h + "self_attn.o_proj.weight": w_o.reshape(-1, w_o.shape[-1]).T.clone(),
            h + "self_attn.o_proj.bias": sd[b + "attn.b_O"].clone(),
            h + "mlp.gate_proj.weight": sd[b + "mlp.W_gate"].T.clone(),
            h + "mlp.gate_proj.bias": torch.zeros_like(sd[b + "mlp.b_in"]),
            h + "mlp.up_proj.weight": sd[b + "mlp.W_in"].T.clone(),
            h + "mlp.up_proj.bias": torch.zeros_like(sd[b + "mlp.b_in"]),
            h + "mlp.down_proj.weight": sd[b + "mlp.W_out"].T.clone(),
            # TransformerLens adds b_in after the gate's product, (act(x W_gate) * x W_in +
            # b_in) W_out + b_out: it goes through W_out into the output bias.
            h + "mlp.down_proj.bias": (sd[b + "mlp.b_out"]
                                       + sd[b + "mlp.b_in"] @ sd[b + "mlp.W_out"]),
        })
    return out
