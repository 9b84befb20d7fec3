"""Neuronpedia export: Neuronpedia's own import layout, and a one-file readable view of it.

Every record is a row of Neuronpedia's database as its schema defines it (``model
Explanation`` and ``model ExplanationScore`` in ``apps/webapp/prisma/schema.prisma`` of
github.com/hijohnnylin/neuronpedia), built once per labeled feature by `feature_records`;
both writers below write those rows. Features without a label (dead, ...) get none.

**Import layout** (`write_neuronpedia_batches`, ``tokenlabel export DIR --neuronpedia``)::

    <folder>/explanations/batch-0.jsonl.gz          one Explanation row per line
    <folder>/explanation_scores/batch-0.jsonl.gz    the ExplanationScore rows of the
                                                    explanations in explanations/batch-0

``<folder>`` is a source's folder of Neuronpedia's dataset layout, ``<modelId>/<layer>``:
its importer (``apps/webapp/app/api/admin/import/route.ts``) reads every ``*.jsonl.gz`` under
``<modelId>/<sourceId>/explanations/`` and hands the lines to ``importJsonlString('Explanation',
...)`` (``apps/webapp/lib/db/import.ts``), which takes the column list from the keys of the
first line (keeping those that are columns of the table) and inserts with
``jsonb_to_recordset(...) ON CONFLICT DO NOTHING``. Hence:

* every line has the same keys, exactly the schema's column names, with values of the
  column's type: String as a string, Float as a float, an optional column as null,
  DateTime as an ISO 8601 string (their ``batch-autointerp.py`` writes
  ``datetime.isoformat()``; ours are UTC, to the millisecond Postgres keeps). A null is
  inserted as NULL, so a NOT NULL column (``scoreV1``) gets a number;
* ``id`` is deterministic (`stable_cuid`), so importing a re-export inserts nothing twice.
  It has cuid's shape, "c" and 24 base-36 digits like the 25-character cuids of
  ``batch-autointerp.py`` (``Cuid(length=25)``): the importer takes any string, but the
  webapp's generated zod schemas check ``z.string().cuid()``. An Explanation's id hashes
  modelId, layer, index, typeName, explanationModelName and the description, so a new
  label of the same feature is a new explanation while the same one is the same row; a
  score's id hashes its explanation's id, type and model. A row already imported is kept as
  it is (DO NOTHING): changed score values of an unchanged label need the old row deleted;
* ``authorId`` (and a score's ``initiatedByUserId``) is `NEURONPEDIA_AUTHOR_ID`, the id
  ``batch-autointerp.py`` writes when ``DEFAULT_CREATOR_ID`` is unset (the default creator
  of the webapp's seed), unless `NeuronpediaBatchConfig.author_id` says otherwise;
* ``embedding`` null (Neuronpedia's 256-dimension OpenAI embedding of the description,
  which the webapp's search makes, not this package), ``triggeredByUserId`` and
  ``scoreV2`` null, ``scoreV1`` 0.0 (see `_explanation_row`), the ``umap_*`` columns null
  (no UMAP position: the webapp's plot skips nulls, where the column default 0 would put
  every label at the origin).

Neuronpedia's tooling has no file layout for ExplanationScore: the importer reads
explanations only, ``export-data.py`` exports none, and scores are rows its webapp's scorers
create. ``explanation_scores/batch-N.jsonl.gz`` is this package's layout, parallel to theirs:
the same gzip JSON Lines of whole rows (``asdict``-shaped like their Explanation rows), the
same numbering, fit for the same ``importJsonlString('ExplanationScore', ...)`` once the
explanations are in. Rows point at rows that must exist first: the User of ``authorId``, the
``Neuron`` (modelId, layer, index) and ``Model``, the ExplanationType ``token_space_gd``,
an ExplanationModelType per evaluator, an ExplanationScoreType per score type and an
ExplanationScoreModel per score model.

Batches hold `NeuronpediaBatchConfig.records_per_file` explanations (1024, the count per file
of Neuronpedia's ``export-data.py``), in feature order; the score file of the same number
holds their scores (none when they have none). Numbering, for resumable runs exported again
and again: a folder holds one export of this package per SAE, and a re-export *replaces* it
(its files are overwritten or removed), so labels finished since the last export are added
and nothing is there twice. Batch files that are not this package's export of this SAE
(``batch-autointerp.py``'s, another SAE's, unreadable ones) are never touched: the export
numbers its files after the highest of theirs, as ``batch-autointerp.py`` numbers after
existing files. Each file is written atomically (`files.atomic_write`) and byte for byte the
same for the same labels and ``created_at`` (gzip's header holds no time or name); a crash
leaves whole files of the old and the new export, which the next export replaces.

**Readable view** (`write_neuronpedia`, ``labels.to_neuronpedia(path)``, the
``neuronpedia.jsonl`` that ``tokenlabel label`` and ``tokenlabel export`` write): one line per
explanation with its descriptive columns (``id``, ``modelId``, ``layer``, ``index``,
``description``, ``typeName``, ``explanationModelName``, ``notes``) and its scores nested
(``explanationId``, ``value``, ``explanationScoreTypeName``, ``explanationScoreModelName``,
``jsonDetails``), the same rows as the import layout without the bookkeeping columns: for
reading, diffing and grepping, not for Neuronpedia's importer::

    {"id": "c3k0...", "modelId": "gpt2-small", "layer": "8-res-jb", "index": "0",
     "description": "animal", "typeName": "token_space_gd",
     "explanationModelName": "<evaluator>",
     "notes": "<JSON string: probability, converged, steps, ...>",
     "scores": [{"explanationId": "<the id above>", "value": 0.93,
                 "explanationScoreTypeName": "token_space_gd_heldout_balanced_accuracy",
                 "explanationScoreModelName": "<evaluator>", "jsonDetails": "<JSON string>"}]}

Score rows, for every finite value in the result's metrics (Neuronpedia's scorers name the
score type after the method, e.g. ``eleuther_fuzz``, ``recall_alt``, and the score model
after the model that scored):

* detection (`DETECTION_METRICS`, compare delphi's detection scorer):
  ``token_space_gd_<split>_<metric>`` with ``<split>`` ``heldout`` (else ``train`` when
  nothing was held out), scored by the evaluator (``explanationScoreModelName`` = evaluator);
* the scorers' metrics that their columns mark for Neuronpedia (`records.columns`, read from
  the run's info, so a user's own scorer is exported too): ``token_space_gd_<metric>``. The
  built-in ones: reflective coherence, ``token_space_gd_coherence_ratio`` and
  ``token_space_gd_coherence_hit_rate``, scored by the *subject* model whose SAE activations
  they measure (``explanationScoreModelName`` = the subject model's name; ``jsonDetails``
  holds the label and neutral activations and the coherence settings); steering,
  ``token_space_gd_steering_score``, the label's log-probability gain (nats) when the decoder
  direction is added to the subject model, minus a random direction's
  (`sae.scorers.steering`), scored by the subject model (``jsonDetails`` holds both gains).

The output side (tokens the decoder direction promotes) is no score; its top tokens go into
``notes``.

``modelId`` and ``layer`` come from the SAE's ``cfg.metadata.neuronpedia_id``
(``"<modelId>/<layer>-<source>"``), recorded when the SAE was labeled, or from the explicit
argument when the SAE had none.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from ..records.columns import ScoreColumn, score_columns
from ..records.files import atomic_write, atomic_write_lines
from ..records.names import METHOD
from ..records.result import LabelResult
from ..records.serial import Config
from .jsonl import UNREADABLE, batch_files, open_text


class Labels(Protocol):
    """What an export reads: feature index -> result, and the run's info (a `LabelSet`)."""

    info: dict[str, Any]

    def __iter__(self) -> Iterator[int]: ...

    def __getitem__(self, feature: int) -> LabelResult: ...

DETECTION_METRICS = ("balanced_accuracy", "f1", "auroc", "accuracy", "precision", "recall")
NOTES_OUTPUT_TOKENS = 10
"""Promoted tokens of the output side written into ``notes``."""
_LAYER_RE = re.compile(r"^\d+-\S+$")

READABLE_EXPLANATION_FIELDS = ("id", "modelId", "layer", "index", "description", "typeName",
                               "explanationModelName", "notes")
"""The Explanation columns of the readable view (``neuronpedia.jsonl``)."""
READABLE_SCORE_FIELDS = ("explanationId", "value", "explanationScoreTypeName",
                         "explanationScoreModelName", "jsonDetails")
"""The ExplanationScore columns nested in the readable view's ``scores``."""
EXPLANATIONS_DIR = "explanations"
"""Neuronpedia's folder of Explanation batches in a source's folder (its importer reads it)."""
EXPLANATION_SCORES_DIR = "explanation_scores"
"""This package's folder of ExplanationScore batches beside it (Neuronpedia has none)."""
NEURONPEDIA_AUTHOR_ID = "clkht01d40000jv08hvalcvly"
"""``batch-autointerp.py``'s authorId when ``DEFAULT_CREATOR_ID`` is unset: the default
creator that the webapp's seed (``apps/webapp/prisma/seed.ts``) makes, so the User exists."""
RECORDS_PER_FILE = 1024
"""Explanations per batch file of Neuronpedia's ``export-data.py``
(``FEATURES_EXPLANATIONS_BATCH_SIZE``)."""
IMPORT_MAX_FILES = 1000
"""Batch files Neuronpedia's importer reads from one folder: it lists ``explanations/`` with
one S3 ``ListObjectsV2`` call (``getFilesInPath`` in ``apps/webapp/lib/utils/s3.ts``), which
returns at most 1000 keys (of any name, before it keeps the ``.jsonl.gz`` ones) and is not
paged, so files past the 1000th would be skipped silently. An export that would leave more in
the folder is refused."""
IMPORT_MAX_BYTES = (1 << 29) - 24
"""Largest unzipped batch file the importer can read: it ungzips a file into one Node.js
string (``downloadAndDecompressFile``), and V8's strings hold at most 2^29 - 24 characters.
A file that would be larger is refused (at 1024 explanations per file, ours are about 1 MB)."""
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass
class NeuronpediaBatchConfig(Config):
    """How `write_neuronpedia_batches` writes Neuronpedia's import layout."""

    records_per_file: int = RECORDS_PER_FILE
    """Explanations per ``explanations/batch-N.jsonl.gz``; their scores go to the score file of
    the same number. Default: Neuronpedia's ``export-data.py`` count, 1024."""
    author_id: str = NEURONPEDIA_AUTHOR_ID
    """User id written as each Explanation's ``authorId`` and each score's
    ``initiatedByUserId``; that User must exist where the rows are imported. Default:
    ``batch-autointerp.py``'s fallback, the webapp seed's default creator."""

    def check(self) -> None:
        self.need(isinstance(self.records_per_file, int)
                  and not isinstance(self.records_per_file, bool)
                  and self.records_per_file >= 1,
                  f"records_per_file must be an int >= 1, got {self.records_per_file!r}")
        self.need(isinstance(self.author_id, str) and self.author_id.strip() != "",
                  "author_id must be the id of a Neuronpedia User, got "
                  f"{self.author_id!r}")


@dataclass(frozen=True)
class FeatureRecords:
    """One labeled feature as Neuronpedia rows."""

    explanation: dict[str, Any]
    """Its Explanation row: every column of ``model Explanation``, in the schema's order."""
    scores: list[dict[str, Any]]
    """Its ExplanationScore rows (every column of ``model ExplanationScore``), each pointing
    at it."""


@dataclass(frozen=True)
class NeuronpediaBatches:
    """What `write_neuronpedia_batches` did."""

    folder: Path
    """The source's folder holding ``explanations/`` and ``explanation_scores/``."""
    explanation_files: list[Path]
    """The Explanation batch files written, in number order."""
    score_files: list[Path]
    """The ExplanationScore batch files written, in number order."""
    explanations: int
    """Explanation rows written."""
    scores: int
    """ExplanationScore rows written."""
    removed: list[Path]
    """Files of this package's earlier export of the SAE that the new one no longer has."""


@dataclass(frozen=True)
class _Context:
    # What every row of one export shares.
    model_id: str
    layer: str
    subject: str
    author_id: str
    created_at: str


def parse_neuronpedia_id(neuronpedia_id: str) -> tuple[str, str]:
    """``"gpt2-small/8-res-jb"`` -> ``("gpt2-small", "8-res-jb")``."""
    model_id, sep, layer = str(neuronpedia_id).partition("/")
    if not sep or not model_id or not _LAYER_RE.match(layer):
        raise ValueError(
            f"neuronpedia_id {neuronpedia_id!r} is not '<modelId>/<layer>-<source>' (e.g. "
            "'gpt2-small/8-res-jb'). Pass the id Neuronpedia shows for this SAE."
        )
    return model_id, layer


def resolve_neuronpedia_id(labels: Labels, neuronpedia_id: str | None) -> str:
    recorded = labels.info.get("neuronpedia_id")
    if recorded and neuronpedia_id and recorded != neuronpedia_id:
        raise ValueError(
            f"The SAE's metadata says neuronpedia_id={recorded!r}, but {neuronpedia_id!r} was "
            "passed. Drop the argument, or relabel an SAE whose metadata has the id you want."
        )
    npid = recorded or neuronpedia_id
    if not npid:
        raise ValueError(
            "No Neuronpedia id: the SAE's cfg.metadata.neuronpedia_id was not set when it was "
            "labeled. Pass labels.to_neuronpedia(path, neuronpedia_id='<modelId>/<layer>-"
            "<source>') (CLI: --neuronpedia-id)."
        )
    return npid


def stable_cuid(*parts: str) -> str:
    """A deterministic id of cuid's shape: "c" and 24 base-36 digits of the SHA-256 of
    `parts` (124 bits). It passes the ``z.string().cuid()`` (``/^c[^\\s-]{8,}$/i``) and cuid2
    (``/^[0-9a-z]+$/``) checks of Neuronpedia's webapp."""
    n = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest(), "big")
    digits = []
    for _ in range(24):
        n, d = divmod(n, 36)
        digits.append(_BASE36[d])
    return "c" + "".join(digits)


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _scores(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    """Detection scores: (``<split>_<metric>``, value) of the held-out split if any."""
    split = "heldout" if any(k.startswith("heldout_") for k in metrics) else "train"
    out = []
    for m in DETECTION_METRICS:
        v = metrics.get(f"{split}_{m}")
        if _finite(v):
            out.append((f"{split}_{m}", float(v)))
    return out


def _scorer_values(r: LabelResult, columns: list[ScoreColumn], evaluator: str, subject: str
                   ) -> list[tuple[str, float, str, dict[str, Any]]]:
    """The scorers' metrics written as ExplanationScores (`ScoreColumn.neuronpedia`), each
    with its details (the other metrics it names, its scorer's prefix removed; the settings
    it was measured with)."""
    out = []
    for c in columns:
        value = r.metrics.get(c.key)
        if not c.neuronpedia or not _finite(value):
            continue
        prefix = c.key.split("_", 1)[0] + "_"
        details: dict[str, Any] = {k.removeprefix(prefix): r.metrics[k] for k in c.details
                                   if _finite(r.metrics.get(k))}
        if c.details_config is not None:
            details["config"] = getattr(r.extra, c.details_config, None)
        model = subject if c.scored_by == "subject" else evaluator
        out.append((c.key, float(value), model, details))
    return out


def _score_values(r: LabelResult, evaluator: str, subject: str, columns: list[ScoreColumn]
                  ) -> list[tuple[str, float, str, dict[str, Any]]]:
    """(score name, value, the model that scored, details) of every finite score of `r`: the
    hard label's detection scores (by the evaluator), then the scorers' (`columns`)."""
    details = {"n_examples": r.n_examples, "n_heldout": r.n_heldout,
               "threshold_rule": r.threshold_rule}
    out = [(name, value, evaluator, details) for name, value in _scores(r.metrics)]
    return out + _scorer_values(r, columns, evaluator, subject)


def _notes(r: LabelResult) -> str:
    # How the label was found first: an amortised label ran no descent, its `probability`
    # is the map's share of its proposal and it converged by definition.
    notes: dict[str, Any] = {"verdict": r.verdict.value if r.verdict else None,
             "verdict_reason": r.verdict.reason if r.verdict else None,
             "heldout_interval": ([r.verdict.low, r.verdict.high]
                                  if r.verdict and r.verdict.low is not None else None),
             "method": r.method, "probability": r.probability, "converged": r.converged,
             "steps": r.steps, "label_tokens": r.label_tokens,
             "threshold_rule": r.threshold_rule, "n_examples": r.n_examples,
             "n_active": r.n_active}
    if r.polysemantic is not None:
        # One label does not explain the feature: say so beside the label.
        notes["polysemantic"] = r.polysemantic.to_dict()
    side = r.extra.output_side
    if side is not None:
        notes["output_promoted"] = [p.token for p in side.promoted[:NOTES_OUTPUT_TOKENS]]
        notes["output_label_rank"] = r.metrics.get("output_label_rank")
    return json.dumps(notes, ensure_ascii=False)


def _explanation_row(ctx: _Context, feature: int, r: LabelResult, evaluator: str
                     ) -> dict[str, Any]:
    index = str(feature)  # Neuronpedia's index column is a String
    return {
        "id": stable_cuid(ctx.model_id, ctx.layer, index, METHOD, evaluator, r.label),
        "modelId": ctx.model_id, "layer": ctx.layer, "index": index,
        "embedding": None, "description": r.label, "authorId": ctx.author_id,
        "triggeredByUserId": None, "notes": _notes(r),
        # 0.0, the column's default, not a score of ours: Neuronpedia orders a feature's
        # explanations by scoreV2 then scoreV1 (lib/db/neuron.ts), a legacy column where
        # other explainers' labels sit at 0; a balanced accuracy there (0.5 = chance) would
        # put every token_space_gd label first. The scores go in ExplanationScore rows.
        "scoreV1": 0.0, "scoreV2": None,
        "umap_x": None, "umap_y": None, "umap_cluster": None, "umap_log_feature_sparsity": None,
        "typeName": METHOD, "explanationModelName": evaluator,
        "createdAt": ctx.created_at, "updatedAt": ctx.created_at,
    }


def _score_row(ctx: _Context, explanation_id: str,
               score: tuple[str, float, str, dict[str, Any]]) -> dict[str, Any]:
    name, value, model, details = score
    type_name = f"{METHOD}_{name}"
    return {"id": stable_cuid(explanation_id, type_name, model),
            "initiatedByUserId": ctx.author_id, "value": float(value),
            "explanationId": explanation_id, "explanationScoreTypeName": type_name,
            "explanationScoreModelName": model,
            "jsonDetails": json.dumps(details, ensure_ascii=False, allow_nan=False),
            "createdAt": ctx.created_at}


def _timestamp(created_at: datetime | None) -> str:
    """ISO 8601 in UTC to the millisecond (Postgres keeps ``timestamp(3)``); a naive
    `created_at` is local time, as ``datetime.now()`` gives."""
    t = created_at if created_at is not None else datetime.now(UTC)
    return t.astimezone(UTC).isoformat(timespec="milliseconds")


def feature_records(labels: Labels, neuronpedia_id: str | None = None,
                    author_id: str = NEURONPEDIA_AUTHOR_ID,
                    created_at: datetime | None = None) -> list[FeatureRecords]:
    """The Explanation row and ExplanationScore rows of every labeled feature, in feature
    order: what both writers write. `created_at` (default: now) is every row's
    ``createdAt``."""
    model_id, layer = parse_neuronpedia_id(resolve_neuronpedia_id(labels, neuronpedia_id))
    ctx = _Context(model_id, layer, str(labels.info.get("model_name") or "unknown"),
                   author_id, _timestamp(created_at))
    columns = score_columns(labels.info)
    out = []
    for f in labels:
        r = labels[f]
        if r.status != "ok":
            continue
        evaluator = r.evaluator or str(labels.info.get("evaluator") or "unknown")
        explanation = _explanation_row(ctx, f, r, evaluator)
        out.append(FeatureRecords(explanation, [
            _score_row(ctx, explanation["id"], s)
            for s in _score_values(r, evaluator, ctx.subject, columns)]))
    return out


def explanation_records(labels: Labels, neuronpedia_id: str | None = None
                        ) -> list[dict[str, Any]]:
    """The readable view: each explanation's descriptive columns, its scores nested."""
    return [{**{k: fr.explanation[k] for k in READABLE_EXPLANATION_FIELDS},
             "scores": [{k: s[k] for k in READABLE_SCORE_FIELDS} for s in fr.scores]}
            for fr in feature_records(labels, neuronpedia_id)]


def write_neuronpedia(labels: Labels, path: str | Path,
                      neuronpedia_id: str | None = None) -> int:
    """The readable view as JSON Lines at `path`; returns the number of explanations."""
    records = explanation_records(labels, neuronpedia_id)
    atomic_write_lines(path, (json.dumps(rec, ensure_ascii=False, allow_nan=False)
                              for rec in records))
    return len(records)


def _first_row(path: Path) -> dict[str, Any] | None:
    """The first line of a batch file as a dict; None when it is unreadable or not one."""
    try:
        with open_text(path) as fh:
            row = json.loads(fh.readline())
    except (*UNREADABLE, ValueError):
        return None
    return row if isinstance(row, dict) else None


def _is_ours(row: dict[str, Any] | None, model_id: str, layer: str, kind: str) -> bool:
    """Whether a batch file's first row is one this package wrote for this SAE (`kind`:
    ``"explanation"`` or ``"score"``; a score row names no SAE, see `_earlier_export`)."""
    if row is None:
        return False
    if kind == "explanation":
        return (row.get("typeName"), row.get("modelId"), row.get("layer")) == (
            METHOD, model_id, layer)
    return str(row.get("explanationScoreTypeName", "")).startswith(f"{METHOD}_")


def _earlier_export(folder: Path, model_id: str, layer: str) -> tuple[list[Path], int]:
    """This package's earlier export of the SAE in `folder` (its files, score files first),
    and the first batch number after every other batch file there.

    A number is ours when its explanation file is (its first row is a token_space_gd
    explanation of this modelId and layer); a score file goes with the explanation file
    of its number, and only a score file without one is judged by its own rows."""
    explanations = batch_files(folder / EXPLANATIONS_DIR)
    scores = batch_files(folder / EXPLANATION_SCORES_DIR)
    ours, theirs = [], []
    for n in sorted(explanations.keys() | scores.keys()):
        kind, files = (("explanation", explanations[n]) if n in explanations
                       else ("score", scores[n]))
        if all(_is_ours(_first_row(p), model_id, layer, kind) for p in files):
            ours.append(n)
        else:
            theirs.append(n)
    files = [p for n in ours for p in scores.get(n, [])]
    files += [p for n in ours for p in explanations.get(n, [])]
    return files, (max(theirs) + 1 if theirs else 0)


def _batch_lines(rows: list[dict[str, Any]], path: Path) -> list[bytes]:
    """A batch file's lines, as ``batch-autointerp.py`` writes them (``json.dump`` of each
    row); more than the importer reads in one file (`IMPORT_MAX_BYTES`) is a ValueError."""
    lines = [(json.dumps(row, allow_nan=False) + "\n").encode("utf-8") for row in rows]
    size = sum(len(line) for line in lines)
    if size > IMPORT_MAX_BYTES:
        raise ValueError(f"{path.name} would hold {size:,} bytes unzipped, more than "
                         f"Neuronpedia's importer reads from one file ({IMPORT_MAX_BYTES:,}); "
                         "pass a smaller --records-per-file.")
    return lines


def _write_batch(path: Path, lines: list[bytes]) -> Path:
    """Gzipped JSON Lines (`_batch_lines`); atomic. The gzip header gets no time and no
    name, so the same rows give the same bytes."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                  mtime=0) as gz:
            for line in lines:
                gz.write(line)

    return atomic_write(path, write)


def _check_file_count(folder: Path, earlier: list[Path], n_records: int, k: int) -> None:
    """Refuse an export that would leave more explanation files in the folder than
    Neuronpedia's importer lists (`IMPORT_MAX_FILES`), before anything is written."""
    where = folder / EXPLANATIONS_DIR
    # The importer's listing counts every key under the folder, before it keeps *.jsonl.gz.
    present = sum(p.is_file() for p in where.rglob("*")) if where.is_dir() else 0
    theirs = present - sum(p.parent == where for p in earlier)
    ours = -(-n_records // k)
    if theirs + ours > IMPORT_MAX_FILES:
        need = -(-n_records // max(1, IMPORT_MAX_FILES - theirs))
        raise ValueError(
            f"{ours} batch files of {k} explanations (and {theirs} other files there) would "
            f"leave {theirs + ours} files in {folder / EXPLANATIONS_DIR}; Neuronpedia's "
            f"importer lists at most {IMPORT_MAX_FILES} of them. Pass --records-per-file "
            f"{need} or more (or export into an empty folder).")


def write_neuronpedia_batches(labels: Labels, folder: str | Path,
                              neuronpedia_id: str | None = None,
                              config: NeuronpediaBatchConfig | None = None,
                              created_at: datetime | None = None) -> NeuronpediaBatches:
    """Neuronpedia's import layout in `folder` (a source's folder, ``<modelId>/<layer>``):
    ``explanations/batch-N.jsonl.gz`` and ``explanation_scores/batch-N.jsonl.gz``, replacing
    this package's earlier export of the SAE there (see the module docstring). `created_at`
    (default: now) is every row's ``createdAt``. A missing or bad Neuronpedia id raises
    ValueError before any file is touched."""
    config = config or NeuronpediaBatchConfig()
    records = feature_records(labels, neuronpedia_id, config.author_id, created_at)
    model_id, layer = parse_neuronpedia_id(resolve_neuronpedia_id(labels, neuronpedia_id))
    folder = Path(folder)
    earlier, first = _earlier_export(folder, model_id, layer)
    k = config.records_per_file
    _check_file_count(folder, earlier, len(records), k)
    explanation_files, score_files, n_scores = [], [], 0
    for i, start in enumerate(range(0, len(records), k)):
        chunk = records[start:start + k]
        name = f"batch-{first + i}.jsonl.gz"
        path = folder / EXPLANATIONS_DIR / name
        explanation_files.append(_write_batch(path, _batch_lines(
            [fr.explanation for fr in chunk], path)))
        rows = [s for fr in chunk for s in fr.scores]
        if rows:  # an empty file would be no JSON Lines to an importer
            path = folder / EXPLANATION_SCORES_DIR / name
            score_files.append(_write_batch(path, _batch_lines(rows, path)))
            n_scores += len(rows)
    kept = set(explanation_files) | set(score_files)
    removed = [p for p in earlier if p not in kept]
    for p in removed:  # score files first: no score is left without its explanation
        p.unlink(missing_ok=True)
    return NeuronpediaBatches(folder, explanation_files, score_files, len(records), n_scores,
                              removed)
