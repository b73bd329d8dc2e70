"""The exception hierarchy. Every message says what was wrong and how to fix it.

A leaf: this module imports nothing of unspool's, so every other module may import it.
"""

from __future__ import annotations

import re
from typing import Any, Callable

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*:)[^\s@]+@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL in it masked."""
    return _URL_PASSWORD.sub(r"\1***@", text)


class UnspoolError(Exception):
    """Base class of every error unspool raises on purpose."""


class StepDefinitionError(UnspoolError, TypeError):
    """A step or pipeline is declared in a way unspool cannot run."""


class StepInputError(UnspoolError, TypeError):
    """A step was called with arguments that do not fit its signature."""


class StepOutputError(UnspoolError, TypeError):
    """A step returned something that does not match its output annotation."""


class PipelineError(UnspoolError):
    """A pipeline body did something that is not allowed (e.g. loading data at compile time)."""


class MaterializerError(UnspoolError):
    """An artifact could not be saved or loaded."""


class StoreError(UnspoolError):
    """The metadata or artifact store is misconfigured or unreachable."""


class ArtifactDamagedError(MaterializerError):
    """An artifact's files are gone or no longer what was recorded (size or content hash)."""


class ConfigError(UnspoolError, ValueError):
    """A configuration is invalid: a YAML config file, a run configuration, an orchestrator.

    ``file`` is where it came from (None for values given in Python) and ``problems`` a list
    of ``(key path, what was expected)`` pairs, e.g. ``("steps.train.retry.max_retries",
    "expected an integer >= 0, got 'x'")``; the message lists them all.
    """

    def __init__(self, problems: list[tuple[str, str]] | str, *, file: str | None = None) -> None:
        self.problems = [("", problems)] if isinstance(problems, str) else list(problems)
        self.file = file
        where = f"config file {file}" if file else "configuration"
        lines = [f"{key}: {what}" if key else what for key, what in self.problems]
        if len(lines) == 1:
            message = f"{where}: {lines[0]}"
        else:
            message = f"{where} has {len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)
        super().__init__(message)

    @property
    def key(self) -> str | None:
        """The key path of the first problem."""
        return self.problems[0][0] if self.problems else None

    def __reduce__(self) -> Any:
        return (_config_error, (self.problems, self.file))


def _config_error(problems: list[tuple[str, str]], file: str | None) -> ConfigError:
    return ConfigError(problems, file=file)


class NotFoundError(UnspoolError, KeyError):
    """A run, step or artifact that was asked for does not exist."""

    def __str__(self) -> str:  # KeyError would add quotes
        return str(self.args[0]) if self.args else ""


class StepFailedError(UnspoolError):
    """Raised in a pipeline body when a step it waits for failed.

    ``step_run`` is the failed step run (a :class:`~unspool.StepRun` once stored, else the
    invocation id), ``original_exception`` is what the step raised when it ran in this process.
    """

    def __init__(
        self,
        message: str,
        *,
        invocation_id: str,
        step_run_id: str | None = None,
        original_exception: BaseException | None = None,
        error: dict[str, Any] | None = None,
        load_step_run: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.invocation_id = invocation_id
        self.step_run_id = step_run_id
        self.original_exception = original_exception
        self.error = error or {}
        self._load_step_run = load_step_run  # given by the engine: the stores it recorded in

    @property
    def step_run(self) -> Any:
        """The failed step run as stored (loaded on access)."""
        if self.step_run_id is None or self._load_step_run is None:
            return None
        return self._load_step_run(self.step_run_id)


class WorkerLostError(UnspoolError):
    """An isolated step's worker (a process or a Ray worker) died before reporting a result."""


class RunFailedError(UnspoolError):
    """Raised by ``Pipeline.__call__(raise_on_failure=True)`` when the run did not succeed."""


class BudgetExceeded(UnspoolError):
    """A call would exceed one of the run's budget limits; raised before anything starts."""

    def __init__(self, limit: str, value: float, used: float, requested: float = 1) -> None:
        self.limit = limit
        self.value = value
        self.used = used
        self.requested = requested
        if limit.startswith("spend."):
            message = f"budget {limit}={value} reached: {used} spent by this run and its children"
        elif limit == "max_duration_s":
            message = f"budget max_duration_s={value} exceeded: the run has been going for {used:.1f}s"
        else:
            message = f"budget {limit}={value} exceeded: {used} used, this call needs {requested} more"
        super().__init__(message)


class RunClaimedError(PipelineError):
    """Another live process owns the run, or it already completed: nothing was written."""


class RunOwnershipLostError(StoreError):
    """Another process took over a run this process drove; it writes nothing more to that store."""
