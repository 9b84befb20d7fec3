"""The package's error types: one per kind of fault, all under `TokenlabelError`.

Layer 1 (results and configs): imports nothing from the package and no torch, so that every
layer can raise them and `tokenlabel` can catch them without loading a model.

Every message is one line that says what failed (the file, the feature, the example),
whether results are safe and where, and what to do. The command line prints it as
``tokenlabel: error: <message>`` with exit status 2 and no traceback (``--debug`` or
``TOKENLABEL_DEBUG=1`` shows it); the Python API raises the same type with the same message.
Errors of bad input also derive from `ValueError` (and a full disk from `OSError`), as they
did before this module gathered them, so that existing ``except ValueError`` code still
catches them.

`RunInterrupted` is apart: a stop asked for by SIGTERM or SIGINT (`run.stops.clean_stops`),
not a fault, and a `KeyboardInterrupt` so that no ``except Exception`` swallows it on its way
out of a run.
"""

from __future__ import annotations

import errno
import signal


class TokenlabelError(Exception):
    """Base of every error this package raises on purpose (module docstring): the message
    names what failed, whether results are safe and where, and the fix."""


# ---------------------------------------------------------------------- bad input
class ConfigError(TokenlabelError, ValueError):
    """A config value that cannot work; the message names the field and the fix."""


class RecordError(TokenlabelError, ValueError):
    """A JSON value that does not have the shape its record field declares."""


class FeatureDataError(TokenlabelError, ValueError):
    """The feature data cannot be labeled as given. The message says what to change."""


class CorpusError(TokenlabelError, ValueError):
    """The corpus cannot be read as given (no text, not UTF-8, a bad JSONL line, a missing
    field). The message names the file and line and says what to change."""


class ExplanationSourceError(TokenlabelError, ValueError):
    """A file or folder that holds no explanations this package can read (truncated, not
    UTF-8, another layout); the message says what is wrong and what to give instead."""


class EvaluatorError(TokenlabelError, ValueError):
    """An evaluator or its tokenizer cannot be used for rating prompts. The message says why."""


class PromptTooLongError(EvaluatorError):
    """A rating prompt is longer than the evaluator's context (``n_ctx``). Raised before any
    forward pass; the message names the example, its length and the limit."""


class ModelLoadError(TokenlabelError, ValueError):
    """A model could not be loaded; the message (one line) names it, why, and what to do."""


class SaeLoadError(TokenlabelError, ValueError):
    """The SAE could not be loaded; the message (one line) names the file or release, what is
    wrong and what to do."""


class BackendError(TokenlabelError, ValueError):
    """The evaluator model cannot be run this way. The message says why."""


class HookError(TokenlabelError, ValueError):
    """The SAE's hook cannot be read from this model. The message says why."""


class NonFiniteActivationError(TokenlabelError, ValueError):
    """The subject model gives NaN or inf at the SAE's hook. The message says where."""


class LogitLensError(TokenlabelError, ValueError):
    """The SAE's decoder cannot be read through this model's unembedding. Says why."""


class ScorerError(TokenlabelError, ValueError):
    """A scorer cannot be registered or found as asked; the message says why and what to do."""


# ---------------------------------------------------------------------- files and stores
class CacheDamagedError(TokenlabelError):
    """A file of the activation cache cannot be read (a garbled ``meta.json``, a truncated
    shard). `build_activation_cache` rebuilds such a cache; elsewhere (reading a run's
    cache, `tokenlabel compare`) the message names the file and says to rebuild it
    (``--overwrite-cache``)."""

    path: object = None
    """The file that cannot be read (a `pathlib.Path`), when known."""
    problem: str | None = None
    """What is wrong with it."""


class RunStoreError(TokenlabelError, RuntimeError):
    """The run store cannot be used as asked; the message says why and what to do."""


class RunStoreFullError(RunStoreError, OSError):
    """The disk (or the store's size limit) is full. What was committed before is intact."""

    def __init__(self, message: str) -> None:
        RunStoreError.__init__(self, message)
        self.errno = errno.ENOSPC


class RunMismatchError(RunStoreError, ValueError):
    """The store belongs to a run with other inputs or settings."""


class StoreDamagedError(RunStoreError):
    """SQLite reports the run store malformed (``PRAGMA integrity_check`` fails), or a stored
    result does not parse. The message names the file (and the feature) and how to recover:
    ``tokenlabel export`` writes every result that can still be read."""


class StoreReadOnlyError(RunStoreError, PermissionError):
    """The run store cannot be written (a read-only folder or file). What it holds is
    intact; the message says how to read it and where to run instead."""


class OutputNotWrittenError(TokenlabelError, OSError):
    """Output files of a run (sidecar, table, Neuronpedia JSONL, the saved SAE) could not be
    written: a read-only folder or a full disk. The labels are safe in the run store; the
    message lists the files not written and how to write them later."""


# ---------------------------------------------------------------------- stops
class RunInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped the process (`run.stops.clean_stops`). A `KeyboardInterrupt`
    (a `BaseException`): no ``except Exception`` on the way out swallows it, and every
    ``finally`` runs, so the run releases its claims and closes its store."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal_name(signum)}")
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number (SIGINT:
        130, SIGTERM: 143)."""
        return 128 + self.signum


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
