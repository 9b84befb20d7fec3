"""`label_sae_features`: an SAE, its subject model, an evaluator and a corpus in; a `LabelSet`
out. This is what ``sae.label_features(...)`` runs.

Stages: activation cache (`activations.py`) -> examples (`examples.py`, `render.py`, with
words crossing tokenizers by `words.py`) -> token-space gradient descent (the core
`label_features_data`, several features per optimisation, `batch.label_batch`) -> `LabelSet`.

This module only composes the stages: check the inputs (`sae/validate.py`), resolve the
features, open the record (`record.py`: run store or checkpoint; a store is checked against
the inputs at once, but bound, and its claims taken, only once the activation cache is built,
so that a start that fails leaves nothing behind), build the activation cache, order the
features, select examples, prepare batches (`sae/batches.py`),
label them with an executor (`executors.py`, or Ray: `ray_backend.py`), score them on the
driver (`sae/scorers/`) and collect the `LabelSet`. How the run goes is `RunOptions`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..evaluator.model import Evaluator
from ..formats.labelset import LabelSet
from ..records.columns import SCORERS_INFO_KEY
from ..records.config import LabelConfig
from ..records.features import resolve_features
from ..records.names import METHOD, PAPER, __version__
from ..records.result import LabelResult
from ..sae.activations import build_activation_cache
from ..sae.batches import BatchStage, prepared_batches
from ..sae.cache import ActivationCache
from ..sae.config import CacheConfig, ExampleConfig
from ..sae.corpus import Corpus
from ..sae.examples import select_examples
from ..sae.fingerprint import digest
from ..sae.scorers.apply import ScoreConfig, add_sae_scores
from ..sae.subject import Subject
from ..sae.validate import validate_inputs
from ..sae.words import WordDecoder
from .amortise.mode import AmortisedRun
from .executors import Executor, LocalExecutor, open_pool
from .options import ORDERS, RunOptions
from .record import RunRecord, RunSink, open_record
from .store import RunStore

if TYPE_CHECKING:
    from sae_lens import SAE
    from torch import Tensor

    from ..sae.hooks import SubjectModel
    from .ray_backend import RayConfig

__all__ = ["ORDERS", "RunOptions", "label_sae_features", "order_by_scores"]

log = logging.getLogger(__name__)


def _identity(subject: Subject, evaluator: Evaluator, corpus: Corpus,
              memo: Path | None = None) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the same SAE, models and corpus (its
    documents, wherever the file lies: `Corpus.fingerprint`; `memo` remembers file hashes)."""
    sae = subject.sae
    meta = sae.cfg.metadata
    return {"sae": digest([sae.cfg.architecture(), int(sae.cfg.d_in), subject.d_sae,
                           meta.hook_name, meta.hook_head_index, meta.model_name]),
            "model": str(subject.model.cfg.model_name), "evaluator": evaluator.name,
            "corpus": digest(corpus.fingerprint(memo))}


_IDENTITY_PARTS = {"sae": "the SAE (architecture, d_in, d_sae, hook or model name)",
                   "model": "the subject model", "evaluator": "the evaluator"}


def identity_explainer(identity: dict[str, Any], corpus: Corpus,
                       memo: Path | None) -> Callable[[str, dict[str, Any]], str | None]:
    """Words for a run store made with another identity (`RunStore.check`): which part
    differs, and for the corpus how (the files, their sizes, the first differing document,
    from the profile the run recorded in its info)."""

    def explain(key: str, stored: dict[str, Any]) -> str | None:
        before = stored.get(key)
        if key != "identity" or not isinstance(before, dict):
            return None
        words = []
        for part, what in _IDENTITY_PARTS.items():
            if before.get(part) != identity.get(part):
                old, new = before.get(part), identity.get(part)
                words.append(f"{what} differs ({old!r} there, {new!r} now)" if part != "sae"
                             else f"{what} differs")
        if before.get("corpus") != identity.get("corpus"):
            info = stored.get("info")
            profile = info.get("corpus_profile") if isinstance(info, dict) else None
            words.append(corpus.difference(profile, memo))
        return "; ".join(words) or None

    return explain


def _info(run: _Run, cache: ActivationCache) -> dict[str, Any]:
    sae = run.subject.sae
    meta = sae.cfg.metadata
    return {
        "identity": _identity(run.subject, run.evaluator, run.corpus),
        "method": METHOD,
        "paper": PAPER,
        "version": __version__,
        "evaluator": run.evaluator.name,
        "model_name": str(run.subject.model.cfg.model_name),
        "sae_model_name": meta.model_name,
        "hook_name": meta.hook_name,
        "hook_head_index": meta.hook_head_index,
        "neuronpedia_id": meta.neuronpedia_id,
        "architecture": sae.cfg.architecture(),
        "d_in": int(sae.cfg.d_in),
        "d_sae": run.subject.d_sae,
        "corpus": run.corpus.describe(),
        "corpus_profile": run.corpus.profile(run.memo),
        "n_tokens": cache.n_tokens,
        "context_size": cache.meta["context_size"],
        "prepend_bos": cache.meta["prepend_bos"],
        "activation_cache": str(cache.directory),
        "label_config": run.config.to_dict(),
        "example_config": run.ex.to_dict(),
        "cache_config": (run.cache or CacheConfig()).to_dict(),
        "score_config": run.scores.to_dict(),
        SCORERS_INFO_KEY: run.scores.entries(),
    }


def label_sae_features(
    sae: SAE[Any],
    model: SubjectModel,
    evaluator: Evaluator | SubjectModel,
    corpus: Corpus | Sequence[str] | str | Path,
    features: int | Iterable[int] | None = None,
    config: LabelConfig | None = None,
    *,
    cache: CacheConfig | None = None,
    examples: ExampleConfig | None = None,
    options: RunOptions | None = None,
    **run_options: Any,
) -> LabelSet:
    """Label features of `sae` (None: all) from the subject `model`'s activations on `corpus`.

    `config` drives the optimisation (the core `LabelConfig`); `cache` the activation cache;
    `examples` which tokens are rated. How the run goes is `options` (a `RunOptions`), or
    its fields as keywords: ``features_per_batch`` (features sharing each optimisation),
    ``run_dir`` (a folder: every result is stored as soon as its batch is done, a rerun with
    the same inputs and settings resumes, one with others is an error, and several
    processes on one folder split the features by claims that last ``lease_s``),
    ``checkpoint`` (the older JSON file), ``order`` (``"index"`` or ``"attribution"``),
    ``ray`` (label on Ray actors: a `RayConfig`, an address or True), ``scores`` (the
    SAE-side scorers, default `ScoreConfig()`: output side, coherence and steering),
    ``progress`` and ``executor``. With ``config.warm_start``, v starts from the decoder
    direction's logit lens (`sae.logit_lens.warm_start_logits`) in the first attempt.

    Features that never fire, whose activations are not finite, or have nothing to tell
    apart, get a result whose `status` says so (`dead`, `nonfinite`, `unlabelable`) instead of
    an error.
    """
    opts = RunOptions.of(options, run_options)
    run = _Run.of(sae, model, evaluator, corpus, config, cache, examples, opts)
    feats = resolve_features(features, run.subject.d_sae)
    identity = _identity(run.subject, run.evaluator, run.corpus, run.memo)
    explain = identity_explainer(identity, run.corpus, run.memo)
    earlier = run.corpus.path_fingerprint()
    earlier_identity = None if earlier is None else {**identity, "corpus": digest(earlier)}
    # The store is checked here (a mismatch fails before any work) but bound only once the
    # activation cache is built (`stage`): a start that fails before leaves nothing behind.
    with open_record(opts, identity, run.config, run.ex, feats, explain,
                     earlier_identity) as record:
        todo = record.todo(feats)
        if todo:
            run.label(record, feats, todo, requested=features is not None)
        elif record.ckpt is not None:
            record.bind(None)  # a finished checkpoint seeds the store, with its own info
        return record.result(feats)


@dataclass
class _Run:
    """One call's checked inputs and settings."""

    subject: Subject
    evaluator: Evaluator
    corpus: Corpus
    config: LabelConfig
    ex: ExampleConfig
    cache: CacheConfig | None
    opts: RunOptions
    scores: ScoreConfig
    _attribution: Tensor | None = field(default=None, repr=False)
    """The attribution scores, computed at most once per run (`order`)."""

    @property
    def memo(self) -> Path:
        """Where corpus file hashes are remembered (`CacheConfig.corpora_dir`)."""
        return (self.cache or CacheConfig()).corpora_dir()

    @classmethod
    def of(cls, sae: SAE[Any], model: SubjectModel, evaluator: Any, corpus: Any,
           config: LabelConfig | None, cache: CacheConfig | None,
           examples: ExampleConfig | None, opts: RunOptions) -> _Run:
        # Types, hook, d_in and chat template, before any expensive work (see validate.py).
        subject, evaluator = validate_inputs(sae, model, evaluator)
        _ray_config(opts.ray)  # a bad value fails here, not after the activation cache
        if sae.cfg.metadata.model_name and sae.cfg.metadata.model_name != model.cfg.model_name:
            log.warning("the SAE was trained on %r but the subject model is %r",
                        sae.cfg.metadata.model_name, model.cfg.model_name)
        scores = opts.scores if opts.scores is not None else ScoreConfig()
        return cls(subject, evaluator, Corpus.of(corpus), config or LabelConfig(),
                   examples or ExampleConfig(), cache, opts, scores)

    def label(self, record: RunRecord, feats: list[int], todo: list[int],
              requested: bool) -> None:
        """The stages: activation cache, the record bound (the inputs are good), order,
        examples, batches, labels (into `record`)."""
        stage = self.stage(record, feats, todo, requested)
        todo = self.order(record.todo(todo))
        size = self.opts.features_per_batch
        amortize = self.opts.amortize
        if amortize is None:
            self.execute(record, len(todo), lambda sink, executor: executor.run(
                prepared_batches(record.groups(todo, size), stage), self.evaluator,
                self.config, sink), stage)
            return
        order = sorted(feats) if amortize.seed_order == "random" else self.order(feats)
        run_dir = self.opts.run_dir
        folder = (Path(run_dir.path).parent if isinstance(run_dir, RunStore) else
                  Path(run_dir) if run_dir is not None else None)

        def amortised(sink: RunSink, executor: Executor) -> None:
            # One pool for the whole run: on Ray, the actors start once.
            with open_pool(executor, self.evaluator, self.config, sink) as pool:
                AmortisedRun(self.subject.sae, stage, record, sink, pool, amortize, size,
                             folder).run(order, todo)

        self.execute(record, len(todo), amortised, stage)

    def order(self, features: list[int]) -> list[int]:
        """`features` in labeling order: by index, or by descending attribution score (ties:
        index). The attribution pass (a forward and backward pass over the corpus) runs at
        most once per run, however many lists are ordered."""
        if self.opts.order == "index":
            return sorted(features)
        if self._attribution is None:
            from ..sae.attribution import attribution_scores

            cache = self.cache
            self._attribution = attribution_scores(
                self.subject, self.corpus, cache_config=cache,
                max_tokens=cache.max_tokens if cache is not None else None)
        return order_by_scores(features, self._attribution)

    def stage(self, record: RunRecord, feats: list[int], todo: list[int],
              requested: bool) -> BatchStage:
        """Activation cache, the record bound with the run info, and examples: what preparing
        any batch needs."""
        act_cache = build_activation_cache(self.subject, self.corpus,
                                           feats if requested else None, self.cache,
                                           self.opts.progress)
        record.bind(_info(self, act_cache))
        # Only the features still to label: each feature's picks come from its own generator
        # and the random pool is the same for any feature list, so a resumed feature gets
        # the examples of an uninterrupted run.
        sels, pool = select_examples(act_cache, sorted(todo), self.ex, self.opts.progress)
        decoder = WordDecoder(self.subject.tokenizer, strip=self.config.strip_word,
                              max_merge=self.ex.max_merge)
        return BatchStage(sels, pool, act_cache, decoder, self.ex, self.config, self.evaluator,
                          self.subject if self.config.warm_start else None)

    def execute(self, record: RunRecord, total: int, body: Callable[[RunSink, Executor], None],
                stage: BatchStage) -> None:
        """Run `body` with the run's sink (every result into `record` as it comes, its
        feature's selection then released from `stage`) and its executor."""
        progress = self.opts.progress
        executor = _executor(self.opts)
        with tqdm(total=total, unit="feature", desc="labels", dynamic_ncols=True,
                  disable=None if progress is None else not progress) as bar:
            sink = RunSink(record, bar, self.score, stage.release)
            body(sink, executor)  # an error or a stop: `open_record` notes what is saved

    def score(self, results: list[LabelResult]) -> list[LabelResult]:
        """The SAE-side scores (`sae.scorers`) of finished results."""
        return add_sae_scores(results, self.subject, self.scores)


def _executor(opts: RunOptions) -> Executor:
    if opts.executor is not None:
        return opts.executor
    rc = _ray_config(opts.ray)
    if rc is None:
        return LocalExecutor()
    from .ray_backend import RayExecutor

    return RayExecutor(rc)


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


def order_by_scores(features: Sequence[int], scores: Any) -> list[int]:
    """`features` by descending score (``scores[f]``, a ``[d_sae]`` tensor or sequence), ties
    and non-finite scores by index (non-finite last)."""
    vals = scores.tolist() if hasattr(scores, "tolist") else list(scores)
    if len(vals) <= max(features, default=-1):
        raise ValueError(f"attribution scores cover {len(vals)} features; the run needs "
                         f"{max(features) + 1}.")

    def key(f: int) -> tuple[int, float, int]:
        v = float(vals[f])
        return (0, -v, f) if math.isfinite(v) else (1, 0.0, f)

    return sorted(features, key=key)
