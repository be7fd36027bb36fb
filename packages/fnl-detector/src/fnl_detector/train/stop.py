"""Stopping a training run: SIGINT (Ctrl-C) and SIGTERM end it with a checkpoint.

:class:`_StopFlag` is installed while :meth:`fnl_detector.train.loop.Trainer.train` runs; the
loop checks it after every step and then checkpoints and raises :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM (preemption, ``timeout``, ``docker
    stop``); a checkpoint of ``iteration`` was written first. ``signum`` names the signal."""

    def __init__(
        self, iteration: int, checkpoint: Path | None, signum: int = signal.SIGINT
    ) -> None:
        super().__init__(f"interrupted at iteration {iteration}")
        self.iteration = iteration
        self.checkpoint = checkpoint
        self.signum = int(signum)


class _AbortAfterCheckpoint(KeyboardInterrupt):
    """A second signal arrived while a checkpoint was being written: raised once it is."""


#: Signals that stop training with a checkpoint.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopFlag:
    """Set by SIGINT or SIGTERM while training runs (the loop checks it after every step and
    then checkpoints); a second signal raises ``KeyboardInterrupt`` at once.

    Exceptions to "at once": a repeat within :attr:`REPEAT_WINDOW_S` of the first is the same
    request delivered twice (``uv run`` forwards the terminal's Ctrl-C to a child that already
    got it, about 200 ms apart) and is ignored; and a second signal while a checkpoint is being
    written (:meth:`shielded`) waits for it to be complete, then aborts. While ``raise_now`` is
    on (evaluation, which has nothing to save) the first signal sets the flag and raises too.
    """

    REPEAT_WINDOW_S = 1.0

    def __init__(self) -> None:
        self.set = False
        self.signum: int = signal.SIGINT
        self.raise_now = False
        self._first_at = 0.0
        self._shielded = 0
        self._abort_pending = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if not self.set:
            self.set, self.signum, self._first_at = True, signum, now
            if self.raise_now:
                raise KeyboardInterrupt
            return
        if now - self._first_at < self.REPEAT_WINDOW_S:
            return  # the first request again
        if self._shielded:
            self._abort_pending = True  # raised when the checkpoint is complete
            return
        raise KeyboardInterrupt

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A block (checkpoint writing) that a second signal does not cut: the abort it asks
        for is raised (as :class:`_AbortAfterCheckpoint`) when the block has finished."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
        if not self._shielded and self._abort_pending:
            self._abort_pending = False
            raise _AbortAfterCheckpoint

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._previous:
            return
        if self.set:  # let a repeat of the request that stopped us arrive here, not after
            time.sleep(max(0.0, self._first_at + self.REPEAT_WINDOW_S - time.monotonic()))
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
