"""CPU threads of a labeling run: torch's intra-op threads and OpenMP's wait policy.

torch parallelises an operation over its intra-op threads (one per core by default), and
between operations OpenMP's threads wait for the next one by spinning, unless told otherwise.
On a machine where other processes hold the cores, a step then waits for threads that are not
running, or that spin on a core the others need: on this project's 2-core machine, shared
with other jobs, the toy evaluator's labeling step took 10-170 times longer with two threads
and OpenMP's default or active waiting than with two passive threads, with or without one
more competing busy process (`bench/threads_cpu.txt`). With OMP_WAIT_POLICY=PASSIVE a waiting
thread sleeps; two passive threads were then as fast as one or faster, quiet or loaded.

`cpu_threads` sets both for a CPU run: passive waiting and one thread per core this process
may use (`usable_cores`). The command line calls it for every CPU run (``--threads N``,
``--omp-wait-policy``). Settings in the environment (``OMP_NUM_THREADS``,
``OMP_WAIT_POLICY``) are kept; explicit arguments win over them. OpenMP reads its wait
policy once, when torch loads it: it must be set before torch is imported (`set_wait_policy`
says when it could not be).

Layer 5; imports no torch at import time (the command line sets the wait policy first).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WAIT_POLICIES = ("passive", "active", "unset")
"""`--omp-wait-policy` choices: sleep while waiting, spin, or OpenMP's own default."""
DEFAULT_WAIT_POLICY = "passive"
"""What a CPU run waits with unless told otherwise (`bench/threads_cpu.txt`)."""
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2's CPU quota of this process's container ("max" or "<quota> <period>")."""


@dataclass(frozen=True)
class CpuThreads:
    """The CPU thread settings in effect."""

    threads: int
    """torch's intra-op threads."""
    wait_policy: str | None
    """OMP_WAIT_POLICY as OpenMP read it (None: unset, OpenMP's default)."""
    note: str = ""
    """Why a setting asked for is not in effect (empty: all are)."""


def torch_loaded() -> bool:
    """Whether torch (and with it its OpenMP runtime) is already imported."""
    return "torch" in sys.modules


def set_wait_policy(policy: str | None = None) -> tuple[str | None, str]:
    """Set OMP_WAIT_POLICY for this process (and its children) unless torch is loaded
    already. `policy` None: the environment's if set, else `DEFAULT_WAIT_POLICY`; "unset":
    OpenMP's own default. Returns the policy in effect and why it differs from the one
    asked for (empty when it does not)."""
    env = os.environ.get("OMP_WAIT_POLICY")
    want = (env.lower() if env else DEFAULT_WAIT_POLICY) if policy is None else policy.lower()
    if want not in WAIT_POLICIES:
        raise ValueError(f"OMP wait policy {policy!r}: choose one of {', '.join(WAIT_POLICIES)}")
    if torch_loaded():
        if (env or "unset").lower() == want:
            return env, ""
        return env, (f"OMP_WAIT_POLICY stays {env or 'unset'}: torch was imported before "
                     "it could be set to " + want + "; set it in the environment "
                     f"(OMP_WAIT_POLICY={want.upper()} python ...) or call "
                     "saelens_tokenlabel.cpu_threads() before importing torch")
    if want == "unset":
        os.environ.pop("OMP_WAIT_POLICY", None)
        return None, ""
    os.environ["OMP_WAIT_POLICY"] = want.upper()
    return want.upper(), ""


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: those its affinity allows, at most its container's
    CPU quota (torch's own default counts the machine's cores, which a container's quota may
    not grant)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_threads() -> int:
    """The intra-op threads of a CPU run that names none: ``OMP_NUM_THREADS`` if the
    environment sets it, else one per core this process may use (`usable_cores`)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return usable_cores()


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (`threads`; None: `default_threads`); returns the count
    in effect."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(default_threads() if threads is None else threads)
    return torch.get_num_threads()


def cpu_threads(threads: int | None = None, wait_policy: str | None = None) -> CpuThreads:
    """Set a CPU run's threads: OpenMP's wait policy (`set_wait_policy`: only before torch
    is imported; a warning says when it could not be) and torch's intra-op threads
    (`set_threads`). With neither argument: the environment's settings where it has them,
    else passive waiting and one intra-op thread per core this process may use.

    From Python, call it before importing torch::

        import saelens_tokenlabel as stl
        stl.cpu_threads()          # passive waiting, one intra-op thread per core
        import torch               # ... then load the models and label
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    policy, note = set_wait_policy(wait_policy)
    if note:
        log.warning(note)
    return CpuThreads(set_threads(threads), policy, note)
