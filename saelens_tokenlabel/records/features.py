"""Feature indices: the one place that checks them, from Python and from the command line.

Layer 1 (results and configs): imports nothing from the package.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger(__name__)


def check_feature_indices(features: Iterable[object], d_sae: int | None) -> list[int]:
    """Each of `features` as an int in ``[0, d_sae)`` (any index >= 0 when `d_sae` is None),
    in the order given, or a one-line error naming the first bad one."""
    out: list[int] = []
    for f in features:
        if isinstance(f, bool) or not hasattr(f, "__index__"):
            raise TypeError(f"features must be ints (feature indices), got {f!r}")
        f = int(f)
        if f < 0 or d_sae is not None and f >= d_sae:
            raise ValueError(
                f"feature {f} is out of range: " + ("indices are >= 0." if d_sae is None else
                f"this SAE has d_sae={d_sae} features (0..{d_sae - 1})."))
        out.append(f)
    return out


def unique_features(features: list[int], what: str = "features") -> list[int]:
    """`features` without repeats (first occurrence kept); a repeat is most often overlapping
    ranges ("0:10,5"), so it is labeled once, with a warning."""
    unique = list(dict.fromkeys(features))
    if len(unique) < len(features):
        dup = sorted(f for f, n in Counter(features).items() if n > 1)
        log.warning("%s lists %d features more than once: %s are listed more than once; "
                    "each is labeled once", what, len(features) - len(unique), dup[:10])
    return unique


def resolve_features(features: int | Iterable[int] | None, d_sae: int) -> list[int]:
    """`None` -> all features; an int or an iterable of ints, each in ``[0, d_sae)``."""
    if features is None:
        return list(range(d_sae))
    if isinstance(features, int):
        features = [features]
    out = check_feature_indices(features, d_sae)
    if not out:
        raise ValueError("features is empty; pass None for all features.")
    return unique_features(out)


def _runs(indices: list[int], shown: int = 4) -> str:
    """Sorted indices as runs: ``[8, 9, 10, 42]`` -> ``"8..10, 42"`` (the first `shown` runs,
    then how many more)."""
    runs: list[list[int]] = []
    for f in indices:
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    text = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs[:shown])
    return text + (f", and {len(runs) - shown} more" if len(runs) > shown else "")


def parse_features(spec: str | None, d_sae: int | None) -> list[int] | None:
    """``"all"``/None -> None; ``"0:100"``, ``"3,7,9"``, ``"0:10,42"`` -> indices, checked
    against `d_sae` when it is known (None: any index, and no open-ended ranges)."""
    if spec is None or spec.strip().lower() == "all":
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if ":" in part:
                a, b = part.split(":", 1)
                if not b and d_sae is None:
                    raise ValueError
                out.extend(range(int(a) if a else 0, int(b) if b else d_sae))  # type: ignore[arg-type]
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"--features {spec!r}: {part!r} is not an index or a range "
                             "START:STOP (e.g. 0:100, or 1,5,9, or all).") from None
    try:
        check_feature_indices(out, d_sae)
    except ValueError:
        bad = sorted({f for f in out if f < 0 or d_sae is not None and f >= d_sae})
        raise ValueError(f"--features {spec!r}: {len(bad)} "
                         f"{'index is' if len(bad) == 1 else 'indices are'} out of range "
                         f"({_runs(bad)}); " + (
            "indices are >= 0." if d_sae is None else
            f"the SAE has d_sae={d_sae} features (0..{d_sae - 1}).")) from None
    if not out:
        raise ValueError(f"--features {spec!r} selects no feature.")
    return unique_features(out, f"--features {spec!r}")
