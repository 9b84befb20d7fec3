"""`label_sae_features`: an SAE, its subject model, an evaluator and a corpus in; a `LabelSet`
out. This is what ``sae.label_features(...)`` runs.

Stages: activation cache (`activations.py`) -> examples (`examples.py`, `render.py`, with
words crossing tokenizers by `words.py`) -> token-space gradient descent (the core
`label_features_data`, several features per optimisation, in `label_batch`) -> `LabelSet`.

Where results go while the run goes on: a `RunStore` (``run_dir``, SQLite; a rerun resumes
from it), or the legacy JSON ``checkpoint``, or only memory. With ``ray=`` the batches are
labeled by Ray actors (`saelens_tokenlabel.run.ray_backend`) and come back to the same store.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from tqdm.auto import tqdm

from ..config import LabelConfig
from ..data import FeatureData, FeatureDataError
from ..evaluator import Evaluator
from ..features import resolve_features
from ..labeler import label_features_data
from ..labelset import LabelSet, status_result
from ..names import METHOD, PAPER
from ..records import FeatureExtra
from ..result import LabelResult
from ..sae.activations import build_activation_cache
from ..sae.cache import ActivationCache
from ..sae.config import CacheConfig, ExampleConfig
from ..sae.corpus import Corpus
from ..sae.examples import RandomPool, Selection, select_examples
from ..sae.extras import feature_extra
from ..sae.render import RenderedFeature, contexts_needed, render_feature
from ..sae.scoring import ScoreConfig, add_sae_scores
from ..sae.words import WordDecoder

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from .ray_backend import RayConfig
    from .store import RunStore

Order = Literal["index", "attribution"]
ORDERS = ("index", "attribution")

log = logging.getLogger(__name__)


def _check_inputs(sae: Any, model: Any, evaluator: Any) -> Evaluator:
    # Types, hook, d_in and chat template, before any expensive work (see validate.py).
    from ..sae.validate import validate_inputs

    return validate_inputs(sae, model, evaluator)


def _identity(sae: Any, model: Any, evaluator: Evaluator, corpus: Corpus) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the same SAE, models and corpus."""
    from ..sae.fingerprint import digest

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


def _prepare(sel: Selection, pool: RandomPool, contexts: dict[int, list[int]],
             decoder: WordDecoder, ex: ExampleConfig, special: set[int], config: LabelConfig,
             evaluator: Evaluator, n_tokens: int) -> tuple[FeatureData | None, LabelResult | None,
                                                           RenderedFeature | None]:
    """The feature's data, or the result saying why it cannot be labeled."""
    bad = sel.status(n_tokens)  # dead, or activations that were NaN/inf
    if bad is not None:
        return None, status_result(sel.feature, *bad, feature_extra(sel, pool, None, ex)), None
    rendered = render_feature(sel, pool, contexts, decoder, ex, special, evaluator.placeholder,
                              spellable=evaluator.can_spell)
    try:
        data = FeatureData.from_examples(rendered.examples, name=sel.feature)
        data.check_labelable(data.examples(config.threshold, config.threshold_fraction,
                                           config.strip_word))
    except FeatureDataError as err:
        return None, status_result(sel.feature, "unlabelable", str(err) + rendered.drop_note(),
                                   feature_extra(sel, pool, rendered, ex)), rendered
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
    run_dir: str | Path | RunStore | None = None,
    checkpoint: str | Path | None = None,
    order: Order = "index",
    ray: RayConfig | str | bool | None = None,
    scores: ScoreConfig | None = None,
    progress: bool | None = None,
) -> LabelSet:
    """Label features of `sae` (None: all) from the subject `model`'s activations on `corpus`.

    `config` drives the optimisation (the core `LabelConfig`); `cache` the activation cache;
    `examples` which tokens are rated. `features_per_batch` features share each optimisation
    (their rows share every forward pass).

    `run_dir` (a folder; the store is ``run_dir/run.sqlite``) keeps every result as soon as its
    batch is done; a rerun with the same inputs and settings skips finished features, and one
    with others is an error. `checkpoint` (a JSON file, the older format) does the same by
    rewriting the file after every batch; with `run_dir` too it is only read, to seed the
    store. `order`: ``"index"``, or ``"attribution"`` (largest attribution score first, see
    `saelens_tokenlabel.sae.attribution`). `ray`: a `RayConfig`, an address (``"auto"``,
    ``"ray://..."``, ``"local"``) or True: label the batches on Ray actors (one per GPU).

    `scores` (default `ScoreConfig()`): the SAE-side scores added to every result on the
    driver: the decoder direction's promoted/suppressed subject tokens
    (``extra["output_side"]``) and reflective coherence (``metrics["coherence_*"]``).
    With ``config.warm_start``, v starts from the decoder direction's logit lens
    (`sae.logit_lens.warm_start_logits`) in the first attempt.

    Features that never fire, whose activations are not finite, or have nothing to tell
    apart, get a result whose `status` says so (`dead`, `nonfinite`, `unlabelable`) instead of
    an error.
    """
    evaluator = _check_inputs(sae, model, evaluator)
    config = config or LabelConfig()
    ex = examples or ExampleConfig()
    if features_per_batch < 1:
        raise ValueError(f"features_per_batch must be >= 1, got {features_per_batch}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    feats = resolve_features(features, int(sae.cfg.d_sae))
    corpus = Corpus.of(corpus)
    ray_config = _ray_config(ray)
    if sae.cfg.metadata.model_name and sae.cfg.metadata.model_name != model.cfg.model_name:
        log.warning("the SAE was trained on %r but the subject model is %r",
                    sae.cfg.metadata.model_name, model.cfg.model_name)

    identity = _identity(sae, model, evaluator, corpus)
    labels = LabelSet()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None:
        labels = _load_checkpoint(ckpt, config, ex, identity)
    store, own_store = _open_store(run_dir, identity, config, ex)
    try:
        if store is not None:
            stored = store.finished()
            seeded = [r for f, r in labels.items() if f not in stored]
            if seeded:
                store.put(seeded)
                log.info("imported %d results from the checkpoint %s", len(seeded), ckpt)
            if labels.info and store.get_meta("info") is None:
                store.set_meta(info=labels.info)
            store.add_features(feats)
            labels = store.labelset()
            # The store (not the JSON file) is the record now; the file is written at the end.
            ckpt = None
        todo = [f for f in feats if f not in labels]
        if not todo:
            return _subset(labels, feats)
        todo = _ordered(todo, order, model, sae, corpus, cache)

        act_cache = build_activation_cache(model, sae, corpus,
                                           None if features is None else feats, cache, progress)
        labels.info = _info(sae, model, evaluator, corpus, act_cache, config, ex)
        if store is not None:
            store.set_meta(info=labels.info)
        # Select for every requested feature, in index order, not only for `todo`: the
        # quantile draws share one generator across features, so a smaller or reordered
        # list would give a resumed feature other examples than an uninterrupted run.
        sels, pool = select_examples(act_cache, sorted(feats), ex, progress)
        decoder = WordDecoder(model.tokenizer, strip=config.strip_word, max_merge=ex.max_merge)
        batches = _prepared_batches(todo, sels, pool, act_cache, decoder, ex, config,
                                    evaluator, features_per_batch,
                                    (sae, model) if config.warm_start else None)
        score_config = scores if scores is not None else ScoreConfig()
        with tqdm(total=len(todo), unit="feature", desc="labels", dynamic_ncols=True,
                  disable=None if progress is None else not progress) as bar:
            sink = _Sink(labels, store, ckpt, bar,
                         lambda rs: add_sae_scores(rs, sae, model, evaluator, score_config))
            try:
                if ray_config is None:
                    _label_batches(batches, evaluator, config, sink)
                else:
                    from .ray_backend import label_on_ray

                    label_on_ray(batches, evaluator, config, ray_config, sink)
            except BaseException as err:
                _note_saved(err, sink.n_new, store, ckpt)
                raise
        return _subset(labels, feats)
    finally:
        if own_store:
            store.close()


def _open_store(run_dir: Any, identity: dict[str, Any], config: LabelConfig,
                ex: ExampleConfig) -> tuple[RunStore | None, bool]:
    """The run store, bound to these inputs and settings (a mismatch is an error), and
    whether it was opened here (and is closed here)."""
    if run_dir is None:
        return None, False
    from .store import RunStore

    store = run_dir if isinstance(run_dir, RunStore) else RunStore(run_dir)
    try:
        store.bind({"identity": identity, "label_config": config.result_settings(),
                    "example_config": ex.to_dict()},
                   names={"identity": "another SAE, model, evaluator or corpus"})
    except BaseException:
        if store is not run_dir:
            store.close()
        raise
    return store, store is not run_dir


def _ray_config(ray: Any) -> RayConfig | None:
    if ray is None or ray is False:
        return None
    from .ray_backend import RayConfig

    if isinstance(ray, RayConfig):
        return ray
    if ray is True:
        return RayConfig()
    if isinstance(ray, str):
        return RayConfig(address=ray)
    raise TypeError(f"ray must be a RayConfig, an address string or True, got {ray!r}")


def _ordered(todo: list[int], order: Order, model: Any, sae: Any, corpus: Corpus,
             cache: CacheConfig | None) -> list[int]:
    """`todo` in labeling order: by index, or by descending attribution score (ties: index)."""
    if order == "index":
        return sorted(todo)
    from ..sae.attribution import attribution_scores

    scores = attribution_scores(model, sae, corpus, cache_config=cache,
                                max_tokens=cache.max_tokens if cache is not None else None)
    return order_by_scores(todo, scores)


def order_by_scores(features: Sequence[int], scores: Any) -> list[int]:
    """`features` by descending score (``scores[f]``, a ``[d_sae]`` tensor or sequence), ties
    and non-finite scores by index (non-finite last)."""
    import math

    vals = scores.tolist() if hasattr(scores, "tolist") else list(scores)
    if len(vals) <= max(features, default=-1):
        raise ValueError(f"attribution scores cover {len(vals)} features; the run needs "
                         f"{max(features) + 1}.")

    def key(f: int) -> tuple[int, float, int]:
        v = float(vals[f])
        return (0, -v, f) if math.isfinite(v) else (1, 0.0, f)

    return sorted(features, key=key)


# A prepared batch: its features; results for those that need no labeling (dead,
# unlabelable); for the rest, what to label and what to add to the result afterwards; and
# keyword arguments for `label_batch` (per-batch inputs computed on the driver, which travel
# to a Ray actor with the batch).
Ready = tuple[FeatureData, FeatureExtra]
Batch = tuple[list[int], list[LabelResult], list[Ready], dict[str, Any]]


def _prepared_batches(todo: list[int], sels: dict[int, Selection], pool: RandomPool,
                      act_cache: ActivationCache, decoder: WordDecoder, ex: ExampleConfig,
                      config: LabelConfig, evaluator: Evaluator,
                      features_per_batch: int, warm: tuple[Any, Any] | None = None
                      ) -> Iterator[Batch]:
    """`todo` in groups that share an optimisation, each rendered into `FeatureData`; with
    `warm` (the SAE and subject model), each batch carries its warm-start logits."""
    special = act_cache.special_ids
    for start in range(0, len(todo), features_per_batch):
        group = todo[start : start + features_per_batch]
        needed = set().union(*(contexts_needed(sels[f], pool) for f in group))
        contexts = act_cache.contexts(sorted(needed))
        failed: list[LabelResult] = []
        ready: list[Ready] = []
        for f in group:
            data, bad, rendered = _prepare(sels[f], pool, contexts, decoder, ex, special,
                                           config, evaluator, pool.n_tokens)
            if bad is not None:
                bad.evaluator = evaluator.name or ""
                failed.append(bad)
            else:
                assert data is not None and rendered is not None
                ready.append((data, feature_extra(sels[f], pool, rendered, ex)))
        kwargs: dict[str, Any] = {}
        if warm is not None and ready:
            kwargs["init_logits"] = list(_warm_start(warm, evaluator, config,
                                                     [int(d.name) for d, _ in ready]))
        yield group, failed, ready, kwargs


def _warm_start(warm: tuple[Any, Any], evaluator: Evaluator, config: LabelConfig,
                features: list[int]) -> torch.Tensor:
    from ..sae.logit_lens import warm_start_logits

    sae, model = warm
    mask = evaluator.vocab_mask(config.exclude_special, config.words_only)
    # On the CPU: the logits travel with the batch (to a Ray actor, too).
    return warm_start_logits(sae, model, evaluator, features, top_k=config.warm_start_top_k,
                             vocab_mask=mask, top_mass=config.warm_start_top_mass).cpu()


def label_batch(datas: list[FeatureData], evaluator: Evaluator, config: LabelConfig,
                **kwargs: Any) -> list[LabelResult]:
    """Label one batch of features (one shared optimisation). Runs where the evaluator is:
    in this process, or in a Ray actor. `kwargs`: the batch's own inputs from
    `_prepared_batches` (``init_logits`` with a warm start)."""
    return label_features_data(datas, evaluator, config, **kwargs)


def finish_batch(results: list[LabelResult], ready: list[Ready]) -> list[LabelResult]:
    """Driver side, after `label_batch`: add what the driver knows (examples, words,
    activation statistics) to each result."""
    return [dataclasses.replace(result, extra=result.extra.merged(extra))
            for result, (_, extra) in zip(results, ready, strict=True)]


def _label_batches(batches: Iterable[Batch], evaluator: Evaluator, config: LabelConfig,
                   sink: _Sink) -> None:
    """Label prepared batches in this process, each result stored as its batch finishes."""
    for group, failed, ready, kwargs in batches:
        sink.start(group)
        sink.put(failed)
        if not ready:
            continue
        try:
            results = label_batch([d for d, _ in ready], evaluator, config, **kwargs)
        except Exception as err:
            sink.fail([int(d.name) for d, _ in ready], err)
            raise
        sink.put(finish_batch(results, ready))


class _Sink:
    """Where finished results go: the LabelSet in memory, the run store, the JSON checkpoint,
    and the progress bar."""

    def __init__(self, labels: LabelSet, store: RunStore | None, ckpt: Path | None,
                 bar: Any, score: Callable[[list[LabelResult]], list[LabelResult]] | None = None
                 ) -> None:
        self.labels, self.store, self.ckpt, self.bar = labels, store, ckpt, bar
        self.score = score
        self.n_new = 0

    def start(self, features: list[int]) -> None:
        if self.store is not None:
            self.store.start(features)

    def put(self, results: list[LabelResult]) -> None:
        if not results:
            return
        if self.score is not None:
            # Before the store: a stored result is final (a resume never rescores it).
            results = self.score(results)
        if self.store is not None:
            self.store.put(results)
        for r in results:
            self.labels.add(r)
        if self.ckpt is not None:
            self.labels.save(self.ckpt)
        self.n_new += len(results)
        self.bar.update(len(results))
        last = results[-1]
        self.bar.set_postfix_str(f"{last.feature}: {last.label!r}" if last.status == "ok"
                                 else f"{last.feature}: {last.status}", refresh=False)
        for r in results:
            log.info("feature %s: %s %r p=%.3f", r.feature, r.status, r.label, r.probability)

    def fail(self, features: list[int], err: BaseException) -> None:
        if self.store is not None and features:
            self.store.fail(features, f"{type(err).__name__}: {err}")


def _note_saved(err: BaseException, n_new: int, store: RunStore | None,
                ckpt: Path | None) -> None:
    where = (f"they are saved in {store.path}" if store is not None else
             f"they are saved in {ckpt}" if ckpt is not None else None)
    from .store import RunStoreFullError

    if isinstance(err, RunStoreFullError):
        return  # its message says what is saved and how to resume
    if n_new or where:
        err.add_note(
            f"saelens_tokenlabel: {n_new} features were labeled before this error"
            + (f"; {where} and a rerun of the same call resumes from there." if where
               else "; pass run_dir=<folder> to keep finished features across runs.")
        )


def _subset(labels: LabelSet, feats: list[int]) -> LabelSet:
    """The requested features only (a store or checkpoint may hold more)."""
    if set(labels) <= set(feats):
        return labels
    return LabelSet([labels[f] for f in feats if f in labels], labels.info)
