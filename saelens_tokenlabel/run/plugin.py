"""The SAELens plugin: `SAE.label_features`, and labels that travel with `save_model`.

`install()` (run by ``import saelens_tokenlabel``) changes exactly three attributes of
SAELens's base class `SAE`, which every architecture (standard, topk, jumprelu, gated,
transcoders, training SAEs, and any registered later) inherits:

* adds `label_features`;
* wraps `save_model`: after SAELens has written its files, an SAE with attached labels also
  gets the sidecar file beside ``cfg.json``. Without labels the files are SAELens's own,
  byte for byte;
* wraps `load_from_disk`: when the folder holds a sidecar file, the loaded SAE remembers it,
  so `LabelSet.from_sae(sae)` finds the labels and a later `save_model` carries them along.

The summary in ``cfg.metadata`` is plain JSON, so ``cfg.json`` loads without the plugin too.
`uninstall()` restores SAELens as it was.

`install_labelset_methods()` (also run by ``import saelens_tokenlabel``, SAELens or not) adds
`LabelSet.compare`: our labels against existing explanations (`sae/compare.py`). `LabelSet`
lives in the results layer, which cannot import the scorer, so the method is attached here.
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import Any

from ..formats.labelset import ATTACHED_ATTR, LabelSet
from ..records.names import METADATA_KEY, SIDECAR_FILENAME

log = logging.getLogger(__name__)
_ORIGINALS: dict[str, Any] = {}
_MARK = "__tokenlabel_plugin__"


def label_features(self: Any, model: Any, evaluator: Any, corpus: Any, features: Any = None,
                   config: Any = None, **kwargs: Any) -> LabelSet:
    """Label this SAE's features by token-space gradient descent (Schulz & Fallows,
    arXiv 2504.00754); added by saelens_tokenlabel.

    ``model``: the subject HookedTransformer; ``evaluator``: an ``stl.Evaluator``;
    ``corpus``: a list of strings, a .txt/.jsonl file, or a dataset name; ``features``: feature
    indices (None: all); ``config``: ``stl.LabelConfig``. Keyword arguments ``cache``,
    ``examples``, ``options`` (a ``RunOptions``) or its fields ``features_per_batch``,
    ``run_dir`` (a folder: results are stored as they finish, a rerun resumes, and several
    processes share the work), ``checkpoint``, ``order``, ``ray``, ``scores``, ``progress``,
    ``lease_s`` and ``executor`` are those of ``saelens_tokenlabel.label_sae_features``
    (``saelens_tokenlabel.run.pipeline``). Returns a ``LabelSet``; call
    ``labels.attach(sae)`` to keep the labels in the SAE's metadata and saved files.
    """
    from .pipeline import label_sae_features

    return label_sae_features(self, model, evaluator, corpus, features, config, **kwargs)


setattr(label_features, _MARK, True)


def compare(self: LabelSet, explanations: Any, evaluator: Any, subject: Any,
            features: Any = None, config: Any = None, **overrides: Any) -> Any:
    """Score these labels against existing explanations of the same features, head to head;
    added by saelens_tokenlabel (``saelens_tokenlabel.sae.compare.compare_labels``).

    ``explanations``: a Neuronpedia export (``.jsonl``, ``.jsonl.gz`` or its folder of
    ``batch-N.jsonl.gz``), delphi's ``explanations/`` folder, a ``feature<TAB>text`` file, a
    dict ``{feature: text}``, or ``stl.read_explanations(path, type_name=..., module=...)``.
    ``evaluator``: an ``stl.Evaluator`` (the run's, to reproduce its scores); ``subject``:
    the subject model or its tokenizer. ``features``: those to compare (default:
    all labeled and explained). ``config``: a ``CompareConfig``, or its fields as keywords
    (``metric="f1"``, ``tie_tolerance``, ``bootstrap_samples``, ``seed``, ``level``). Both
    labels are scored as hard labels on the run's own held-out examples (so the labels must
    be a run's, with its ``info``, and its activation cache still on disk). Returns a
    ``Comparison``; ``.summary.line()``, ``.table()``, ``.save(run_dir)``.
    """
    import dataclasses

    from ..formats.comparison import CompareConfig
    from ..sae.compare import compare_labels

    cfg = dataclasses.replace(config or CompareConfig(), **overrides)
    return compare_labels(self, explanations, evaluator, subject, features, cfg)


setattr(compare, _MARK, True)


def install_labelset_methods() -> None:
    """Add `compare` to `LabelSet` (idempotent). A method of the results layer that needs the
    evaluator and the SAE-side stages, so it is attached from this layer rather than
    defined in `labelset.py`."""
    present = LabelSet.__dict__.get("compare")
    if present is None:
        LabelSet.compare = compare  # type: ignore[attr-defined]
    elif not getattr(present, _MARK, False):
        raise RuntimeError("LabelSet already has a compare attribute that saelens_tokenlabel's "
                           "plugin did not add; refusing to overwrite it.")


def _wrap_save(original: Any) -> Any:
    @functools.wraps(original)
    def save_model(self: Any, path: str | Path) -> Any:
        out = original(self, path)
        held = getattr(self, ATTACHED_ATTR, None)
        target = Path(path) / SIDECAR_FILENAME
        if isinstance(held, LabelSet):
            held.save(target)
        elif held is not None:
            source = Path(held)
            if not source.is_file():
                raise FileNotFoundError(
                    f"This SAE was loaded with labels from {source}, which is gone, so they "
                    "cannot be saved beside cfg.json. Load them (stl.LabelSet.load) from a "
                    "copy and labels.attach(sae) before saving."
                )
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
        elif METADATA_KEY in self.cfg.metadata:
            log.warning("this SAE's metadata holds a label summary but no full results are "
                        "attached, so no %s is written beside cfg.json", SIDECAR_FILENAME)
        return out

    setattr(save_model, _MARK, True)
    return save_model


def _wrap_load(original: classmethod) -> classmethod:
    func = original.__func__

    @functools.wraps(func)
    def load_from_disk(cls: Any, path: str | Path, *args: Any, **kwargs: Any) -> Any:
        sae = func(cls, path, *args, **kwargs)
        sidecar = Path(path) / SIDECAR_FILENAME
        if sidecar.is_file():
            object.__setattr__(sae, ATTACHED_ATTR, str(sidecar.resolve()))
        return sae

    setattr(load_from_disk, _MARK, True)
    return classmethod(load_from_disk)


def is_installed() -> bool:
    from sae_lens.saes.sae import SAE

    return getattr(SAE.__dict__.get("label_features"), _MARK, False)


def install() -> None:
    """Add `label_features` to SAELens's `SAE`, and register the g-SAE architecture
    (`sae.gsae`) with SAELens (idempotent)."""
    from sae_lens.saes.sae import SAE

    if is_installed():
        return
    if "label_features" in SAE.__dict__:
        raise RuntimeError(
            "sae_lens.SAE already has a label_features attribute that saelens_tokenlabel did "
            "not add; refusing to overwrite it."
        )
    _ORIGINALS["save_model"] = SAE.__dict__["save_model"]
    _ORIGINALS["load_from_disk"] = SAE.__dict__["load_from_disk"]
    # The plugin patches SAELens's class on purpose (undone by `uninstall`); mypy sees
    # assignments to methods.
    SAE.save_model = _wrap_save(_ORIGINALS["save_model"])  # type: ignore[method-assign]
    SAE.load_from_disk = _wrap_load(  # type: ignore[method-assign, assignment]
        _ORIGINALS["load_from_disk"])
    SAE.label_features = label_features  # type: ignore[attr-defined]
    _register_gsae()


def _register_gsae() -> None:
    from ..sae.gsae import register

    register()


def uninstall() -> None:
    """Restore SAELens's `SAE` exactly as it was before `install()`."""
    from sae_lens.saes.sae import SAE

    if not is_installed():
        return
    del SAE.label_features  # type: ignore[attr-defined]
    SAE.save_model = _ORIGINALS.pop("save_model")  # type: ignore[method-assign]
    SAE.load_from_disk = _ORIGINALS.pop("load_from_disk")  # type: ignore[method-assign]
