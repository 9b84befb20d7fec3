"""`label_sae_features`: an SAE, its subject model, an evaluator and a corpus in; a `LabelSet`
out. This is what ``sae.label_features(...)`` runs.

Stages: activation cache (`activations.py`) -> examples (`examples.py`, `render.py`, with
words crossing tokenizers by `words.py`) -> token-space gradient descent (the core
`label_features_data`, several features per optimisation) -> `LabelSet`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..config import LabelConfig
from ..data import FeatureData, FeatureDataError
from ..evaluator import Evaluator
from ..labeler import label_features_data
from ..result import LabelResult
from .activations import build_activation_cache
from .cache import ActivationCache
from .config import CacheConfig, ExampleConfig
from .corpus import Corpus
from .examples import RandomPool, Selection, select_examples
from .labelset import LabelSet, status_result
from .names import METHOD, PAPER
from .render import RenderedFeature, contexts_needed, render_feature
from .words import WordDecoder

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

log = logging.getLogger(__name__)


def resolve_features(features: int | Iterable[int] | None, d_sae: int) -> list[int]:
    """`None` -> all features; an int or an iterable of ints, each in ``[0, d_sae)``."""
    if features is None:
        return list(range(d_sae))
    if isinstance(features, int):
        features = [features]
    out: list[int] = []
    for f in features:
        if isinstance(f, bool) or not isinstance(f, int) and not hasattr(f, "__index__"):
            raise TypeError(f"features must be ints (feature indices), got {f!r}")
        f = int(f)
        if not 0 <= f < d_sae:
            raise ValueError(f"feature {f} is out of range: this SAE has d_sae={d_sae} "
                             f"features (0..{d_sae - 1}).")
        out.append(f)
    if not out:
        raise ValueError("features is empty; pass None for all features.")
    return list(dict.fromkeys(out))


def _check_inputs(sae: Any, model: Any, evaluator: Any) -> Evaluator:
    from sae_lens.saes.sae import SAE

    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be a sae_lens SAE, got {type(sae).__name__}.")
    if not hasattr(model, "run_with_hooks") or getattr(model, "tokenizer", None) is None:
        raise TypeError(
            "model must be the subject HookedTransformer (with its tokenizer) the SAE was "
            f"trained on, got {type(model).__name__}."
        )
    if isinstance(evaluator, Evaluator):
        return evaluator
    if hasattr(evaluator, "run_with_hooks"):
        return Evaluator(evaluator)
    raise TypeError(f"evaluator must be an stl.Evaluator (or a HookedTransformer with a chat "
                    f"template), got {type(evaluator).__name__}.")


def _identity(sae: Any, model: Any, evaluator: Evaluator, corpus: Corpus) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the same SAE, models and corpus."""
    from .fingerprint import digest

    meta = sae.cfg.metadata
    return {"sae": digest([sae.cfg.architecture(), int(sae.cfg.d_in), int(sae.cfg.d_sae),
                           meta.hook_name, meta.hook_head_index, meta.model_name]),
            "model": str(model.cfg.model_name), "evaluator": evaluator.name,
            "corpus": digest(corpus.fingerprint())}


def _info(sae: Any, model: Any, evaluator: Evaluator, corpus: Corpus, cache: ActivationCache,
          config: LabelConfig, ex: ExampleConfig) -> dict[str, Any]:
    from .. import __version__

    meta = sae.cfg.metadata
    return {
        "identity": _identity(sae, model, evaluator, corpus),
        "method": METHOD,
        "paper": PAPER,
        "version": __version__,
        "evaluator": evaluator.name,
        "model_name": str(model.cfg.model_name),
        "sae_model_name": meta.model_name,
        "hook_name": meta.hook_name,
        "hook_head_index": meta.hook_head_index,
        "neuronpedia_id": meta.neuronpedia_id,
        "architecture": sae.cfg.architecture(),
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "corpus": corpus.describe(),
        "n_tokens": cache.n_tokens,
        "context_size": cache.meta["context_size"],
        "prepend_bos": cache.meta["prepend_bos"],
        "activation_cache": str(cache.directory),
        "label_config": config.to_dict(),
        "example_config": ex.to_dict(),
    }


def _extra(sel: Selection, pool: RandomPool, rendered: RenderedFeature | None,
           ex: ExampleConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"activation": {
        "max": sel.max_activation,
        "n_active_tokens": sel.n_active,
        "frequency": sel.n_active / pool.n_tokens if pool.n_tokens else 0.0,
    }}
    if rendered is not None:
        out["example_counts"] = dict(Counter(rendered.kinds))
        out["dropped"] = dict(rendered.dropped)
        out["words"] = list(rendered.words.values())
        out["merged_words"] = sum(w["merged"] for w in out["words"])
        if ex.keep_examples:
            out["examples"] = rendered.records()
    return out


def _prepare(sel: Selection, pool: RandomPool, contexts: dict[int, list[int]],
             decoder: WordDecoder, ex: ExampleConfig, special: set[int], config: LabelConfig,
             evaluator: Evaluator, n_tokens: int) -> tuple[FeatureData | None, LabelResult | None,
                                                           RenderedFeature | None]:
    """The feature's data, or the result saying why it cannot be labeled."""
    if sel.dead:
        return None, status_result(sel.feature, "dead", f"Feature {sel.feature} never fires on "
                                   f"the corpus ({n_tokens} tokens).",
                                   **_extra(sel, pool, None, ex)), None
    rendered = render_feature(sel, pool, contexts, decoder, ex, special, evaluator.placeholder)
    try:
        data = FeatureData.from_examples(rendered.examples, name=sel.feature)
        data.check_labelable(data.examples(config.threshold, config.threshold_fraction,
                                           config.strip_word))
    except FeatureDataError as err:
        return None, status_result(sel.feature, "unlabelable", str(err),
                                   **_extra(sel, pool, rendered, ex)), rendered
    return data, None, rendered


def _load_checkpoint(path: Path, config: LabelConfig, ex: ExampleConfig,
                     identity: dict[str, Any]) -> LabelSet:
    if not path.exists():
        return LabelSet()
    done = LabelSet.load(path)
    for key, want in (("identity", identity), ("label_config", config.to_dict()),
                      ("example_config", ex.to_dict())):
        if done.info.get(key) != want:
            what = {"identity": "another SAE, model, evaluator or corpus"}.get(
                key, f"another {key.replace('_', ' ')}")
            raise ValueError(
                f"The checkpoint {path} was made with {what}. Pass the same inputs and "
                "settings to resume, or another checkpoint path to start afresh."
            )
    return done


def label_sae_features(
    sae: Any,
    model: HookedTransformer,
    evaluator: Evaluator | HookedTransformer,
    corpus: Corpus | Sequence[str] | str | Path,
    features: int | Iterable[int] | None = None,
    config: LabelConfig | None = None,
    *,
    cache: CacheConfig | None = None,
    examples: ExampleConfig | None = None,
    features_per_batch: int = 8,
    checkpoint: str | Path | None = None,
    progress: bool | None = None,
) -> LabelSet:
    """Label features of `sae` (None: all) from the subject `model`'s activations on `corpus`.

    `config` drives the optimisation (the core `LabelConfig`); `cache` the activation cache;
    `examples` which tokens are rated. `features_per_batch` features share each optimisation
    (their rows share every forward pass). With `checkpoint` (a file), results are saved after
    every batch and features already there are not labeled again. Features that never fire,
    or have nothing to tell apart, get a result whose `status` says so (`dead`,
    `unlabelable`) instead of an error.
    """
    evaluator = _check_inputs(sae, model, evaluator)
    config = config or LabelConfig()
    ex = examples or ExampleConfig()
    if features_per_batch < 1:
        raise ValueError(f"features_per_batch must be >= 1, got {features_per_batch}")
    feats = resolve_features(features, int(sae.cfg.d_sae))
    corpus = Corpus.of(corpus)
    if sae.cfg.metadata.model_name and sae.cfg.metadata.model_name != model.cfg.model_name:
        log.warning("the SAE was trained on %r but the subject model is %r",
                    sae.cfg.metadata.model_name, model.cfg.model_name)

    labels = LabelSet()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None:
        labels = _load_checkpoint(ckpt, config, ex, _identity(sae, model, evaluator, corpus))
    todo = [f for f in feats if f not in labels]
    if not todo:
        return _subset(labels, feats)

    act_cache = build_activation_cache(model, sae, corpus, None if features is None else feats,
                                       cache, progress)
    labels.info = _info(sae, model, evaluator, corpus, act_cache, config, ex)
    sels, pool = select_examples(act_cache, todo, ex, progress)
    decoder = WordDecoder(model.tokenizer, strip=config.strip_word, max_merge=ex.max_merge)
    special = act_cache.special_ids

    with tqdm(total=len(todo), unit="feature", desc="labels",
              disable=None if progress is None else not progress) as bar:
        try:
            _label_batches(todo, sels, pool, act_cache, decoder, ex, special, config, evaluator,
                           labels, features_per_batch, ckpt, bar)
        except BaseException as err:
            done = len(labels)
            if done:
                err.add_note(
                    f"saelens_tokenlabel: {done} features were labeled before this error"
                    + (f"; they are saved in {ckpt} and a rerun resumes from there." if ckpt
                       else "; pass checkpoint=<file> to keep finished features across runs.")
                )
            raise
    return _subset(labels, feats)


def _label_batches(todo: list[int], sels: dict[int, Selection], pool: RandomPool,
                   act_cache: ActivationCache, decoder: WordDecoder, ex: ExampleConfig,
                   special: set[int], config: LabelConfig, evaluator: Evaluator,
                   labels: LabelSet, features_per_batch: int, ckpt: Path | None,
                   bar: Any) -> None:
    """Label `todo` in groups that share an optimisation, adding results to `labels`."""
    for start in range(0, len(todo), features_per_batch):
        group = todo[start : start + features_per_batch]
        needed = set().union(*(contexts_needed(sels[f], pool) for f in group))
        contexts = act_cache.contexts(sorted(needed))
        ready: list[tuple[FeatureData, Selection, RenderedFeature]] = []
        for f in group:
            data, failed, rendered = _prepare(sels[f], pool, contexts, decoder, ex, special,
                                              config, evaluator, pool.n_tokens)
            if failed is not None:
                failed.evaluator = evaluator.name or ""
                labels.add(failed)
            else:
                assert data is not None and rendered is not None
                ready.append((data, sels[f], rendered))
        if ready:
            results = label_features_data([d for d, _, _ in ready], evaluator, config)
            for result, (_, sel, rendered) in zip(results, ready, strict=True):
                result.extra.update(_extra(sel, pool, rendered, ex))
                labels.add(result)
        if ckpt is not None:
            labels.save(ckpt)
        bar.update(len(group))


def _subset(labels: LabelSet, feats: list[int]) -> LabelSet:
    """The requested features only (a checkpoint may hold more)."""
    if set(labels) <= set(feats):
        return labels
    return LabelSet([labels[f] for f in feats if f in labels], labels.info)
