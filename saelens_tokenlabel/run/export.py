"""What a run's store turns into: the sidecar JSON, Neuronpedia JSONL (and on request
Neuronpedia's import layout), and a flat table (Parquet when pyarrow is installed, else CSV)
with one row per feature."""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..formats.labelset import LabelSet, save_streamed, slim_result
from ..formats.neuronpedia import (
    NeuronpediaBatchConfig,
    parse_neuronpedia_id,
    resolve_neuronpedia_id,
)
from ..records.columns import COUNT_METRICS, as_count
from ..records.files import atomic_write
from ..records.names import NEURONPEDIA_DIR, NEURONPEDIA_JSONL, SIDECAR_FILENAME
from ..records.result import LabelResult
from .outputs import Outputs
from .store import RunStore

TABLE_STEM = "labels"
TABLE_COLUMNS = ("feature", "status", "label", "verdict", "heldout_low", "heldout_high",
                 "method", "probability", "converged", "steps", "retries", "polysemantic",
                 "verdict_reason", "error")
"""The row's own columns; every metric of the results gets one more. ``retries``: how often a
later process started the feature again (the store's process starts less one); the
optimisation's ``attempts`` is a metric column of its own."""


def has_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def table_rows(store: RunStore, results: Mapping[int, LabelResult] | None = None
               ) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows: one row per feature in the store (finished or not); the metrics of
    every result become columns of their own. `results`: the store's finished results when
    the caller has read them already (they are not read twice)."""
    if results is None:
        results = {int(r.feature): r for r in store.iter_results()}
    metric_names = sorted({k for r in results.values() for k, v in r.metrics.items()
                           if isinstance(v, int | float)})
    rows = []
    for row in store.rows():
        r = results.get(int(row["feature"]))
        out: dict[str, Any] = {
            "feature": int(row["feature"]), "status": row["status"],
            "label": r.label if r is not None and r.status == "ok" else None,
            **_verdict_cells(r),
            "method": r.method if r is not None and r.status == "ok" else None,
            "probability": r.probability if r is not None else None,
            "converged": r.converged if r is not None else None,
            "steps": r.steps if r is not None else None,
            "retries": max(0, int(row["starts"]) - 1),
            "polysemantic": (" + ".join(r.polysemantic.labels)
                             if r is not None and r.polysemantic is not None else None),
            "error": row["error"],
        }
        for m in metric_names:
            v = r.metrics.get(m) if r is not None else None
            out[_metric_column(m)] = (as_count(m, float(v)) if isinstance(v, int | float)
                                      and math.isfinite(v) else None)
        rows.append(out)
    return [*TABLE_COLUMNS, *map(_metric_column, metric_names)], rows


def _verdict_cells(r: Any) -> dict[str, Any]:
    v = r.verdict if r is not None else None
    return {"verdict": v.value if v else None, "heldout_low": v.low if v else None,
            "heldout_high": v.high if v else None, "verdict_reason": v.reason if v else None}


def _metric_column(name: str) -> str:
    """A metric's column: its own name, unless that is one of the row's own columns (a
    metric called "steps" is not the row's)."""
    return f"metric_{name}" if name in TABLE_COLUMNS else name


def write_table(store: RunStore, out_dir: Path, fmt: str | None = None,
                results: Mapping[int, LabelResult] | None = None) -> Path:
    """`labels.parquet` (fmt "parquet", or None with pyarrow installed) or `labels.csv`."""
    fmt = fmt or ("parquet" if has_pyarrow() else "csv")
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"table format must be parquet or csv, got {fmt!r}")
    columns, rows = table_rows(store, results)
    if fmt == "parquet" and not has_pyarrow():
        raise ValueError("Parquet needs pyarrow: pip install 'saelens-tokenlabel[parquet]', "
                         "or export CSV.")

    def write(tmp: Path) -> None:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows, schema=_schema(pa, columns)), tmp)
        else:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=columns)
                w.writeheader()
                w.writerows(rows)

    return atomic_write(out_dir / f"{TABLE_STEM}.{fmt}", write)


def _schema(pa: Any, columns: list[str]) -> Any:
    types = {"feature": pa.int64(), "status": pa.string(), "label": pa.string(),
             "verdict": pa.string(), "verdict_reason": pa.string(),
             "method": pa.string(), "polysemantic": pa.string(),
             "probability": pa.float64(), "converged": pa.bool_(), "steps": pa.int64(),
             "retries": pa.int64(), "error": pa.string(),
             **{m: pa.int64() for m in COUNT_METRICS}}
    return pa.schema([(c, types.get(c, pa.float64())) for c in columns])


def export_run(directory: str | Path, out_dir: str | Path | None = None,
               neuronpedia_id: str | None = None, table_format: str | None = None,
               neuronpedia_batches: NeuronpediaBatchConfig | None = None,
               only_explained: bool = False) -> dict[str, Any]:
    """Write the sidecar, the Neuronpedia JSONL and the table of the run in `directory` into
    `out_dir` (default: `directory`). Returns what was written (name -> path), and under
    ``"neuronpedia_error"`` why the JSONL was not, when it was not (no Neuronpedia id).

    With `neuronpedia_batches`, also Neuronpedia's import layout under
    ``out_dir/neuronpedia/<modelId>/<layer>/`` (``"neuronpedia_batches"``: a
    `NeuronpediaBatches`); asked for by name, a missing Neuronpedia id is then a ValueError,
    raised before anything is written. With `only_explained`, the Neuronpedia files hold only
    the labels whose verdict is ``explained`` (the sidecar and the table keep every feature).

    A damaged store is read in salvage mode: every result that can be read is written, and
    ``"damaged"`` maps the features that cannot be read to why. A file that cannot be written
    (read-only folder, full disk) does not stop the others; then `OutputNotWrittenError`
    names them (`outputs.Outputs`)."""
    directory = Path(directory)
    out = Path(out_dir) if out_dir is not None else (
        directory if directory.is_dir() else directory.parent)
    written: dict[str, Any] = {}
    with RunStore(directory, create=False, salvage=True) as store:
        labels = LabelSet(info=store.get_meta("info", {}))  # filled by `_sidecar`
        batch_folder = None
        if neuronpedia_batches is not None:
            model_id, layer = parse_neuronpedia_id(resolve_neuronpedia_id(labels,
                                                                          neuronpedia_id))
            # The folder of the source in Neuronpedia's dataset layout (its importer reads
            # <modelId>/<sourceId>/explanations/), so the tree copies onto a bucket as it is.
            batch_folder = out / NEURONPEDIA_DIR / model_id / layer
        outputs = Outputs(out, store.path, store.count_finished())
        outputs.write("the folder itself", lambda: out.mkdir(parents=True, exist_ok=True))
        outputs.check()  # no folder, no files
        written["sidecar"] = _sidecar(store, out, labels, outputs)
        shared = labels.only_explained() if only_explained else labels
        written.update(outputs.write(NEURONPEDIA_JSONL, lambda: _write_neuronpedia_jsonl(
            shared, out, neuronpedia_id)) or {})
        if batch_folder is not None:
            written["neuronpedia_batches"] = outputs.write(
                f"{NEURONPEDIA_DIR}/", lambda: shared.to_neuronpedia_batches(
                    batch_folder, neuronpedia_id, neuronpedia_batches,
                    created_at=_run_created_at(store)))
        fmt = table_format or ("parquet" if has_pyarrow() else "csv")
        written["table"] = outputs.write(f"{TABLE_STEM}.{fmt}",
                                         lambda: write_table(store, out, fmt, labels))
        written["damaged"] = dict(sorted(store.damaged.items()))
    outputs.check()
    return written


def _sidecar(store: RunStore, out: Path, labels: LabelSet, outputs: Outputs) -> Path | None:
    """The sidecar, in one pass over the results: each written whole as it is read, and kept
    slim (`slim_result`) in `labels` for the Neuronpedia rows and the table."""

    def kept() -> Iterator[LabelResult]:
        for r in store.iter_results():
            labels.add(slim_result(r))
            yield r

    path = outputs.write(SIDECAR_FILENAME, lambda: save_streamed(
        out / SIDECAR_FILENAME, labels.info, kept(), labels.summary))
    if path is None:  # stopped part-way: the other files still get every label
        for r in store.iter_results():
            labels.add(slim_result(r))
    return path


def _write_neuronpedia_jsonl(labels: LabelSet, out: Path, neuronpedia_id: str | None
                             ) -> dict[str, Any]:
    try:
        n = labels.to_neuronpedia(out / NEURONPEDIA_JSONL, neuronpedia_id)
    except ValueError as err:
        return {"neuronpedia_error": str(err)}
    return {"neuronpedia_records": n, "neuronpedia": out / NEURONPEDIA_JSONL}


def _run_created_at(store: RunStore) -> datetime | None:
    """When the run began: every exported row's ``createdAt``, so that exporting the same
    labels again writes the same bytes."""
    ts = store.get_meta("created_at")
    return datetime.fromtimestamp(ts, UTC) if isinstance(ts, int | float) else None
