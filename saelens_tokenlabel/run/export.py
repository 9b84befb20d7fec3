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
from ..records.files import atomic_write
from ..records.names import NEURONPEDIA_DIR, NEURONPEDIA_JSONL, SIDECAR_FILENAME
from ..records.result import LabelResult
from .store import RunStore

TABLE_STEM = "labels"
TABLE_COLUMNS = ("feature", "status", "label", "verdict", "heldout_low", "heldout_high",
                 "method", "probability", "converged", "steps", "attempts", "polysemantic",
                 "verdict_reason", "error")


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
            "attempts": int(row["attempts"]),
            "polysemantic": (" + ".join(r.polysemantic.labels)
                             if r is not None and r.polysemantic is not None else None),
            "error": row["error"],
        }
        for m in metric_names:
            v = r.metrics.get(m) if r is not None else None
            out[_metric_column(m)] = (float(v) if isinstance(v, int | float)
                                      and math.isfinite(v) else None)
        rows.append(out)
    return [*TABLE_COLUMNS, *map(_metric_column, metric_names)], rows


def _verdict_cells(r: Any) -> dict[str, Any]:
    v = r.verdict if r is not None else None
    return {"verdict": v.value if v else None, "heldout_low": v.low if v else None,
            "heldout_high": v.high if v else None, "verdict_reason": v.reason if v else None}


def _metric_column(name: str) -> str:
    """A metric's column: its own name, unless that is one of the row's own columns (the
    optimisation's "attempts" is not the store's)."""
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
             "attempts": pa.int64(), "error": pa.string()}
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
    the labels whose verdict is ``explained`` (the sidecar and the table keep every feature)."""
    directory = Path(directory)
    out = Path(out_dir) if out_dir is not None else (
        directory if directory.is_dir() else directory.parent)
    written: dict[str, Any] = {}
    with RunStore(directory, create=False) as store:
        # One pass over the results: each written whole into the sidecar as it is read, and
        # kept slim (`slim_result`) for the Neuronpedia rows and the table.
        labels = LabelSet(info=store.get_meta("info", {}))
        batch_folder = None
        if neuronpedia_batches is not None:
            model_id, layer = parse_neuronpedia_id(resolve_neuronpedia_id(labels,
                                                                          neuronpedia_id))
            # The folder of the source in Neuronpedia's dataset layout (its importer reads
            # <modelId>/<sourceId>/explanations/), so the tree copies onto a bucket as it is.
            batch_folder = out / NEURONPEDIA_DIR / model_id / layer
        out.mkdir(parents=True, exist_ok=True)

        def kept() -> Iterator[LabelResult]:
            for r in store.iter_results():
                labels.add(slim_result(r))
                yield r

        written["sidecar"] = save_streamed(out / SIDECAR_FILENAME, labels.info, kept(),
                                           labels.summary)
        shared = labels.only_explained() if only_explained else labels
        written.update(_write_neuronpedia_jsonl(shared, out, neuronpedia_id))
        if batch_folder is not None:
            written["neuronpedia_batches"] = shared.to_neuronpedia_batches(
                batch_folder, neuronpedia_id, neuronpedia_batches,
                created_at=_run_created_at(store))
        written["table"] = write_table(store, out, table_format, labels)
    return written


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
