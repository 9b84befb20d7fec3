"""A lean forward of the prompt's suffix (label slots and tail) over the prefix cache.

TransformerLens runs a cached step through its modules: hook points, einops rearrangements
and weight transposes on every call, rotary embeddings re-applied to every cached key, masks
rebuilt. On a small evaluator that overhead is most of the step; on a large one it is kernel
launches. `SuffixRunner` does the same arithmetic directly for the Llama family of
HookedTransformers (RMSNorm, rotary embeddings, grouped-query or multi-head attention, gated or
plain MLP): weights laid out once, the tail's token embeddings looked up once, the last layer
run for the last position only (the only one read), attention through
``scaled_dot_product_attention``. It is exact: the same logits as TransformerLens's cached and
full-prompt paths, tested to 1e-12 in float64 (`tests/test_suffix.py`).

Any other architecture (LayerNorm, softcaps, QK-norm, local attention, ...) keeps the
TransformerLens path; `SuffixRunner.unsupported` says why, and the cache logs it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

# (config field, the value it must have) for the lean forward to be TransformerLens's forward.
_REQUIRED: tuple[tuple[str, Any], ...] = (
    ("positional_embedding_type", "rotary"), ("attn_only", False),
    ("parallel_attn_mlp", False), ("use_normalization_before_and_after", False),
    ("post_embedding_ln", False), ("num_experts", None), ("use_qk_norm", False),
    ("clip_qkv", None), ("use_logn_attn", False), ("use_dynamic_ntk_rope", False),
    ("use_local_attn", False), ("window_size", None), ("attention_dir", "causal"),
    ("use_attention_sinks", False), ("use_split_qkv_input", False), ("use_attn_in", False),
    ("load_in_4bit", False), ("scale_attn_by_inverse_layer_idx", False),
    ("ungroup_grouped_query_attention", False), ("n_devices", 1),
)


def unsupported(model: Any) -> str | None:
    """Why the lean forward cannot stand in for `model`'s, or None when it can."""
    cfg = model.cfg
    if type(model).__name__ != "HookedTransformer":
        return f"the evaluator is a {type(model).__name__}, not a HookedTransformer"
    if cfg.normalization_type not in ("RMS", "RMSPre"):
        return f"normalization_type is {cfg.normalization_type!r} (supported: RMS, RMSPre)"
    for name, want in _REQUIRED:
        if getattr(cfg, name, want) != want:
            return f"{name} is {getattr(cfg, name)!r} (supported: {want!r})"
    if cfg.attn_types is not None and set(cfg.attn_types) != {"global"}:
        return "some layers use local attention"
    if cfg.attn_scores_soft_cap > 0 or cfg.output_logits_soft_cap > 0:
        return "the model soft-caps attention scores or logits"
    if cfg.is_layer_norm_activation():
        return f"act_fn {cfg.act_fn!r} normalises inside the MLP"
    hooked = [name for name, m in model.named_modules()
              if getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None)]
    if hooked:
        # The lean forward calls no module: hooks the user attached would not run.
        return f"hooks are attached to the evaluator ({', '.join(hooked[:3]) or 'the model'})"
    arch = str(cfg.original_architecture or "")
    if arch.startswith(("Gemma", "Olmo")):
        return f"{arch} scales embeddings or normalises queries and keys"
    return None


@dataclass(frozen=True)
class _Layer:
    ln1: Float[torch.Tensor, " d_model"] | None
    ln2: Float[torch.Tensor, " d_model"] | None
    W_Q: Float[torch.Tensor, "hd d_model"]
    b_Q: Float[torch.Tensor, " hd"]
    W_K: Float[torch.Tensor, "kd d_model"]
    b_K: Float[torch.Tensor, " kd"]
    W_V: Float[torch.Tensor, "kd d_model"]
    b_V: Float[torch.Tensor, " kd"]
    W_O: Float[torch.Tensor, "d_model hd"]
    b_O: Float[torch.Tensor, " d_model"]
    W_gate: Float[torch.Tensor, "d_mlp d_model"] | None
    W_in: Float[torch.Tensor, "d_mlp d_model"]
    b_in: Float[torch.Tensor, " d_mlp"]
    W_out: Float[torch.Tensor, "d_model d_mlp"]
    b_out: Float[torch.Tensor, " d_model"]
    act: Any
    scale: float
    attn: Any
    """The block's attention module: its rotary tables, read at each call (TransformerLens
    replaces them with longer ones when a longer input comes)."""


def _flat(w: torch.Tensor) -> torch.Tensor:
    """[heads, d_model, d_head] -> F.linear's [(heads d_head), d_model], contiguous."""
    return w.permute(0, 2, 1).reshape(-1, w.shape[1]).contiguous()


def _layer(block: Any) -> _Layer:
    attn, mlp = block.attn, block.mlp
    grouped = hasattr(attn, "_W_K")
    W_K, b_K = (attn._W_K, attn._b_K) if grouped else (attn.W_K, attn.b_K)
    W_V, b_V = (attn._W_V, attn._b_V) if grouped else (attn.W_V, attn.b_V)
    gated = hasattr(mlp, "W_gate")
    return _Layer(
        ln1=getattr(block.ln1, "w", None), ln2=getattr(block.ln2, "w", None),
        W_Q=_flat(attn.W_Q), b_Q=attn.b_Q.reshape(-1), W_K=_flat(W_K), b_K=b_K.reshape(-1),
        W_V=_flat(W_V), b_V=b_V.reshape(-1),
        W_O=attn.W_O.reshape(-1, attn.W_O.shape[-1]).T.contiguous(), b_O=attn.b_O,
        W_gate=mlp.W_gate.T.contiguous() if gated else None, W_in=mlp.W_in.T.contiguous(),
        b_in=mlp.b_in, W_out=mlp.W_out.T.contiguous(), b_out=mlp.b_out, act=mlp.act_fn,
        scale=float(attn.attn_scale), attn=attn)


@dataclass(frozen=True)
class PrefixKV:
    """The cached prefix of a batch's rows, as the lean forward reads it."""

    keys: list[Float[torch.Tensor, "batch pos kv_head d_head"]]
    """Per layer: the prefix keys (before rotary, as TransformerLens caches them)."""
    values: list[Float[torch.Tensor, "batch pos kv_head d_head"]]
    mask: Bool[torch.Tensor, "batch pos"]
    """Which prefix positions are tokens (False: left padding)."""


class SuffixRunner:
    """The lean suffix forward for one evaluator (module docstring)."""

    def __init__(self, model: Any, tail_ids: list[int]) -> None:
        cfg = model.cfg
        self.cfg = cfg
        self.layers = [_layer(b) for b in model.blocks]
        self.ln_final = getattr(model.ln_final, "w", None)
        self.W_U, self.b_U = model.W_U, model.b_U
        self.tail = model.W_E[torch.tensor(tail_ids, device=model.W_E.device)]
        """Embeddings of the suffix after the label slots (fixed)."""
        self.n_heads, self.n_kv = cfg.n_heads, cfg.n_key_value_heads or cfg.n_heads
        self.d_head, self.rot = cfg.d_head, cfg.rotary_dim
        self.adjacent = bool(cfg.rotary_adjacent_pairs)

    # ------------------------------------------------------------------ pieces
    def _norm(self, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        dtype = x.dtype
        if dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        x = (x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).sqrt()).to(dtype)
        return x if w is None else x * w

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

    def _attend(self, layer: _Layer, h: torch.Tensor, k_pre: torch.Tensor, v_pre: torch.Tensor,
                geo: tuple[torch.Tensor, ...], last_only: bool) -> torch.Tensor:
        """Attention of the suffix positions `h` over the prefix and the suffix so far."""
        b, s, _ = h.shape
        q_pos, k_pos, allowed = geo
        k_new = F.linear(h, layer.W_K, layer.b_K).view(b, s, self.n_kv, self.d_head)
        v_new = F.linear(h, layer.W_V, layer.b_V).view(b, s, self.n_kv, self.d_head)
        qh = h[:, -1:] if last_only else h
        q = F.linear(qh, layer.W_Q, layer.b_Q).view(b, qh.shape[1], self.n_heads, self.d_head)
        qp = q_pos[:, -1:] if last_only else q_pos
        table_cos, table_sin = self._tables(layer, int(k_pos.max()) + 1)
        q = self._rotate(q, table_cos[qp][:, :, None], table_sin[qp][:, :, None])
        # The prefix keys are rotated apart from the suffix's: they need no gradient, so the
        # backward pass never touches them.
        p = k_pre.shape[1]
        cos, sin = table_cos[k_pos][:, :, None], table_sin[k_pos][:, :, None]
        k = torch.cat([self._rotate(k_pre, cos[:, :p], sin[:, :p]),
                       self._rotate(k_new, cos[:, p:], sin[:, p:])], dim=1)
        v = torch.cat([v_pre, v_new], dim=1)
        mask = allowed[:, None, -1:] if last_only else allowed[:, None]
        z = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            scale=1.0 / layer.scale, enable_gqa=self.n_kv != self.n_heads)
        z = z.transpose(1, 2).reshape(b, qh.shape[1], self.n_heads * self.d_head)
        return F.linear(z, layer.W_O, layer.b_O)

    @staticmethod
    def _tables(layer: _Layer, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's rotary cos/sin tables, extended as TransformerLens extends them when
        the positions reach past their end."""
        attn = layer.attn
        if length > attn.rotary_cos.shape[0]:
            attn._extend_rotary_embeddings(min(attn.cfg.n_ctx,
                                               max(length, 2 * attn.rotary_cos.shape[0])))
        return attn.rotary_cos, attn.rotary_sin

    def _mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        if layer.W_gate is not None:
            post = layer.act(F.linear(x, layer.W_gate)) * F.linear(x, layer.W_in) + layer.b_in
        else:
            post = layer.act(F.linear(x, layer.W_in, layer.b_in))
        return F.linear(post, layer.W_out, layer.b_out)

    def _geometry(self, kv: PrefixKV, s: int) -> tuple[torch.Tensor, ...]:
        """Rotary positions of the suffix queries and of all keys (TransformerLens's: from the
        attention mask, padding at 0), and which keys each query may see."""
        b, p = kv.mask.shape
        device = kv.mask.device
        full = torch.cat([kv.mask, torch.ones(b, s, dtype=torch.bool, device=device)], dim=1)
        k_pos = (full.long().cumsum(1) - 1).clamp_min(0)
        causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()
        allowed = torch.cat([kv.mask[:, None, :].expand(b, s, p), causal.expand(b, s, s)],
                            dim=-1)
        return k_pos[:, p:], k_pos, allowed

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
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            last = i == n - 1  # the last layer: only the last position is read
            a = self._attend(layer, self._norm(x, layer.ln1), kv.keys[i], kv.values[i], geo,
                             last)
            x = (x[:, -1:] if last else x) + a
            x = x + self._mlp(layer, self._norm(x, layer.ln2))
        W_U, b_U = ((self.W_U, self.b_U) if columns is None
                    else (self.W_U[:, columns], self.b_U[columns]))
        out = self._norm(x[:, -1], self.ln_final) @ W_U + b_U
        return out.to(torch.promote_types(out.dtype, torch.float32))


def prefix_kv(keys: list[torch.Tensor], values: list[torch.Tensor],
              mask: Int[torch.Tensor, "batch pos"]) -> PrefixKV:
    return PrefixKV(keys, values, mask.bool())
