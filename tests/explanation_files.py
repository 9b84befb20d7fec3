"""Writers of existing explanations in the layouts `tokenlabel compare` reads (Neuronpedia
JSON Lines, gzipped, a batch folder; delphi's explanations folder; feature<TAB>text), so that a
test can give the same explanations in every layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

NEURONPEDIA_ID = ("tiny-subject", "0-res-test")


def np_record(feature: int, text: str, type_name: str = "oai_token-act-pair",
              model: str = "gpt-4o-mini") -> dict:
    """One explanation as Neuronpedia's exports write it (index a string)."""
    model_id, layer = NEURONPEDIA_ID
    return {"id": f"x{feature}-{type_name}", "modelId": model_id, "layer": layer,
            "index": str(feature), "description": text, "typeName": type_name,
            "explanationModelName": model, "authorId": "a", "notes": None,
            "scores": [], "umap_x": None}


def _lines(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_layouts(explanations: dict[int, str], directory: Path,
                  later: dict[int, str] | None = None) -> dict[str, Path]:
    """`explanations` in every layout under `directory`. `later` are duplicates written after
    them (Neuronpedia and TSV layouts only, as the rule "first by file order" must drop them;
    delphi has one file per latent)."""
    directory.mkdir(parents=True, exist_ok=True)
    later = later or {}
    first = [np_record(f, t) for f, t in explanations.items()]
    dups = [np_record(f, t, type_name="other") for f, t in later.items()]
    out = {"jsonl": directory / "explanations.jsonl", "gz": directory / "explanations.jsonl.gz"}
    out["jsonl"].write_text(_lines(first + dups), encoding="utf-8")
    with gzip.open(out["gz"], "wt", encoding="utf-8") as fh:
        fh.write(_lines(first + dups))
    # Batches: the first explanations in batch-2, the duplicates in batch-10, so that reading
    # batches by name (batch-10 < batch-2) instead of by number would keep the wrong ones.
    batches = directory / "np" / "explanations"
    batches.mkdir(parents=True)
    (batches / "batch-0.jsonl").write_text("", encoding="utf-8")
    with gzip.open(batches / "batch-2.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(_lines(first))
    with gzip.open(batches / "batch-10.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(_lines(dups))
    out["batches"] = batches
    delphi = directory / "delphi" / "explanations"
    delphi.mkdir(parents=True)
    for f, t in explanations.items():
        # delphi: f"{module}_latent{index}.txt" holding orjson.dumps(explanation).
        (delphi / f"layers.0_latent{f}.txt").write_bytes(json.dumps(t).encode())
    out["delphi"] = delphi
    out["tsv"] = directory / "explanations.tsv"
    rows = ["feature\texplanation"] + [f"{f}\t{t}" for f, t in explanations.items()]
    rows += [f"{f}\t{t}" for f, t in later.items()]
    out["tsv"].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out
