"""Hand-built trajectories with known curves, for tests that need exact expectations."""

from __future__ import annotations

import math

from saelens_tokenlabel import LabelResult, Trajectory


def sigmoid_curves(names: list[str], n_steps: int) -> list[list[float]]:
    """Per step, a probability per token: token 0 rises to ~1, token i > 0 peaks at a height
    that falls with i and then decays, so the ranking by peak is the list order."""
    rows = []
    for s in range(n_steps):
        t = s / max(n_steps - 1, 1)
        win = 1 / (1 + math.exp(-12 * (t - 0.5)))
        others = [(1 - win) * (0.9 ** i) * math.exp(-3 * abs(t - 0.3)) for i in
                  range(1, len(names))]
        total = win + sum(others) + 1e-3
        rows.append([win / total] + [o / total for o in others])
    return rows


def trajectory(slots: list[list[str]], n_steps: int = 30, k: int = 10,
               first_id: int = 100) -> Trajectory:
    """A trajectory whose slot j has tokens `slots[j]` (winner first), recorded top-k."""
    traj = Trajectory()
    ids_of = {}
    for names in slots:
        for name in names:
            ids_of.setdefault(name, first_id + len(ids_of))
    traj.tokens = {i: name for name, i in ids_of.items()}
    curves = [sigmoid_curves(names, n_steps) for names in slots]
    for s in range(n_steps):
        traj.step.append(s)
        for field in (traj.loss, traj.accuracy, traj.entropy, traj.kl):
            field.append(1.0 / (s + 1))
        step_ids, step_probs = [], []
        for names, c in zip(slots, curves, strict=True):
            top = sorted(zip(names, c[s], strict=True), key=lambda t: -t[1])[:k]
            step_ids.append([ids_of[n] for n, _ in top])
            step_probs.append([p for _, p in top])
        traj.top_ids.append(step_ids)
        traj.top_probs.append(step_probs)
    return traj


def result(feature: int, slots: list[list[str]], n_steps: int = 30, **kw) -> LabelResult:
    traj = trajectory(slots, n_steps)
    ids = {v: k for k, v in traj.tokens.items()}
    winners = [names[0] for names in slots]
    final = [traj.token_probability(ids[w], j)[-1] for j, w in enumerate(winners)]
    fields = dict(label="".join(winners), label_tokens=winners,
                  label_token_ids=[ids[w] for w in winners], probability=min(final),
                  converged=True, steps=n_steps, metrics={"heldout_balanced_accuracy": 0.9},
                  trajectory=traj, feature=feature)
    fields.update(kw)
    return LabelResult(**fields)
