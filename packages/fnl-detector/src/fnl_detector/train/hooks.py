"""Hooks: what a training run does around its optimiser steps (detectron2's ``HookBase``).

:class:`~fnl_detector.train.loop.Trainer` runs the steps; logging, periodic checkpoints,
evaluation and the time budget are hooks, called in the order they were registered (the
trainer's own first, see :meth:`~fnl_detector.train.loop.Trainer.default_hooks`), so a
periodic action of one's own is a hook too, not an edit of the loop::

    class EveryHundred(HookBase):
        def after_step(self) -> None:
            if self.trainer.iter % 100 == 0 and self.trainer.is_main:
                ...  # self.trainer.model, .run_dir, .writer, .last_losses

    Trainer(config, train_set, "runs/b", spec=spec, hooks=[EveryHundred()]).train()

Every process of a DDP run calls the hooks; only the main one (``trainer.is_main``) writes
files. The loss check of every step (a NaN or infinite loss stops the run) stays in the step,
before the backward pass.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from fnl_detector.train import distributed as dist_utils
from fnl_detector.train.rundir import EVAL_FILE
from fnl_detector.train.schedule import WarmupStepSchedule


class HookBase:
    """Base of the training hooks; override the calls you need.

    ``self.trainer`` is the :class:`~fnl_detector.train.loop.Trainer` the hook is registered
    with. In ``after_step``, ``trainer.iter`` is the number of steps done (1 after the first),
    ``trainer.last_losses`` that step's losses (floats by name, with ``total_loss``),
    ``trainer.config.iters`` the run's length. ``trainer.writer`` (a
    :class:`~fnl_detector.train.metrics.MetricsWriter`) appends a line to ``metrics.jsonl``.
    """

    trainer: Any  # the Trainer (fnl_detector.train.loop imports this module, not the reverse)

    def before_train(self) -> None:
        """At the start of every :meth:`~fnl_detector.train.loop.Trainer.train` call, before
        the first step (``metrics.jsonl`` is open)."""

    def after_step(self) -> None:
        """After every optimiser step."""

    def after_train(self) -> None:
        """Once the run has reached ``config.iters``: after the last checkpoint and the final
        weights, before ``metrics.jsonl`` is closed. Not called when a ``train()`` call stops
        early (``stop_at``, Ctrl-C, SIGTERM, an exception)."""


class LoggingHook(HookBase):
    """Every ``period`` steps and at the last one, a ``metrics.jsonl`` line: iteration, LR,
    the mean of each loss over the steps since the last line (averaged over processes),
    ``time_per_iter`` and ``data_time``.

    The time per iteration counts from the previous line, or from the end of the last work a
    hook left out of the timing (:meth:`~fnl_detector.train.loop.Trainer.exclude_from_timing`:
    evaluation), whichever is later.
    """

    def __init__(self, period: int) -> None:
        self.period = period
        self._window: dict[str, list[float]] = defaultdict(list)
        self._data_time = 0.0
        self._start = 0.0

    def before_train(self) -> None:
        self._window = defaultdict(list)
        self._data_time = 0.0
        self._start = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        for k, v in t.last_losses.items():
            self._window[k].append(v)
        self._data_time += t.data_seconds
        it = t.iter
        if it % self.period and it != t.config.iters:
            return
        now = time.perf_counter()
        n = len(next(iter(self._window.values()), [])) or 1
        means = {k: sum(v) / len(v) for k, v in self._window.items()}
        means = dist_utils.reduce_mean(means, t.device)
        start = max(self._start, t.untimed_until)
        t.writer.write(
            {
                "iteration": it,
                "lr": t.schedule.lr(it - 1),
                **means,
                "time_per_iter": (now - start) / n,
                "data_time": self._data_time / n,
            }
        )
        self._window.clear()
        self._start, self._data_time = time.perf_counter(), 0.0


class CheckpointHook(HookBase):
    """A checkpoint every ``period`` steps before the last (the trainer writes the last one,
    and one whenever a ``train()`` call stops)."""

    def __init__(self, period: int) -> None:
        self.period = period

    def after_step(self) -> None:
        t = self.trainer
        if t.iter % self.period == 0 and t.iter < t.config.iters:
            t.save_checkpoint(t.iter)


class EvalHook(HookBase):
    """Scores the model on ``trainer.eval_set`` every ``period`` steps before the last (0:
    never in between), at iteration 0 when ``at_start`` (a new run only) and at the end.

    Each evaluation becomes a ``metrics.jsonl`` line (``eval/bbox/AP``, ...), an entry of
    ``trainer.eval_history`` and ``metrics_eval.json``; the final one is also
    ``trainer.final_eval``. It runs on the main process while the others wait; Ctrl-C
    abandons it at once (the loop then checkpoints and stops).
    """

    def __init__(self, period: int, at_start: bool = False) -> None:
        self.period = period
        self.at_start = at_start
        self._evaluator: Any = None

    def before_train(self) -> None:
        if self.at_start and not self.trainer.start_iter:
            self.evaluate(0)
            self.trainer.exclude_from_timing()

    def after_step(self) -> None:
        t = self.trainer
        if self.period and t.iter % self.period == 0 and t.iter < t.config.iters:
            self.evaluate(t.iter)
            t.exclude_from_timing()

    def after_train(self) -> None:
        self.trainer.final_eval = self.evaluate(self.trainer.iter)

    def evaluate(self, it: int) -> dict[str, Any] | None:
        """Score the model now, as iteration ``it``; None on the other processes, without an
        evaluation set, or when Ctrl-C cut the evaluation short."""
        t = self.trainer
        if t.eval_set is None:
            return None
        result = None
        if t.is_main:
            from fnl_detector.train.evaluate import build_evaluator, evaluate_model, flatten

            t0 = time.perf_counter()
            if self._evaluator is None:
                self._evaluator = build_evaluator(t.surface)
            t.stop.raise_now = True  # Ctrl-C abandons an evaluation at once
            try:
                metrics = evaluate_model(
                    t.model,
                    t.eval_set,
                    t.device,
                    t.surface,
                    t.run_dir / "eval",
                    max_images=t.config.eval_max_images,
                    evaluator=self._evaluator,
                    should_stop=lambda: t.stop.set,
                )
            except KeyboardInterrupt:
                if not t.stop.set:  # not ours (no handler installed): pass it on
                    raise
                metrics = None
            finally:
                t.stop.raise_now = False
            if metrics is None:  # interrupted: the loop checkpoints and stops
                dist_utils.barrier()
                return None
            result = {"iteration": it, "eval_seconds": time.perf_counter() - t0, **metrics}
            t.eval_history = [h for h in t.eval_history if h["iteration"] != it] + [result]
            t.writer.write({"iteration": it, **flatten(metrics, "eval/")})
            out = {"final": result, "history": t.eval_history}
            (t.run_dir / EVAL_FILE).write_text(json.dumps(out, indent=2))
        dist_utils.barrier()
        return result


class TimeBudgetHook(HookBase):
    """``--minutes``: fits the run's length to ``config.max_minutes`` of training time.

    Every 5 steps from the 5th of this call until the first LR step, the iteration count, the
    LR steps (in proportion) and the warm-up are refitted to the measured speed; once the
    budget is spent the run ends at the current step.
    """

    def after_step(self) -> None:
        t = self.trainer
        it = t.iter
        budget = float(t.config.max_minutes) * 60.0
        if t.train_seconds >= budget:
            t.config = t.config.model_copy(update={"iters": it})
            if t.bar is not None:
                t.bar.total = it
            return
        first_step = t.config.steps[0] if t.config.steps else t.config.iters
        done = it - t.start_iter
        if it >= first_step or done < 5 or it % 5:
            return
        rate = it / max(t.train_seconds, 1e-6)
        target = max(it + 1, int(budget * rate))
        base = t.config
        frac = [s / base.iters for s in base.steps]
        steps = tuple(max(it + 1, round(f * target)) for f in frac)
        t.config = base.model_copy(
            update={
                "iters": target,
                "steps": steps,
                "warmup_iters": min(base.warmup_iters, target // 10),
            }
        )
        t.schedule = WarmupStepSchedule.from_config(t.config)
        if t.bar is not None:
            t.bar.total = target
            t.bar.refresh()
