"""Scoring existing explanations against a run's labels, on the run's own held-out examples.

Layer 4. The records, the tie rule and the summary are `comparison.py`; the sources are
`explanations.py`. What this module guarantees is that both labels are scored on exactly the
examples the run scored its label on, by the run's own code path:

1. the run's activation cache (``info["activation_cache"]``, the folder
   `activations.build_activation_cache` wrote or reused for the run) is opened again: the
   same tokens and activations, with no subject model or SAE pass;
2. `examples.select_examples` with the run's `ExampleConfig` (each feature's picks come from
   its own generator, so any subset of the features gets the run's examples), words through
   `words.WordDecoder` on the subject tokenizer, `FeatureData` by `batches.prepare_batch`;
3. the split of `labeler.feature_jobs` with the run's `LabelConfig` (seed, fractions,
   threshold);
4. `optimize.score_hard_label` on the held-out examples, for the run's label (its token ids)
   and for the explanation (tokenized by the evaluator without special tokens) alike.

So the run's label re-scored reproduces the run's stored ``heldout_*`` scores (the tests check
it) whenever the evaluator is the run's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from ..descent.engine import StepContext
from ..descent.hardlabel import score_hard_label
from ..descent.labeler import feature_jobs
from ..descent.state import FeatureJob
from ..evaluator.model import EncodedExample, Evaluator
from ..formats.comparison import (
    CompareConfig,
    Comparison,
    FeatureComparison,
    ScoredLabel,
    decide,
    summarize,
)
from ..formats.explanations import ExplanationSource, read_explanations
from ..formats.labelset import LabelSet
from ..records.config import LabelConfig
from ..records.data import PreparedFeature
from ..records.features import check_feature_indices, unique_features
from .batches import BatchStage, prepare_batch
from .cache import ActivationCache
from .config import ExampleConfig
from .examples import select_examples
from .words import WordDecoder

log = logging.getLogger(__name__)
_NEEDED = ("label_config", "example_config", "activation_cache")


@dataclass(frozen=True)
class RunSettings:
    """What a run recorded about its examples, read back from its info."""

    config: LabelConfig
    """The run's labeling settings (threshold, split fractions and seed, prediction)."""
    ex: ExampleConfig
    """The run's example selection."""
    act_cache: ActivationCache
    """The run's activation cache."""
    evaluator: str | None
    """The evaluator the run labeled with."""
    neuronpedia_id: str | None
    """The SAE's Neuronpedia id, when it had one."""

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> RunSettings:
        missing = [k for k in _NEEDED if not info.get(k)]
        if missing:
            raise ValueError(
                f"These labels carry no record of their run ({', '.join(missing)} missing from "
                "labels.info), so their examples cannot be rebuilt. Compare the labels of a "
                "run: stl.run.load_labelset(run_dir), or what sae.label_features returned.")
        config = LabelConfig.from_dict(info["label_config"])
        if config.holdout_fraction <= 0:
            raise ValueError("The run held no examples out (holdout_fraction=0), so there is "
                             "nothing unbiased to score both labels on; label with "
                             "holdout_fraction > 0 to compare.")
        path = Path(info["activation_cache"])
        if not path.is_dir():
            raise FileNotFoundError(
                f"The run's activation cache {path} is gone, and the run's examples are read "
                "from it. Rebuild it in the same place (stl.build_activation_cache with the "
                "run's subject model, SAE, corpus and CacheConfig), then compare.")
        return cls(config, ExampleConfig.from_stored(info["example_config"]),
                   ActivationCache.open(path), info.get("evaluator"),
                   info.get("neuronpedia_id"))


def as_source(explanations: Any) -> ExplanationSource:
    """`explanations` as a source: an `ExplanationSource`, a mapping ``feature -> text``, or a
    path (`explanations.read_explanations`, format detected)."""
    if isinstance(explanations, ExplanationSource):
        return explanations
    if isinstance(explanations, Mapping):
        return ExplanationSource.of(dict(explanations))
    return read_explanations(explanations)


def compare_labels(labels: LabelSet, explanations: Any, evaluator: Evaluator, subject: Any,
                   features: Iterable[int] | None = None,
                   config: CompareConfig | None = None) -> Comparison:
    """Score `labels` (a run's) and existing `explanations` of the same features as hard
    labels on the run's held-out examples (module docstring).

    `subject`: the subject model (its ``tokenizer``) or the subject tokenizer, which turns
    the cached tokens into the words the evaluator rates. `features`: those to compare
    (default: every feature the run labeled and the source explains)."""
    config = config or CompareConfig()
    if not isinstance(evaluator, Evaluator):
        raise TypeError(f"evaluator must be a saelens_tokenlabel.Evaluator, got "
                        f"{type(evaluator).__name__}; wrap the model: stl.Evaluator(model).")
    source = as_source(explanations)
    run = RunSettings.of(labels.info)
    todo, skipped, unused = _plan(labels, source, features)
    tokenizer = getattr(subject, "tokenizer", None) or subject
    sels, pool = select_examples(run.act_cache, todo, run.ex)
    decoder = WordDecoder(tokenizer, strip=run.config.strip_word, max_merge=run.ex.max_merge)
    stage = BatchStage(sels, pool, run.act_cache, decoder, run.ex, run.config, evaluator)
    scorer = _Scorer(labels, source, evaluator, run, config)
    rows: list[FeatureComparison] = []
    for start in range(0, len(todo), config.features_per_batch):
        group = todo[start : start + config.features_per_batch]
        done, left_out = scorer.group(prepare_batch(group, stage).prepared, group)
        rows += done
        skipped.update(left_out)
        log.info("compare: %d/%d features scored", start + len(group), len(todo))
    return Comparison(
        summary=summarize(rows, config), features=tuple(sorted(rows, key=lambda r: r.feature)),
        source=source.info, evaluator=evaluator.name or "", run_evaluator=run.evaluator,
        not_compared=dict(sorted(skipped.items())), unused_explanations=unused,
        notes=_notes(run, source, evaluator))


def _plan(labels: LabelSet, source: ExplanationSource, features: Iterable[int] | None
          ) -> tuple[list[int], dict[int, str], int]:
    """The features to compare (labeled in the run, explained by the source), those left out
    and why, and how many explanations are of features outside the comparison."""
    wanted = (sorted(labels) if features is None
              else sorted(unique_features(check_feature_indices(features, None))))
    todo, skipped = [], {}
    for f in wanted:
        if f not in labels:
            skipped[f] = "not labeled in this run"
        elif labels[f].status != "ok":
            skipped[f] = f"no label in the run ({labels[f].status})"
        elif f not in source.explanations:
            skipped[f] = "no explanation in the source"
        else:
            todo.append(f)
    if not todo:
        have = sorted(source.explanations)
        raise ValueError(
            f"No feature has both a label in this run and an explanation in "
            f"{source.info.path} (the run labeled {len(labels.labels)} features, the source "
            f"explains {len(have)}{': ' + _span(have) if have else ''}); check the source "
            "is of this SAE, and --features.")
    return todo, skipped, len(set(source.explanations) - set(wanted))


def _span(features: list[int]) -> str:
    shown = ", ".join(map(str, features[:5]))
    return shown + (", ..." if len(features) > 5 else "")


def _notes(run: RunSettings, source: ExplanationSource, evaluator: Evaluator) -> tuple[str, ...]:
    notes = []
    if run.evaluator and evaluator.name != run.evaluator:
        notes.append(f"scored with the evaluator {evaluator.name!r}; the run labeled with "
                     f"{run.evaluator!r}, so its stored scores are not these")
    ids = source.info.neuronpedia_ids
    if run.neuronpedia_id and ids and run.neuronpedia_id not in ids:
        notes.append(f"the explanations are of {', '.join(ids)}; the run's SAE is "
                     f"{run.neuronpedia_id}")
    return tuple(notes)


@dataclass(frozen=True)
class _HeldOut:
    """One feature's held-out examples, indexed into a group's own encoded examples."""

    feature: int
    ids: Int[torch.Tensor, " n"]
    targets: Float[torch.Tensor, " n"]


def heldout_only(encoded: list[EncodedExample], jobs: list[FeatureJob]
                 ) -> tuple[list[EncodedExample], list[_HeldOut]]:
    """Only the held-out examples of `jobs`, re-indexed: the prefix pass then runs over the
    examples that are scored, not over the training and validation ones too."""
    keep = sorted({int(i) for j in jobs if j.heldout_ids is not None for i in j.heldout_ids})
    new = {old: k for k, old in enumerate(keep)}
    out = []
    for j in jobs:
        ids = [] if j.heldout_ids is None else [new[int(i)] for i in j.heldout_ids]
        targets = j.heldout_targets if j.heldout_targets is not None else torch.zeros(0)
        out.append(_HeldOut(int(j.name), torch.tensor(ids, dtype=torch.long), targets))
    return [encoded[i] for i in keep], out


@dataclass(frozen=True)
class _Scorer:
    """Scores one group of features' two labels at a time."""

    labels: LabelSet
    source: ExplanationSource
    evaluator: Evaluator
    run: RunSettings
    config: CompareConfig

    def group(self, datas: list[PreparedFeature], features: list[int]
              ) -> tuple[list[FeatureComparison], dict[int, str]]:
        """The comparisons of a group's features, and those that cannot be compared."""
        got = {int(d.name) for d in datas}
        skipped = {f: "no labelable examples now (the run's examples could not be rebuilt "
                      "for this evaluator)" for f in features if f not in got}
        if not datas:
            return [], skipped
        encoded, jobs = feature_jobs(datas, self.evaluator, self.run.config)
        encoded, held = heldout_only(encoded, jobs)
        empty = [h.feature for h in held if not len(h.ids)]
        skipped.update(dict.fromkeys(empty, "no held-out examples"))
        held = [h for h in held if len(h.ids)]
        if not held:
            return [], skipped
        ctx = StepContext.build(self.evaluator, encoded, self.run.config.performance)
        rows = []
        for h in held:
            row = self.feature(ctx, h)
            if isinstance(row, str):
                skipped[h.feature] = row
            else:
                rows.append(row)
        return rows, skipped

    def feature(self, ctx: StepContext, held: _HeldOut) -> FeatureComparison | str:
        """Our label against theirs on one feature (a string: why it cannot be scored)."""
        result = self.labels[held.feature]
        explanation = self.source.explanations[held.feature]
        # The evaluator's own tokenization of a text (the rating prompt's), as written.
        ids = self.evaluator._tokenize(explanation.text)
        if not ids:
            return "the explanation has no tokens for this evaluator"
        ours = self.score(ctx, held, result.label, result.label_token_ids)
        theirs = self.score(ctx, held, explanation.text, ids)
        winner, diff = decide(ours.score, theirs.score, self.config.tie_tolerance)
        stored = result.metrics.get("heldout_" + self.config.metric)
        return FeatureComparison(
            feature=held.feature, ours=ours, theirs=theirs, winner=winner, difference=diff,
            n_heldout=len(held.ids), n_heldout_active=int((held.targets > 0.5).sum()),
            stored_score=float(stored) if isinstance(stored, int | float) else None,
            where=explanation.where)

    def score(self, ctx: StepContext, held: _HeldOut, text: str, ids: list[int]
              ) -> ScoredLabel:
        """A hard label's held-out scores (`optimize.score_hard_label`, the run's scorer)."""
        scores, _ = score_hard_label(ctx, held.ids, held.targets, list(ids),
                                     self.run.config.prediction, prefix="heldout_")
        value = scores.get("heldout_" + self.config.metric)
        return ScoredLabel(text, tuple(int(i) for i in ids), len(ids),
                           None if value is None else float(value), dict(scores))
