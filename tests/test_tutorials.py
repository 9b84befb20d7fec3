"""The tutorials run as written, through a real Jupyter kernel (nbclient), offline on CPU:
notebook 01 with the toy evaluator, notebook 02 in its offline mode (planted SAE, tiny subject
model, toy evaluator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def run_notebook(name: str, cwd: Path, monkeypatch, **env: str) -> tuple[object, str]:
    """Execute a tutorial in a fresh ``python3`` kernel started in `cwd` with `env` set;
    returns the executed notebook and everything its cells printed."""
    import nbclient
    import nbformat

    for key, value in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits the environment at start
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    printed = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                printed.append(out["text"])
            elif "data" in out and "text/plain" in out["data"]:
                printed.append(out["data"]["text/plain"])
    return nb, "".join(printed)


@pytest.mark.slow
@pytest.mark.subprocess
def test_quickstart_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    _, out = run_notebook("01_quickstart.ipynb", tmp_path, monkeypatch,
                          TOKENLABEL_EVALUATOR="toy")
    assert "evaluator: toy-llama-evaluator" in out
    assert "label: 'animal'" in out
    # The last cell prints the result's JSON form.
    last = json.loads(out.strip().splitlines()[-1])
    assert last["label"] == "animal" and last["converged"] is True


def test_quickstart_llama_switch_says_what_it_needs(monkeypatch):
    """The switch, without a GPU: a clear error, not a download. (Run in-process: starting a
    kernel only to see one error is slow.)"""
    import torch

    if torch.cuda.is_available():
        pytest.skip("with a GPU the switch really loads Llama-3-8B-Instruct")
    import nbformat

    monkeypatch.setenv("TOKENLABEL_EVALUATOR", "llama")
    nb = nbformat.read(TUTORIALS / "01_quickstart.ipynb", as_version=4)
    namespace: dict = {}
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    exec(compile(code[0], "cell", "exec"), namespace)  # noqa: S102
    assert namespace["EVALUATOR"] == "llama"
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        exec(compile(code[1], "cell", "exec"), namespace)  # noqa: S102


@pytest.mark.slow
@pytest.mark.subprocess
def test_label_an_sae_notebook_runs_offline(tmp_path, monkeypatch):
    _, out = run_notebook("02_label_an_sae.ipynb", tmp_path, monkeypatch,
                          TOKENLABEL_TUTORIAL_OFFLINE="1")
    assert "mode: offline" in out
    # The planted animal feature gets the toy evaluator's concept; the dead one says so.
    assert "feature 0: 'animal'" in out
    assert "feature 2: dead" in out
    written = tmp_path / "tutorial_02_output"
    records = [json.loads(line) for line in
               (written / "neuronpedia.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["index"] for r in records} >= {"0"} and records[0]["description"]
    assert (written / "sae" / "tokenlabel_labels.json").is_file()
    assert (written / "sae" / "cfg.json").is_file()
