"""The documentation's code runs as written: every ```python block of
``docs/getting-started.md``, in order, in one namespace, in a temporary folder, offline on the
toy world (the bundled toy evaluator, the planted SAE).

The convention, also stated in a comment at the top of the page: a block is run when its fence
opens with ``python``, unless its attributes carry a title starting with "On a GPU" (e.g.
```python title="On a GPU: ...") - those need real models and are shown only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```(?P<info>[^`\n]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
SHOWN_ONLY = re.compile(r'title="On a GPU')


def python_blocks(page: Path) -> tuple[list[str], list[str]]:
    """The page's ```python blocks: (to run, shown only), each in page order."""
    run, shown = [], []
    for m in FENCE.finditer(page.read_text(encoding="utf-8")):
        info = m.group("info").strip()
        if info.split(" ", 1)[0] != "python":
            continue
        (shown if SHOWN_ONLY.search(info) else run).append(m.group("body"))
    return run, shown


def test_the_fence_parser_sees_every_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('text\n```python\na = 1\n```\n```bash\nls\n```\n'
                    '```python title="On a GPU: big"\nb = 2\n```\n```python\nc = a\n```\n',
                    encoding="utf-8")
    assert python_blocks(page) == (["a = 1\n", "c = a\n"], ["b = 2\n"])


def test_getting_started_marks_only_real_model_blocks_as_shown():
    run, shown = python_blocks(DOCS / "getting-started.md")
    assert len(run) >= 5, "the page's main path must be executed"
    assert shown and all("from_pretrained" in b or "load_evaluator_model" in b for b in shown)


@pytest.mark.slow
def test_getting_started_runs_offline(tmp_path, monkeypatch):
    run, _ = python_blocks(DOCS / "getting-started.md")
    monkeypatch.chdir(tmp_path)  # the page writes relative paths (activations/, run/, my_sae/)
    namespace: dict = {"__name__": "getting_started"}
    for n, block in enumerate(run):
        try:
            exec(compile(block, f"getting-started.md python block {n}", "exec"), namespace)  # noqa: S102
        except Exception as err:
            raise AssertionError(f"python block {n} of getting-started.md fails "
                                 f"({type(err).__name__}: {err}):\n{block}") from err
    # What the page says it shows: the planted concepts recovered, the dead feature reported,
    # and the files the command-line section then reads.
    assert namespace["result"].label == "animal"
    labels = namespace["labels"]
    assert labels[0].label == "animal" and labels[2].status == "dead"
    assert (tmp_path / "my_sae" / "tokenlabel_labels.json").is_file()
    assert (tmp_path / "subject").is_dir() and (tmp_path / "corpus.txt").is_file()


TEST_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^\]]+)\])?`")


def test_every_row_of_the_reliability_table_is_a_test_that_exists():
    page = (DOCS / "reliability.md").read_text(encoding="utf-8")
    table = page.split("## Faults and what is kept", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| ---")]
    assert rows[0].startswith("| fault | what you see | what is kept | test |")
    assert len(rows) > 20
    root = DOCS.parent
    for row in rows[1:]:
        cells = row.strip("|").split(" | ")
        assert len(cells) == 4, row
        ids = TEST_ID.findall(cells[3])
        assert ids, f"no test for {cells[0]!r}"
        for path, name, param in ids:
            source = (root / path).read_text(encoding="utf-8")
            assert f"def {name}(" in source, f"{path}::{name} does not exist"
            assert not param or f'"{param}"' in source, f"{path}::{name}[{param}]"
