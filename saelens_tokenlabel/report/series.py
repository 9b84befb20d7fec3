"""Which tokens a trajectory plot shows, and their probability per step (plain Python, shared by
the matplotlib plot, the SVG fallback and the sparklines)."""

from __future__ import annotations

from dataclasses import dataclass

from ..records.result import LabelResult, Trajectory

N_TOKENS = 10
"""Lines per panel, as in the paper's Fig. 3: the winning token and the next 9."""


@dataclass
class TokenSeries:
    """One token's probability at every recorded step of one label slot."""

    token_id: int
    text: str
    """Decoded token text (``#id`` when the trajectory did not record it)."""
    probs: list[float]
    winner: bool


def as_trajectory(result: LabelResult | Trajectory) -> tuple[Trajectory, LabelResult | None]:
    if isinstance(result, LabelResult):
        return result.trajectory, result
    if isinstance(result, Trajectory):
        return result, None
    raise TypeError(f"Expected a LabelResult or a Trajectory, got {type(result).__name__}.")


def n_slots(traj: Trajectory) -> int:
    return len(traj.top_ids[0]) if traj.top_ids else 0


def check_slot(traj: Trajectory, slot: int) -> None:
    if not traj.top_ids:
        raise ValueError("This result has no trajectory to plot (no optimisation step was "
                         "recorded: a feature with status 'dead' or 'unlabelable' has none).")
    if not 0 <= slot < n_slots(traj):
        raise ValueError(f"slot {slot} is out of range: the label has {n_slots(traj)} "
                         f"slot(s) (0..{n_slots(traj) - 1}).")


def winning_id(traj: Trajectory, slot: int, result: LabelResult | None = None) -> int:
    """The slot's final argmax token: the label's own token when the result is known, else the
    most probable token of the last recorded step."""
    if result is not None and slot < len(result.label_token_ids):
        return int(result.label_token_ids[slot])
    ids, probs = traj.top_ids[-1][slot], traj.top_probs[-1][slot]
    return int(max(zip(ids, probs, strict=True), key=lambda t: t[1])[0])


def token_text(traj: Trajectory, token_id: int) -> str:
    return traj.tokens.get(int(token_id), f"#{token_id}")


def slot_series(result: LabelResult | Trajectory, slot: int = 0,
                n: int = N_TOKENS) -> list[TokenSeries]:
    """The winning token first, then the `n - 1` others ranked by their largest probability
    over the run (ties: by final probability, then id, so the order is reproducible)."""
    traj, res = as_trajectory(result)
    check_slot(traj, slot)
    win = winning_id(traj, slot, res)
    peak: dict[int, float] = {}
    for ids, probs in zip(traj.top_ids, traj.top_probs, strict=True):
        for t, p in zip(ids[slot], probs[slot], strict=True):
            peak[int(t)] = max(peak.get(int(t), 0.0), float(p))
    final = dict(zip(traj.top_ids[-1][slot], traj.top_probs[-1][slot], strict=True))
    others = sorted((t for t in peak if t != win),
                    key=lambda t: (-peak[t], -final.get(t, 0.0), t))[: max(n - 1, 0)]
    return [TokenSeries(t, token_text(traj, t), traj.token_probability(t, slot), t == win)
            for t in [win, *others]]


def winner_probs(result: LabelResult | Trajectory) -> list[list[float]]:
    """Per slot, the winning token's probability at every recorded step ([] without a
    trajectory)."""
    traj, res = as_trajectory(result)
    if not traj.top_ids:
        return []
    return [traj.token_probability(winning_id(traj, s, res), s) for s in range(n_slots(traj))]


def visible(text: str) -> str:
    """`text` with line breaks, control characters and lone surrogates spelled out, so a token
    shows as what it is and can be written as UTF-8 (spaces are kept)."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif 0xD800 <= o < 0xE000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
