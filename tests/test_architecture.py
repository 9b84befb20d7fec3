"""The architecture rules of docs/architecture.md, checked so that they stay true: the layers point
one way and nothing imports in a cycle (import-linter's contracts in pyproject.toml, which
count imports inside functions too); functions stay small; an import inside a function is a
lazy import of a lower layer for speed, never a way round a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "saelens_tokenlabel"
MAX_LINES = 60
MAX_PARAMS = 8
# The public entry point keeps its documented call: sae, model, evaluator, corpus, features,
# config, and the cache/examples/run options (each a config object).
WIDE_SIGNATURES = {"run/pipeline.py:label_sae_features"}
# Modules that may import package modules inside a function: the CLI (a command imports
# what it needs when it runs, so --help and status stay light), optional or heavy pieces
# (matplotlib plots, Ray, the toy evaluator's weights, attribution), and the plugin's method.
LAZY_IMPORTERS = {"cli/compare.py", "cli/demo.py", "cli/label.py", "cli/shared.py",
                  "cli/synthetic.py",
                  "report/html.py",
                  "run/pipeline.py", "run/plugin.py", "toy/__init__.py", "toy/features.py"}


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(PACKAGE).as_posix(), node


@pytest.mark.subprocess
def test_import_contracts_hold():
    # In a subprocess: import-linter reconfigures logging, which would blind later tests'
    # caplog in this process.
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    for name in ("Layers point one way", "No import cycles", "need results, not the SAE"):
        assert name in out.stdout


def test_the_layer_contract_names_every_module():
    """`exhaustive = true`: a new top-level module must be given a layer."""
    import tomllib

    cfg = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers")
    assert layers.get("exhaustive") is True
    named = {m.strip() for layer in layers["layers"] for m in layer.replace("|", ":").split(":")}
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert present <= named, sorted(present - named)


def test_no_function_is_long_or_takes_many_parameters():
    too_long, too_wide = [], []
    for where, fn in _functions():
        a = fn.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
        n = len(params) - (1 if params and params[0].arg in ("self", "cls") else 0)
        lines = fn.end_lineno - fn.lineno + 1
        if lines > MAX_LINES:
            too_long.append(f"{where}:{fn.lineno} {fn.name} ({lines} lines)")
        if n > MAX_PARAMS and f"{where}:{fn.name}" not in WIDE_SIGNATURES:
            too_wide.append(f"{where}:{fn.lineno} {fn.name} ({n} parameters)")
    assert not too_long, f"split these (> {MAX_LINES} lines): {too_long}"
    assert not too_wide, f"give these a context or config object: {too_wide}"


def test_imports_inside_functions_only_where_laziness_is_the_point():
    found = set()
    for where, fn in _functions():
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and (
                    node.level > 0 or (node.module or "").startswith("saelens_tokenlabel")):
                found.add(where)
    assert found <= LAZY_IMPORTERS, sorted(found - LAZY_IMPORTERS)


@pytest.mark.subprocess
@pytest.mark.parametrize("module", sorted(
    f"{p.parent.name}.{p.stem}" for layer in ("records", "formats")
    for p in (PACKAGE / layer).glob("*.py") if p.stem != "__init__"))
def test_results_and_configs_need_no_torch(module):
    """records/ and formats/ are plain Python: reading results, configs and exports needs no
    torch."""
    code = (f"import sys, saelens_tokenlabel.{module}; "
            "print(sorted(m for m in ('torch', 'transformer_lens', 'sae_lens') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"
