"""`LabelSet`: the labels of an SAE's features, as a mapping ``feature index -> LabelResult``.

Where labels live:

* `attach(sae)`: a compact summary in ``sae.cfg.metadata["tokenlabel"]`` (feature -> label,
  score, status; method, evaluator, version). It travels inside SAELens's ``cfg.json``.
* the full results (trajectories, examples, word mappings) in a sidecar file,
  ``tokenlabel_labels.json``, written beside ``cfg.json`` by ``sae.save_model(path)`` once
  attached, or anywhere by `save(path)`. `LabelSet.load(path)` restores them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..records.errors import RecordError
from ..records.extra import FeatureExtra
from ..records.files import atomic_write, atomic_write_text, check_format, dumps_json
from ..records.names import METADATA_KEY, METHOD, PAPER, SIDECAR_FILENAME, __version__
from ..records.result import LabelResult, Trajectory
from ..records.verdict import VERDICTS, VerdictSettings, verdict_of, with_verdict
from .neuronpedia import (
    NeuronpediaBatchConfig,
    NeuronpediaBatches,
    write_neuronpedia,
    write_neuronpedia_batches,
)

if TYPE_CHECKING:
    from sae_lens import SAE

LABELSET_FORMAT = "saelens_tokenlabel.LabelSet"
LABELSET_VERSION = 1
ATTACHED_ATTR = "_tokenlabel_labels"
"""Attribute of an SAE holding its attached LabelSet (or the sidecar path it was loaded with)."""


def status_result(feature: int, status: str, message: str, extra: FeatureExtra | None = None,
                  evaluator: str = "") -> LabelResult:
    """A result for a feature that got no label, saying why: `message` goes into
    ``extra.message``, beside what else is known of the feature (`extra`)."""
    extra = dataclasses.replace(extra or FeatureExtra(), message=message)
    return with_verdict(LabelResult(
        label="", label_tokens=[], label_token_ids=[], probability=0.0, converged=False,
        steps=0, metrics={}, trajectory=Trajectory(), feature=int(feature), status=status,
        evaluator=evaluator, extra=extra))


def slim_result(result: LabelResult) -> LabelResult:
    """`result` without what only its own page and the sidecar show (trajectory, attempts,
    examples, word mappings, config): what an index, a table or the Neuronpedia rows read of
    it, a few kilobytes, so that a whole SAE's worth stays in memory."""
    extra = dataclasses.replace(result.extra, examples=None, words=None)
    return dataclasses.replace(result, trajectory=Trajectory(), attempts=[], config={},
                               extra=extra)


def save_streamed(path: str | Path, info: dict[str, Any], results: Iterable[LabelResult],
                  summary: Callable[[], dict[str, Any]]) -> Path:
    """The sidecar file of `results` (in feature order), each written as it comes, so that
    one result is in memory at a time; `summary` (called after the last one: the
    `LabelSet.summary` of what was written) goes after them. `LabelSet.load` reads it like
    `LabelSet.save`'s. Atomic, like `save`."""
    path = Path(path)
    if path.is_dir() or path.suffix == "":
        path = path / SIDECAR_FILENAME

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(f'{{"format": {dumps_json(LABELSET_FORMAT)}, "version": '
                     f'{LABELSET_VERSION}, "info": {dumps_json(info)}, "results": [')
            for i, r in enumerate(results):
                fh.write(("" if i == 0 else ", ") + dumps_json(r.to_dict()))
            fh.write(f'], "summary": {dumps_json(summary())}}}')

    return atomic_write(path, write)


class LabelSet(Mapping[int, LabelResult]):
    """Labels of several features of one SAE, keyed by feature index."""

    def __init__(self, results: Mapping[int, LabelResult] | list[LabelResult] | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self._results: dict[int, LabelResult] = {}
        items = results.values() if isinstance(results, Mapping) else (results or [])
        for r in items:
            self.add(r)
        self.info: dict[str, Any] = dict(info or {})
        """What was labeled and how: SAE, model, evaluator, corpus, configs, versions."""

    # ------------------------------------------------------------------ mapping
    def __getitem__(self, feature: int) -> LabelResult:
        try:
            return self._results[int(feature)]
        except KeyError:
            raise KeyError(f"feature {feature} was not labeled (labeled: "
                           f"{_span(sorted(self._results))})") from None

    def __contains__(self, feature: object) -> bool:
        # Not Mapping's (a failed __getitem__): its error message sorts every feature, so a
        # run asking after each feature still to label would be quadratic in the features.
        try:
            return int(feature) in self._results  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._results))

    def __len__(self) -> int:
        return len(self._results)

    def add(self, result: LabelResult) -> None:
        """Keep `result` under its feature index; a result whose feature is a digit string
        (e.g. ``"3"``) is kept as a copy whose feature is the int."""
        f = result.feature
        if isinstance(f, bool) or not isinstance(f, int | str) or not str(f).lstrip(
                "-").isdigit():
            raise ValueError(f"LabelSet keys are feature indices; result.feature is "
                             f"{result.feature!r}")
        if not isinstance(f, int):
            result = dataclasses.replace(result, feature=int(f))
        if result.verdict is None:  # made by hand: judged by its own recorded config
            result = dataclasses.replace(result, verdict=verdict_of(
                result, VerdictSettings.of(result.config), derived=True))
        self._results[int(f)] = result

    def update(self, other: LabelSet) -> None:
        for r in other.values():
            self.add(r)

    @property
    def labels(self) -> dict[int, str]:
        """feature -> label, for features that got one (whatever its verdict)."""
        return {f: r.label for f, r in sorted(self._results.items()) if r.status == "ok"}

    @property
    def explained(self) -> dict[int, str]:
        """feature -> label, for the labels whose verdict is ``explained``: the ones to trust."""
        return {f: r.label for f, r in sorted(self._results.items())
                if r.verdict is not None and r.verdict.value == "explained"}

    def by_status(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for f in self:
            out.setdefault(self._results[f].status, []).append(f)
        return out

    def by_verdict(self) -> dict[str, list[int]]:
        """Verdict -> features, in `VERDICTS` order."""
        out: dict[str, list[int]] = {v: [] for v in VERDICTS}
        for f in self:
            v = self._results[f].verdict
            out.setdefault(v.value if v is not None else "unknown", []).append(f)
        return {k: fs for k, fs in out.items() if fs}

    def only_explained(self) -> LabelSet:
        """These labels with every feature whose verdict is not ``explained`` left out (for an
        export that should hold trusted labels only)."""
        return LabelSet([r for r in self.values() if r.verdict is not None and
                         r.verdict.value == "explained"], self.info)

    def __repr__(self) -> str:
        counts = {k: len(v) for k, v in self.by_verdict().items()}
        return f"LabelSet({len(self)} features, {counts})"

    # ------------------------------------------------------------------ metadata
    def summary(self) -> dict[str, Any]:
        """The compact form kept in ``sae.cfg.metadata`` (JSON-ready)."""
        feats: dict[str, dict[str, Any]] = {}
        score_names = set()
        for f in self:
            r = self._results[f]
            if r.score_name:
                score_names.add(r.score_name)
            feats[str(f)] = {"label": r.label if r.status == "ok" else None, "score": r.score,
                             "status": r.status,
                             "verdict": r.verdict.value if r.verdict is not None else None}
            if r.polysemantic is not None:
                feats[str(f)]["polysemantic"] = list(r.polysemantic.labels)
        evaluators = sorted({r.evaluator for r in self.values() if r.evaluator})
        return {
            "method": METHOD,
            "paper": PAPER,
            "version": __version__,
            "evaluator": self.info.get("evaluator") or (evaluators[0] if evaluators else None),
            "score": sorted(score_names),
            "sidecar": SIDECAR_FILENAME,
            "labels": feats,
        }

    def attach(self, sae: SAE[Any]) -> None:
        """Put the summary into ``sae.cfg.metadata`` and keep the full results with the SAE,
        so that ``sae.save_model(path)`` writes them beside ``cfg.json``."""
        d_sae = int(sae.cfg.d_sae)
        bad = [f for f in self if not 0 <= f < d_sae]
        if bad:
            raise ValueError(f"Features {bad[:5]} are out of range for this SAE (d_sae="
                             f"{d_sae}); these labels belong to another SAE.")
        hook = self.info.get("hook_name")
        if hook and sae.cfg.metadata.hook_name and hook != sae.cfg.metadata.hook_name:
            raise ValueError(
                f"These labels were made for an SAE at {hook!r}; this one reads "
                f"{sae.cfg.metadata.hook_name!r}. Attach them to the SAE they label."
            )
        sae.cfg.metadata[METADATA_KEY] = self.summary()
        # Plain attribute: not a parameter or buffer, so state_dict and weights are unchanged.
        object.__setattr__(sae, ATTACHED_ATTR, self)

    @classmethod
    def from_sae(cls, sae: SAE[Any]) -> LabelSet:
        """The labels attached to (or loaded with) an SAE."""
        held = getattr(sae, ATTACHED_ATTR, None)
        if isinstance(held, LabelSet):
            return held
        if isinstance(held, str | Path):
            return cls.load(held)
        raise LookupError(
            "This SAE has no labels attached. Label it with sae.label_features(...), or load "
            "saved labels with stl.LabelSet.load(path)."
        )

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {"format": LABELSET_FORMAT, "version": LABELSET_VERSION, "info": self.info,
                "summary": self.summary(),
                "results": [self._results[f].to_dict() for f in self]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSet:
        check_format(d, "LabelSet", LABELSET_FORMAT, LABELSET_VERSION)
        return cls([LabelResult.from_dict(r) for r in d["results"]], d.get("info", {}))

    def save(self, path: str | Path) -> Path:
        """Write the full results to `path`: a file, or a folder (an existing one, or a path
        without suffix) that gets ``tokenlabel_labels.json``. Written to a temporary file and
        renamed, so a crash never leaves half a file. Returns the file written."""
        path = Path(path)
        if path.is_dir() or path.suffix == "":
            path = path / SIDECAR_FILENAME
        return atomic_write_text(path, dumps_json(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> LabelSet:
        """Read labels from a sidecar file, or from a folder holding one (an SAE folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / SIDECAR_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"No labels at {path}. Labels are saved by labels.save(path), or beside "
                "cfg.json by sae.save_model(path) after labels.attach(sae)."
            )
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as err:  # garbled, cut short, not ours
            raise RecordError(
                f"{path} is not a readable label file ({' '.join(str(err).split())}). Write "
                "it again: labels.save(path), or `tokenlabel export RUN_DIR` from a run's "
                "store.") from None

    def to_neuronpedia(self, path: str | Path, neuronpedia_id: str | None = None) -> int:
        """Write the readable view of the Neuronpedia records (one JSON line per explanation,
        its scores nested); see `neuronpedia.py`. Returns the number of records."""
        return write_neuronpedia(self, path, neuronpedia_id)

    def to_neuronpedia_batches(self, folder: str | Path, neuronpedia_id: str | None = None,
                               config: NeuronpediaBatchConfig | None = None,
                               created_at: datetime | None = None) -> NeuronpediaBatches:
        """Write Neuronpedia's import layout into `folder` (a source's folder,
        ``<modelId>/<layer>``): ``explanations/batch-N.jsonl.gz`` and
        ``explanation_scores/batch-N.jsonl.gz``, replacing an earlier export of these labels'
        SAE there; see `neuronpedia.py`. Returns what was written."""
        return write_neuronpedia_batches(self, folder, neuronpedia_id, config, created_at)


def _span(features: list[int]) -> str:
    if not features:
        return "none"
    if len(features) > 6:
        return f"{features[0]}..{features[-1]} ({len(features)} features)"
    return ", ".join(map(str, features))
