"""The quickstart notebook's code runs as written (offline, toy evaluator)."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "tutorials" / "01_quickstart.ipynb"


def test_quickstart_notebook_runs(capsys):
    nb = json.loads(NOTEBOOK.read_text())
    namespace: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)  # noqa: S102
    assert namespace["result"].label == "animal"
    assert "'animal'" in capsys.readouterr().out
