"""What the run store's fault translation costs: `RunStore` operations through its
`StoreConnection` (every cursor turns SQLite's errors of a damaged or read-only file into one
line, `run/storedb.py`) against the same operations on a plain ``sqlite3`` connection to the
same file, measured in one run and printed as ratios.

The store holds `--features` finished fake results (a short trajectory each, as a small run's);
the operations are those a run and ``tokenlabel status`` / ``export`` make: reading every
result, every row, the status summary, committing results one batch at a time, claiming and
releasing. Each is timed `--repeat` times per connection, interleaved, and the medians are
compared.

    python bench/bench_store.py [--features 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from saelens_tokenlabel.records.result import LabelResult, Trajectory
from saelens_tokenlabel.run import RunStore


def fake(feature: int) -> LabelResult:
    traj = Trajectory(loss=[1.0 / (s + 1) for s in range(40)])
    return LabelResult(label=f"word{feature}", label_tokens=[f"word{feature}"],
                       label_token_ids=[feature], probability=0.9, converged=True, steps=40,
                       metrics={"heldout_balanced_accuracy": 0.95}, trajectory=traj,
                       feature=feature)


def make_store(folder: Path, n: int) -> Path:
    with RunStore(folder) as store:
        store.set_meta(info={"d_sae": n})
        store.add_features(range(n))
        for start in range(0, n, 1000):
            store.put([fake(f) for f in range(start, min(n, start + 1000))])
    return folder


def operations(store: RunStore, n: int) -> dict[str, Callable[[], object]]:
    batch = [fake(f) for f in range(8)]
    return {
        "results() of every feature": store.results,
        "rows() of every feature": store.rows,
        "summary() (tokenlabel status)": store.summary,
        "put() 200 batches of 8": lambda: [store.put(batch) for _ in range(200)],
        "claim()+release() x50": lambda: [
            (store.claim(range(n), 8, "bench", 60.0), store.release("bench"))
            for _ in range(50)],
    }


def plain(store: RunStore) -> RunStore:
    """The same store, its statements on a plain sqlite3 connection (no translation)."""
    store._db.close()
    store._db = sqlite3.connect(store.path, timeout=30.0, isolation_level=None)
    store._db.execute("PRAGMA journal_mode=WAL")
    store._db.execute("PRAGMA synchronous=NORMAL")
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_store(Path(tmp), args.features)
        ours, theirs = RunStore(folder), plain(RunStore(folder))
        ops = {"StoreConnection": operations(ours, args.features),
               "plain sqlite3": operations(theirs, args.features)}
        times: dict[str, dict[str, list[float]]] = {k: {} for k in ops}
        for _ in range(args.repeat):
            for kind, table in ops.items():
                for name, op in table.items():
                    t0 = time.perf_counter()
                    op()
                    times[kind].setdefault(name, []).append(time.perf_counter() - t0)
        ours.close()
        theirs.close()
    print(f"run store of {args.features} finished features, median of {args.repeat}")
    print(f"{'operation':32} {'StoreConnection':>16} {'plain sqlite3':>14} {'ratio':>7}")
    for name in ops["StoreConnection"]:
        a = statistics.median(times["StoreConnection"][name])
        b = statistics.median(times["plain sqlite3"][name])
        print(f"{name:32} {a * 1e3:13.1f} ms {b * 1e3:11.1f} ms {a / b:7.3f}")


if __name__ == "__main__":
    main()
