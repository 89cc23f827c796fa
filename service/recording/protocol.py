"""The one after-answer protocol the request core talks to, and the choice of its implementation.

The core hands every answered request to a :class:`Recording` and never asks which one it has:
:class:`~service.recording.threads.ThreadRecording` (shadow work and ledger writes on threads of the
worker) or :class:`~service.recording.process.ProcessRecording` (in an evaluator process beside it,
the default: its Python work never holds the worker's interpreter lock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from service.metric_queue import Series
from service.recording.jobs import Job, Recorder
from service.runtime.repository import LoadedRepository
from service.settings import Settings


class Recording(Protocol):
    """Where answered requests go: shadow variants, counts, ledger records."""

    def prepare(self, repo: LoadedRepository) -> bool:
        """Get ready to finish jobs of this version before it is served; False if that failed (serving
        goes on; the version is loaded with its first jobs)."""
        ...

    def submit(self, job: Job) -> bool:
        """Take an answered request without ever blocking; False when it had to be dropped (counted)."""
        ...

    def barrier(self, timeout_s: float = 10.0) -> bool:
        """Return once everything submitted before the call is committed to the ledger (True), or
        False when that did not happen in time."""
        ...

    def health(self) -> dict[str, object]:
        """How recording is doing: which implementation, and the ledger writer's state."""
        ...

    def close(self) -> None:
        """Finish and record everything submitted, then stop (graceful: nothing acknowledged lost)."""
        ...


def open_recording(
    settings: Settings, series: Callable[[], Series], recorder: Recorder | None = None
) -> Recording:
    """The implementation the settings ask for. A recorder observes finished requests in this process,
    so it needs threads: asking for one with the evaluator process on is a mistake, not a fallback."""
    if recorder is not None and settings.evaluator_process:
        raise ValueError("a recorder observes requests in this process: set evaluator_process=False")
    if settings.evaluator_process:
        from service.recording.process import ProcessRecording

        return ProcessRecording(settings, series)
    from service.recording.threads import ThreadRecording

    return ThreadRecording(settings, series, recorder)
