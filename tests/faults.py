"""Fault injection for the reliability tests (docs/reliability.md): a labeled run of the planted
SAE through `tokenlabel label`, its inputs saved as folders; faults put into it
deterministically; and the checks every fault test makes: the exit status, one line on stderr
naming the file or feature, and no stored result lost."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saelens_tokenlabel import save_local_model
from saelens_tokenlabel.cli import main
from saelens_tokenlabel.run import RunStore, load_labelset

from .sae.planted import planted_sae, toy_sentences

PAGE = 4096
"""SQLite's default page size: the unit a damaged disk block takes out of run.sqlite."""


@dataclass(frozen=True)
class World:
    """The saved inputs of a `tokenlabel label` run, and one finished run of them."""

    root: Path
    """Holds sae/, model/, ev/, corpus.txt, cache/ and the finished run out/."""

    def args(self, out: Path, *extra: str, cache: Path | None = None,
             sae: Path | None = None) -> list[str]:
        """`tokenlabel label` of every planted feature into `out`."""
        return ["label", "--sae-path", str(sae or self.root / "sae"), "--model",
                str(self.root / "model"), "--corpus", str(self.root / "corpus.txt"),
                "--features", "all", "--evaluator", str(self.root / "ev"), "--out", str(out),
                "--cache-dir", str(cache or self.root / "cache"), "--steps", "2",
                "--batch-size", "6", "--features-per-batch", "1", "--n-top", "4",
                "--n-quantile", "4", "--n-random", "4", "--n-near-miss", "4", "--device",
                "cpu", *extra]

    @property
    def out(self) -> Path:
        return self.root / "out"

    def copy(self, to: Path, cache: bool = False) -> Path:
        """A copy of the finished run folder to damage; with `cache`, of the activation cache
        too (beside it as ``cache/``, the copy's run info pointing at it)."""
        run = to / "run"
        shutil.copytree(self.out, run)
        if cache:
            shutil.copytree(self.root / "cache", to / "cache")
            with RunStore(run) as store:
                info = store.get_meta("info")
                used = Path(info["activation_cache"]).relative_to(self.root / "cache")
                store.set_meta(info={**info, "activation_cache": str(to / "cache" / used)})
        return run


def make_world(root: Path, subject: Any, evaluator: Any, **metadata: Any) -> World:
    """Save the planted SAE, the subject model and `evaluator`'s model under `root`, and
    label every feature into ``root/out`` (a few seconds)."""
    planted_sae(**metadata).save_model(root / "sae")
    save_local_model(subject, root / "model")
    save_local_model(evaluator.model, root / "ev")

    (root / "corpus.txt").write_text("\n".join(toy_sentences(120, seed=0)[:40]) + "\n")
    world = World(root)
    assert main(world.args(world.out)) == 0
    return world


def one_line(capsys: pytest.CaptureFixture[str], *named: str) -> str:
    """The command's stderr: one line, no traceback, naming each of `named`."""
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("tokenlabel: "), err
    for name in named:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def results(run: Path) -> dict[int, dict[str, Any]]:
    """Every stored result of the run folder, as dicts (what "no result lost" compares)."""
    labels = load_labelset(run)
    return {f: labels[f].to_dict() for f in labels}


def overwrite_page_of(db: Path, feature: int) -> int:
    """Overwrite the 4 KiB page of `db` where `feature`'s stored result starts (a damaged disk
    block); returns the page number (1-based). The store must be closed (no -wal)."""
    assert not db.with_name(db.name + "-wal").exists()
    data = db.read_bytes()
    at = data.find(b'"feature": %d,' % feature)
    assert at > 0, f"feature {feature}'s result is not in {db}"
    page = at // PAGE
    with db.open("r+b") as fh:
        fh.seek(page * PAGE)
        fh.write(b"\xde\xad\xbe\xef" * (PAGE // 4))
    return page + 1


def tamper_result(db: Path, feature: int) -> None:
    """Cut `feature`'s stored result JSON short, as a hand edit or a bad copy would."""
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE features SET result = substr(result, 1, 40) WHERE feature = ?",
                    (feature,))
    con.close()


def _chmod_stops_writes(folder: Path) -> bool:
    """Whether a read-only mode stops this process writing into `folder` (not as root)."""
    probe = folder / ".probe"
    folder.chmod(0o555)
    try:
        probe.write_text("x")
    except PermissionError:
        return True
    finally:
        folder.chmod(0o755)
    probe.unlink()
    return False


@contextmanager
def unwritable(folder: Path, monkeypatch: pytest.MonkeyPatch, code: int = errno.EACCES
               ) -> Iterator[str]:
    """Inside, writing files into `folder` fails: EACCES as in a read-only folder (by chmod,
    when that stops this process), or `code` (ENOSPC: a full disk; EROFS: a read-only file
    system) by failing the rename that ends every atomic write into it, as the OS would fail
    the write itself. Yields how ("chmod" or "injected")."""
    folder.mkdir(parents=True, exist_ok=True)
    if code == errno.EACCES and _chmod_stops_writes(folder):
        folder.chmod(0o555)
        try:
            yield "chmod"
        finally:
            folder.chmod(0o755)
        return
    real = os.replace

    def replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        if Path(dst).resolve().is_relative_to(folder.resolve()):
            raise OSError(code, os.strerror(code), str(src))
        real(src, dst, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        yield "injected"


@contextmanager
def read_only_store(run: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Inside, `run`'s folder and run.sqlite are read-only: by chmod, when that stops this
    process; else SQLite cannot open the file as it opens a store (with the WAL's -shm file
    beside it, which a read-only folder refuses): "unable to open database file". Opening it
    read-only as an immutable file (`file:...?immutable=1`) still works, as there."""
    db = run / "run.sqlite"
    if _chmod_stops_writes(run):
        db.chmod(0o444)
        run.chmod(0o555)
        try:
            yield "chmod"
        finally:
            run.chmod(0o755)
            db.chmod(0o644)
        return
    real = sqlite3.connect

    def connect(path: Any, *a: Any, **k: Any) -> Any:
        if not str(path).startswith("file:") and Path(path).resolve() == db.resolve():
            return real(f"file:{run / 'no such folder' / db.name}?mode=ro", *a,
                        **{**k, "uri": True})
        return real(path, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(sqlite3, "connect", connect)
        yield "injected"
