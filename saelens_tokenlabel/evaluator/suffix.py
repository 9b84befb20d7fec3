"""A lean forward of the prompt's suffix (label slots and tail) over the prefix cache.

TransformerLens runs a cached step through its modules: hook points, einops rearrangements
and weight transposes on every call, rotary embeddings re-applied to every cached key, masks
rebuilt. On a small evaluator that overhead is most of the step; on a large one it is kernel
launches. `SuffixRunner` does the same arithmetic directly: weights laid out once, the tail's
token embeddings looked up once, the last layer run for the last position only (the only one
read), and only the answer tokens unembedded when that is all the step reads. It is exact:
the same logits and gradients as TransformerLens's cached and full-prompt paths, tested to
1e-12 in float64 (`tests/test_suffix.py`), for the evaluator families researchers use:

* Llama, Qwen 2/2.5 (QKV biases), Mistral (sliding window): RMSNorm, rotary embeddings,
  grouped-query attention, gated MLP;
* Gemma 1-3: embeddings scaled (inside ``W_E``, as TransformerLens converts them), norms
  before and after attention and MLP, attention-score and final-logit soft-caps, local
  (sliding-window) and global layers with their own rotary bases, QK-norm, ``d_head`` apart
  from ``d_model / n_heads``, gelu-tanh gated MLP, Gemma's query scaling (``attn_scale``);
* GPT-2: LayerNorm, learned absolute positions, biases everywhere, GELU MLP;
* models without normalisation, and attention-only models.

Each piece of arithmetic (norm, attention with or without soft-cap, MLP, positions) is a
small function picked once per model when the runner is built. A local layer sees the keys
less than ``window_size`` positions back, positions counted in tokens (padding skipped), as
the model sees the whole prompt; `forward.PrefixCache` keeps padding out of any window that
can bite, where TransformerLens would count it (`local_window`).

Anything else (ALiBi, MoE, parallel attention and MLP, OLMo's norms, ...) keeps the
TransformerLens path; `unsupported` says why, and the cache logs it once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

Fn = Callable[[torch.Tensor], torch.Tensor]

# (config field, the value it must have) for the lean forward to be TransformerLens's forward.
_REQUIRED: tuple[tuple[str, Any], ...] = (
    ("parallel_attn_mlp", False), ("post_embedding_ln", False), ("num_experts", None),
    ("clip_qkv", None), ("use_logn_attn", False), ("use_dynamic_ntk_rope", False),
    ("attention_dir", "causal"), ("use_attention_sinks", False),
    ("use_split_qkv_input", False), ("use_attn_in", False), ("load_in_4bit", False),
    ("ungroup_grouped_query_attention", False), ("n_devices", 1),
)
_NORMS = ("RMS", "RMSPre", "LN", "LNPre", None)
_POSITIONS = ("rotary", "standard")
_OWN_NORMS = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
"""Architectures TransformerLens normalises its own way (QK-norm over all heads, norms after
the sublayers): its modules branch on the name."""


def unsupported(model: Any) -> str | None:
    """Why the lean forward cannot stand in for `model`'s, or None when it can."""
    cfg = model.cfg
    if type(model).__name__ != "HookedTransformer":
        return f"the evaluator is a {type(model).__name__}, not a HookedTransformer"
    if cfg.normalization_type not in _NORMS:
        return (f"normalization_type is {cfg.normalization_type!r} (supported: "
                f"{', '.join(map(repr, _NORMS))})")
    if cfg.positional_embedding_type not in _POSITIONS:
        return (f"positional_embedding_type is {cfg.positional_embedding_type!r} "
                f"(supported: {', '.join(map(repr, _POSITIONS))})")
    for name, want in _REQUIRED:
        if getattr(cfg, name, want) != want:
            return f"{name} is {getattr(cfg, name)!r} (supported: {want!r})"
    if cfg.is_layer_norm_activation():
        return f"act_fn {cfg.act_fn!r} normalises inside the MLP"
    if cfg.original_architecture in _OWN_NORMS:
        return f"{cfg.original_architecture} normalises queries, keys or sublayers its own way"
    hooked = [name for name, m in model.named_modules()
              if getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None)]
    if hooked:
        # The lean forward calls no module: hooks the user attached would not run.
        return f"hooks are attached to the evaluator ({', '.join(hooked[:3]) or 'the model'})"
    return None


def local_window(model: Any) -> int | None:
    """The sliding window of `model`'s local attention layers, or None when all are global."""
    cfg: Any = getattr(model, "cfg", None)
    if not getattr(cfg, "use_local_attn", False) or "local" not in (cfg.attn_types or ()):
        return None
    return int(cfg.window_size)


# ------------------------------------------------------------------ arithmetic, one piece each
def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _rms(x: Float[torch.Tensor, "... d"], w: torch.Tensor | None, eps: float
         ) -> Float[torch.Tensor, "... d"]:
    """TransformerLens's RMSNorm (and RMSNormPre without `w`): in at least float32."""
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    x = (x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()).to(dtype)
    return x if w is None else x * w


def _layer_norm(x: Float[torch.Tensor, "... d"], w: torch.Tensor | None,
                b: torch.Tensor | None, eps: float) -> Float[torch.Tensor, "... d"]:
    """TransformerLens's LayerNorm (and LayerNormPre without `w`, `b`)."""
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    x = x - x.mean(-1, keepdim=True)
    x = (x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()).to(dtype)
    if w is None:
        return x
    return x * w if b is None else x * w + b


def _norm_of(module: Any) -> Fn:
    """The arithmetic of one TransformerLens norm module (`_identity` for none)."""
    kind = type(module).__name__
    if module is None or kind == "Identity":
        return _identity
    if kind in ("RMSNorm", "RMSNormPre"):
        return partial(_rms, w=getattr(module, "w", None), eps=module.eps)
    if kind in ("LayerNorm", "LayerNormPre"):
        return partial(_layer_norm, w=getattr(module, "w", None), b=getattr(module, "b", None),
                       eps=module.eps)
    raise ValueError(f"No lean forward for the norm {kind}; load the evaluator with "
                     "PerformanceConfig(fast_suffix=False).")


def _softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """Gemma's soft-cap, as TransformerLens writes it."""
    return cap * torch.tanh(x / cap)


def _gated_mlp(x: Float[torch.Tensor, "... d_model"], W_gate: torch.Tensor, W_in: torch.Tensor,
               b_in: torch.Tensor, W_out: torch.Tensor, b_out: torch.Tensor, act: Fn
               ) -> Float[torch.Tensor, "... d_model"]:
    post = act(F.linear(x, W_gate)) * F.linear(x, W_in) + b_in
    return F.linear(post, W_out, b_out)


def _plain_mlp(x: Float[torch.Tensor, "... d_model"], W_in: torch.Tensor, b_in: torch.Tensor,
               W_out: torch.Tensor, b_out: torch.Tensor, act: Fn
               ) -> Float[torch.Tensor, "... d_model"]:
    return F.linear(act(F.linear(x, W_in, b_in)), W_out, b_out)


def _mlp_of(block: Any) -> Fn | None:
    """The block's MLP with its weights seen as ``F.linear`` takes them: transposed views of
    the model's own tensors (``F.linear`` multiplies by a transposed weight without copying
    it), so the runner holds no second copy of the evaluator; None without an MLP."""
    mlp = getattr(block, "mlp", None)
    if mlp is None:
        return None
    weights = dict(W_in=mlp.W_in.T, b_in=mlp.b_in, W_out=mlp.W_out.T, b_out=mlp.b_out,
                   act=mlp.act_fn)
    if hasattr(mlp, "W_gate"):
        return partial(_gated_mlp, W_gate=mlp.W_gate.T, **weights)
    return partial(_plain_mlp, **weights)


def _sdpa(q: Float[torch.Tensor, "batch head q d"], k: Float[torch.Tensor, "batch kv key d"],
          v: Float[torch.Tensor, "batch kv key d"], allowed: Bool[torch.Tensor, "batch 1 q key"],
          scale: float) -> Float[torch.Tensor, "batch head q d"]:
    """Softmax attention through the fused kernel (grouped-query heads shared in place)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=1.0 / scale,
                                          enable_gqa=k.shape[1] != q.shape[1])


def _softcapped(q: Float[torch.Tensor, "batch head q d"], k: Float[torch.Tensor, "batch kv key d"],
                v: Float[torch.Tensor, "batch kv key d"],
                allowed: Bool[torch.Tensor, "batch 1 q key"], scale: float, cap: float
                ) -> Float[torch.Tensor, "batch head q d"]:
    """Softmax attention with the scores soft-capped before the mask (Gemma 2), as
    TransformerLens orders it. Query head h reads key/value head h // (head / kv), as
    TransformerLens's grouped-query attention repeats them: the query heads of a group sit
    side by side against their one key/value head, so no key or value is copied."""
    b, h, s, d = q.shape
    rows = (h // k.shape[1]) * s
    scores = q.reshape(b, k.shape[1], rows, d) @ k.transpose(-1, -2)
    scores = _softcap(scores.view(b, h, s, -1) / scale, cap).masked_fill(~allowed, float("-inf"))
    pattern = torch.softmax(scores, dim=-1).view(b, k.shape[1], rows, -1)
    return (pattern @ v).view(b, h, s, d)


# ------------------------------------------------------------------ one block
@dataclass(frozen=True)
class _Layer:
    ln1: Fn
    ln1_post: Fn
    """Gemma 2/3's norm of the attention output (`_identity` elsewhere)."""
    ln2: Fn
    ln2_post: Fn
    W_Q: Float[torch.Tensor, "head d_model d_head"]
    """The model's own tensor: laid out for ``F.linear`` at each call (`_flat`)."""
    b_Q: Float[torch.Tensor, " hd"]
    W_K: Float[torch.Tensor, "kv d_model d_head"]
    b_K: Float[torch.Tensor, " kd"]
    W_V: Float[torch.Tensor, "kv d_model d_head"]
    b_V: Float[torch.Tensor, " kd"]
    W_O: Float[torch.Tensor, "d_model hd"]
    """A transposed view of the model's tensor (no copy)."""
    b_O: Float[torch.Tensor, " d_model"]
    q_norm: Fn
    """QK-norm over each head (Gemma 3; `_identity` elsewhere)."""
    k_norm: Fn
    mlp: Fn | None
    """None: an attention-only model."""
    attend: Callable[..., torch.Tensor]
    """`_sdpa` or `_softcapped`, with the layer's scale (and cap)."""
    window: int | None
    """Local attention: keys less than this many positions back. None: global."""
    attn: Any
    """The block's attention module: its rotary tables, read at each call (TransformerLens
    replaces them with longer ones when a longer input comes)."""


def _flat(w: Float[torch.Tensor, "head d_model d_head"]
          ) -> Float[torch.Tensor, "hd d_model"]:
    """F.linear's [(heads d_head), d_model] of a [heads, d_model, d_head] weight. No view
    gives it, so it is a copy, made at each call and freed with the layer's step (as
    TransformerLens's own attention does): kept, the copies of every layer would double the
    evaluator's memory."""
    return w.permute(0, 2, 1).reshape(-1, w.shape[1])


def _attention_of(attn: Any) -> dict[str, Any]:
    """The attention module's weights laid out for ``F.linear``, its QK-norm and its
    attention function (soft-capped or not)."""
    cfg = attn.cfg
    grouped = hasattr(attn, "_W_K")
    W_K, b_K = (attn._W_K, attn._b_K) if grouped else (attn.W_K, attn.b_K)
    W_V, b_V = (attn._W_V, attn._b_V) if grouped else (attn.W_V, attn.b_V)
    scale, cap = float(attn.attn_scale), cfg.attn_scores_soft_cap
    attend = (partial(_softcapped, scale=scale, cap=float(cap)) if cap is not None and cap > 0
              else partial(_sdpa, scale=scale))
    return dict(
        W_Q=attn.W_Q, b_Q=attn.b_Q.reshape(-1), W_K=W_K, b_K=b_K.reshape(-1),
        W_V=W_V, b_V=b_V.reshape(-1), W_O=attn.W_O.reshape(-1, attn.W_O.shape[-1]).T,
        b_O=attn.b_O,
        q_norm=_norm_of(getattr(attn, "q_norm", None)),
        k_norm=_norm_of(getattr(attn, "k_norm", None)), attend=attend,
        window=int(cfg.window_size) if attn.attn_type == "local" else None, attn=attn)


def _layer(block: Any) -> _Layer:
    return _Layer(
        ln1=_norm_of(block.ln1), ln1_post=_norm_of(getattr(block, "ln1_post", None)),
        ln2=_norm_of(getattr(block, "ln2", None)),
        ln2_post=_norm_of(getattr(block, "ln2_post", None)), mlp=_mlp_of(block),
        **_attention_of(block.attn))


@dataclass(frozen=True)
class PrefixKV:
    """The cached prefix of a batch's rows, as the lean forward reads it."""

    keys: list[Float[torch.Tensor, "batch pos kv_head d_head"]]
    """Per layer: the prefix keys (before rotary, after any QK-norm, as TransformerLens caches
    them)."""
    values: list[Float[torch.Tensor, "batch pos kv_head d_head"]]
    mask: Bool[torch.Tensor, "batch pos"]
    """Which prefix positions are tokens (False: left padding)."""


@dataclass(frozen=True)
class _Geometry:
    """Where the suffix sits: positions (TransformerLens's: from the attention mask, padding
    at 0) and which keys each suffix query may see, per attention window."""

    q_pos: Int[torch.Tensor, "batch s"]
    k_pos: Int[torch.Tensor, "batch key"]
    allowed: dict[int | None, Bool[torch.Tensor, "batch s key"]]


class SuffixRunner:
    """The lean suffix forward for one evaluator (module docstring)."""

    def __init__(self, model: Any, tail_ids: list[int]) -> None:
        cfg = model.cfg
        self.cfg = cfg
        self.layers = [_layer(b) for b in model.blocks]
        self.windows = {layer.window for layer in self.layers}
        self.ln_final = _norm_of(getattr(model, "ln_final", None))
        cap = cfg.output_logits_soft_cap
        self.cap_logits = partial(_softcap, cap=float(cap)) if cap is not None and cap > 0 \
            else _identity
        self.W_U, self.b_U, self.W_E = model.W_U, model.b_U, model.W_E
        self.tail = model.W_E[torch.tensor(tail_ids, device=model.W_E.device)]
        """Embeddings of the suffix after the label slots (fixed)."""
        self.n_heads, self.n_kv = cfg.n_heads, cfg.n_key_value_heads or cfg.n_heads
        self.d_head, self.rot = cfg.d_head, cfg.rotary_dim
        self.adjacent = bool(cfg.rotary_adjacent_pairs)
        rotary = cfg.positional_embedding_type == "rotary"
        self.W_pos = None if rotary else model.W_pos
        self._embed_positions = self._as_is if rotary else self._absolute
        self._place_keys = self._rotary if rotary else self._unrotated

    # ------------------------------------------------------------------ positions
    def _as_is(self, x: torch.Tensor, geo: _Geometry) -> torch.Tensor:
        return x

    def _absolute(self, x: Float[torch.Tensor, "batch s d_model"], geo: _Geometry
                  ) -> Float[torch.Tensor, "batch s d_model"]:
        """Learned absolute positions (GPT-2), the suffix's continuing after each row's
        prefix tokens, as TransformerLens's cached and full paths number them."""
        assert self.W_pos is not None  # absolute positions only
        return x + self.W_pos[geo.q_pos]

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """TransformerLens's rotary: the first `rotary_dim` dimensions, at the given angles."""
        x_rot, x_pass = x[..., : self.rot], x[..., self.rot :]
        if self.adjacent:
            flip = torch.stack([-x_rot[..., 1::2], x_rot[..., ::2]], dim=-1).flatten(-2)
        else:
            n = self.rot // 2
            flip = torch.cat([-x_rot[..., n:], x_rot[..., :n]], dim=-1)
        out = x_rot * cos + flip * sin
        return out if x_pass.shape[-1] == 0 else torch.cat([out, x_pass], dim=-1)

    def _rotary(self, layer: _Layer, q: torch.Tensor, k_pre: torch.Tensor, k_new: torch.Tensor,
                geo: _Geometry) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and all keys rotated to their positions (the layer's own tables: Gemma 3's
        local and global layers have their own bases)."""
        table_cos, table_sin = self._tables(layer, int(geo.k_pos.max()) + 1)
        qp = geo.q_pos if q.shape[1] == geo.q_pos.shape[1] else geo.q_pos[:, -1:]
        q = self._rotate(q, table_cos[qp][:, :, None], table_sin[qp][:, :, None])
        # The prefix keys are rotated apart from the suffix's: they need no gradient, so the
        # backward pass never touches them.
        p = k_pre.shape[1]
        at = geo.k_pos[:, p:]
        k_new = self._rotate(k_new, table_cos[at][:, :, None], table_sin[at][:, :, None])
        if p and k_pre.stride(0) == 0 and bool((geo.k_pos[:, p - 1] == p - 1).all()):
            # One prefix broadcast to every row, all tokens (the prefix pass's shared part):
            # the same positions in every row, rotated once.
            k_pre = self._rotate(k_pre[:1], table_cos[None, :p, None],
                                 table_sin[None, :p, None]).expand(len(k_pre), -1, -1, -1)
        else:
            at = geo.k_pos[:, :p]
            k_pre = self._rotate(k_pre, table_cos[at][:, :, None], table_sin[at][:, :, None])
        return q, torch.cat([k_pre, k_new], dim=1)

    def _unrotated(self, layer: _Layer, q: torch.Tensor, k_pre: torch.Tensor,
                   k_new: torch.Tensor, geo: _Geometry) -> tuple[torch.Tensor, torch.Tensor]:
        return q, torch.cat([k_pre, k_new], dim=1)

    @staticmethod
    def _tables(layer: _Layer, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's rotary cos/sin tables, extended as TransformerLens extends them when
        the positions reach past their end."""
        attn = layer.attn
        if length > attn.rotary_cos.shape[0]:
            attn._extend_rotary_embeddings(min(attn.cfg.n_ctx,
                                               max(length, 2 * attn.rotary_cos.shape[0])))
        return attn.rotary_cos, attn.rotary_sin

    def _geometry(self, kv: PrefixKV, s: int,
                  new_mask: Bool[torch.Tensor, "batch s"] | None = None) -> _Geometry:
        """Positions of the new queries and of all keys, and the keys each query may see:
        tokens only, causal, and within each local window (counted in positions).

        `new_mask` marks which new positions are tokens (the prefix pass's left padding; None:
        all, the suffix). A padding query sees itself too, so that no row is fully masked
        (its output is never read: no token sees padding)."""
        b, p = kv.mask.shape
        device = kv.mask.device
        new = torch.ones(b, s, dtype=torch.bool, device=device) if new_mask is None \
            else new_mask.to(device).bool()
        full = torch.cat([kv.mask, new], dim=1)
        k_pos = (full.long().cumsum(1) - 1).clamp_min(0)
        q_pos = k_pos[:, p:]
        causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()
        own = causal.expand(b, s, s) if new_mask is None else \
            (causal & new[:, None, :]) | torch.eye(s, dtype=torch.bool, device=device)
        seen = torch.cat([kv.mask[:, None, :].expand(b, s, p), own], dim=-1)
        allowed = {w: seen if w is None else seen & (q_pos[:, :, None] - k_pos[:, None] < w)
                   for w in self.windows}
        return _Geometry(q_pos, k_pos, allowed)

    # ------------------------------------------------------------------ a block
    def _attend(self, layer: _Layer, h: torch.Tensor, k_pre: torch.Tensor, v_pre: torch.Tensor,
                geo: _Geometry, last_only: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention of the new positions `h` over the prefix and the new positions so far;
        also the new positions' keys (before rotary, as TransformerLens caches them) and
        values."""
        b, s, _ = h.shape
        k_new = layer.k_norm(
            F.linear(h, _flat(layer.W_K), layer.b_K).view(b, s, self.n_kv, self.d_head))
        v_new = F.linear(h, _flat(layer.W_V), layer.b_V).view(b, s, self.n_kv, self.d_head)
        qh = h[:, -1:] if last_only else h
        q = layer.q_norm(F.linear(qh, _flat(layer.W_Q), layer.b_Q).view(
            b, qh.shape[1], self.n_heads, self.d_head))
        q, k = self._place_keys(layer, q, k_pre, k_new, geo)
        v = torch.cat([v_pre, v_new], dim=1)
        allowed = geo.allowed[layer.window]
        allowed = allowed[:, None, -1:] if last_only else allowed[:, None]
        z = layer.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), allowed)
        z = z.transpose(1, 2).reshape(b, qh.shape[1], self.n_heads * self.d_head)
        return F.linear(z, layer.W_O, layer.b_O), k_new, v_new

    # ------------------------------------------------------------------ public
    def _blocks(self, kv: PrefixKV, x: Float[torch.Tensor, "batch s d_model"],
                geo: _Geometry, keep: bool
                ) -> tuple[Float[torch.Tensor, "batch d_model"], list[torch.Tensor],
                           list[torch.Tensor]]:
        """Every block over the new positions `x` (the last layer for the last position only:
        nothing else of it is read); the residual stream at the last position, and with
        `keep` the new positions' keys and values per layer."""
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            last = i == n - 1
            a, k, v = self._attend(layer, layer.ln1(x), kv.keys[i], kv.values[i], geo, last)
            if keep:
                keys.append(k)
                values.append(v)
            x = (x[:, -1:] if last else x) + layer.ln1_post(a)
            if layer.mlp is not None:
                x = x + layer.ln2_post(layer.mlp(layer.ln2(x)))
        return x[:, -1], keys, values

    def _unembed(self, x: Float[torch.Tensor, "batch d_model"],
                 columns: Int[torch.Tensor, " k"] | None) -> Float[torch.Tensor, "batch cols"]:
        W_U, b_U = ((self.W_U, self.b_U) if columns is None
                    else (self.W_U[:, columns], self.b_U[columns]))
        out = self.cap_logits(self.ln_final(x) @ W_U + b_U)
        return out.to(torch.promote_types(out.dtype, torch.float32))

    # ------------------------------------------------------------------ public
    def logits(self, kv: PrefixKV, label_embeds: Float[torch.Tensor, "batch slot d_model"],
               columns: Int[torch.Tensor, " k"] | None = None
               ) -> Float[torch.Tensor, "batch cols"]:
        """Logits at the prompt's last position, the label slots holding `label_embeds`; of
        the vocabulary's `columns` only (the unembedding of the rest is skipped), or all."""
        b = label_embeds.shape[0]
        x = torch.cat([label_embeds.to(self.tail.dtype),
                       self.tail[None].expand(b, -1, -1)], dim=1)
        geo = self._geometry(kv, x.shape[1])
        x, _, _ = self._blocks(kv, self._embed_positions(x, geo), geo, keep=False)
        return self._unembed(x, columns)

    @torch.no_grad()
    def prefix(self, kv: PrefixKV | None, tokens: Int[torch.Tensor, "batch s"],
               mask: Int[torch.Tensor, "batch s"]
               ) -> tuple[list[torch.Tensor], list[torch.Tensor],
                          Float[torch.Tensor, "batch d_vocab"]]:
        """The prefix pass: `tokens` (left-padded, `mask`) after the cached `kv` (the part
        every prefix shares; None: nothing). Returns their keys and values per layer, as
        TransformerLens caches them (keys before rotary), and the logits at the last
        position (a token: the padding is on the left)."""
        b, s = tokens.shape
        device = self.W_E.device
        if kv is None:
            empty = torch.zeros(b, 0, self.n_kv, self.d_head, dtype=self.W_E.dtype,
                                device=device)
            kv = PrefixKV([empty] * len(self.layers), [empty] * len(self.layers),
                          torch.zeros(b, 0, dtype=torch.bool, device=device))
        geo = self._geometry(kv, s, mask)
        x = self._embed_positions(self.W_E[tokens.to(device)], geo)
        x, keys, values = self._blocks(kv, x, geo, keep=True)
        return keys, values, self._unembed(x, None)


def prefix_kv(keys: list[torch.Tensor], values: list[torch.Tensor],
              mask: Int[torch.Tensor, "batch pos"]) -> PrefixKV:
    return PrefixKV(keys, values, mask.bool())
