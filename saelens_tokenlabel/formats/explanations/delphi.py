"""delphi's (EleutherAI) explanations: its ``explanations/`` folder, one file per latent named
``<module>_latent<N>.txt`` (``f"{record.latent}.txt"`` in ``delphi/__main__.py``, where a
``Latent`` prints as ``f"{module_name}_latent{latent_index}"`` and the module is the
hookpoint, e.g. ``layers.5.mlp``), holding the explanation as a JSON string (written with
``orjson.dumps(result.explanation)``, read back with ``json.loads``). One folder can hold
several modules' latents: ``ReadOptions.module`` chooses one. A folder holding an
``explanations/`` folder (a delphi run's results folder) is read from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..jsonl import UNREADABLE
from .registry import ReadOptions, explanations_folder, register_reader, unreadable
from .source import ExplanationSource, ExplanationSourceError, Keep, SourceInfo

DELPHI = "delphi"
_DELPHI_RE = re.compile(r"^(?P<module>.+)_latent(?P<index>\d+)\.txt$")


def _by_module(folder: Path) -> dict[str, list[tuple[int, Path]]]:
    files: dict[str, list[tuple[int, Path]]] = {}
    for p in sorted(folder.iterdir()):
        m = _DELPHI_RE.match(p.name)
        if m and p.is_file():
            files.setdefault(m.group("module"), []).append((int(m.group("index")), p))
    return files


def _delphi_text(path: Path) -> str:
    """A delphi explanation file's content: one JSON string."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        value = None
    except UNREADABLE as err:
        raise unreadable(path, err) from None
    if not isinstance(value, str):
        raise ExplanationSourceError(
            f"{path}: not a JSON string; delphi writes each explanation as one (e.g. "
            "\"Mentions of animals\"). Quote the text, or give a feature<TAB>text file.")
    return value


class DelphiReader:
    """delphi's ``explanations/`` folder (module docstring)."""

    name = DELPHI

    def sniff(self, path: Path) -> bool:
        return path.is_dir() and any(_DELPHI_RE.match(p.name)
                                     for p in explanations_folder(path).iterdir())

    def read(self, path: Path, options: ReadOptions) -> ExplanationSource:
        files = _by_module(explanations_folder(path))
        module = options.module
        if module is None and len(files) > 1:
            raise ExplanationSourceError(
                f"--explanations {path}: delphi explanations of several modules "
                f"({', '.join(sorted(files))}); choose one with --module.")
        module = module if module is not None else next(iter(files))
        if module not in files:
            raise ExplanationSourceError(
                f"--explanations {path}: no delphi explanations of module {module!r} (it "
                f"holds {', '.join(sorted(files))}); pass one of those to --module.")
        keep = Keep()
        for index, p in files[module]:
            keep.add(index, _delphi_text(p), p.name)
        skipped = sum(len(v) for k, v in files.items() if k != module)
        return keep.source(SourceInfo(DELPHI, str(path), 0, skipped=skipped, module=module))


register_reader(DelphiReader(), builtin=True)
