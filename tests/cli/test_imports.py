"""Light imports: `import saelens_tokenlabel` and the read-only commands (`--help`, `status`,
`export`, `report`) load no torch, TransformerLens or SAELens; every public name still loads
on first access."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import saelens_tokenlabel as stl
from saelens_tokenlabel.records.result import LabelResult, Trajectory
from saelens_tokenlabel.run import RunStore

HEAVY = ("torch", "transformer_lens", "sae_lens")

RUN = """
import contextlib, io, json, sys
HEAVY = ("torch", "transformer_lens", "sae_lens")
from saelens_tokenlabel.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exc:
        code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue()}))
"""


def run_cli(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUN, json.dumps(list(argv))],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A run store with three finished results and two pending features."""
    d = tmp_path_factory.mktemp("fake_run")
    with RunStore(d) as store:
        store.set_meta(info={"hook_name": "blocks.0.hook_resid_pre", "model_name": "m",
                             "d_sae": 5, "evaluator": "toy"})
        store.add_features(range(5))
        store.put([LabelResult(label=f"w{i}", label_tokens=[f"w{i}"], label_token_ids=[i],
                               probability=0.9, converged=True, steps=3,
                               metrics={"heldout_balanced_accuracy": 0.9},
                               trajectory=Trajectory(), feature=i) for i in range(3)])
    return d


def test_import_is_light():
    code = ("import sys, saelens_tokenlabel as stl; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [("--help",), ("status", "{run}"), ("status", "{run}", "--json"),
                                  ("export", "{run}", "--to", "{tmp}/export", "--format", "csv"),
                                  ("report", "{run}", "--out", "{tmp}/report", "--no-plots")])
def test_read_only_commands_load_no_torch(argv, fake_run, tmp_path):
    got = run_cli(*(a.format(run=fake_run, tmp=tmp_path) for a in argv))
    assert got["heavy"] == []
    assert got["code"] in (0, 2)  # export: 2, no Neuronpedia id; the table is written
    if argv[0] == "status" and "--json" not in argv:
        assert "3/5 finished" in got["out"]
    if argv[0] == "report":
        assert (tmp_path / "report" / "index.html").is_file()
    if argv[0] == "export":
        assert (tmp_path / "export" / "labels.csv").is_file()


def test_every_public_name_loads_on_access():
    assert set(stl.__all__) <= set(dir(stl))
    for name in stl.__all__:
        assert getattr(stl, name) is not None, name
    assert stl.LabelSet is stl.sae.LabelSet and stl.CacheConfig is stl.sae.CacheConfig
    assert stl.label_sae_features.__module__ == "saelens_tokenlabel.run.pipeline"
    for pkg in (stl.sae, stl.run, stl.report):
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None, (pkg.__name__, name)
        assert set(pkg.__all__) <= set(dir(pkg))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        stl.nope  # noqa: B018
    from saelens_tokenlabel.report import load_run
    from saelens_tokenlabel.report.load import load_run as direct

    assert load_run is direct


def test_lower_layers_do_not_import_the_cli():
    import pathlib
    import re

    root = pathlib.Path(stl.__file__).parent
    pattern = re.compile(r"^\s*(from\s+(saelens_tokenlabel|\.+)\s*\.?\s*cli\b|"
                         r"from\s+\.\.?\s+import\s+cli\b|import\s+saelens_tokenlabel\.cli)",
                         re.M)
    # `python -m saelens_tokenlabel` (`__main__.py`) is the one module above the CLI.
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.parent.name != "cli" and p.relative_to(root).as_posix() != "__main__.py"
                 and pattern.search(p.read_text())]
    assert offenders == []
