"""The training loop: one optimiser step per global batch, with logging, checkpoints,
evaluation, resume and (under torchrun) DistributedDataParallel.

Only the main process (rank 0) writes files; every process computes the same number of steps.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fnl_core.errors import InputError
from fnl_core.registry import with_provenance
from fnl_core.structures import DensePoseDataset
from fnl_detector.loading import select_device
from fnl_detector.train import distributed as dist_utils
from fnl_detector.train.checkpoint import CheckpointDir, CheckpointError
from fnl_detector.train.config import TrainConfig
from fnl_detector.train.data import (
    DeterministicBatchSampler,
    TrainResize,
    TrainSamples,
    has_training_instances,
    make_loader,
)
from fnl_detector.train.metrics import MetricsWriter, plot_loss_curve
from fnl_detector.train.optim import build_optimizer
from fnl_detector.train.rng import get_rng_state, seed_all, set_rng_state
from fnl_detector.train.rundir import (
    CONFIG_FILE,
    CURVE_FILE,
    EVAL_FILE,
    FINAL_WEIGHTS,
    SPEC_FILE,
    clear_run,
    existing_run_files,
)
from fnl_detector.train.schedule import WarmupStepSchedule
from fnl_detector.weights import save_weights

#: Config fields that must not change between a run and its resumption.
_RESUME_FIXED = (
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "weight_decay_norm",
    "seed",
    "warmup_factor",
    "gamma",
    "clip_grad_norm",
)


class NonFiniteLossError(FloatingPointError, ValueError):
    """A loss term became NaN or infinite; the message names the term and the iteration."""


class RunExistsError(InputError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


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


class Trainer:
    """Train ``model`` (or the detector built from ``spec``) on ``train_set`` into ``run_dir``.

    ``model`` must follow the detector contract: in train mode ``model(images, targets)``
    returns a dict of scalar losses. ``eval_set`` (optional) is scored every
    ``config.eval_period`` iterations and at the end with the ``fnl.evaluators`` entry on the
    ``surface`` body surface.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_set: DensePoseDataset,
        run_dir: str | Path,
        *,
        spec: Any = None,
        model: nn.Module | None = None,
        eval_set: DensePoseDataset | None = None,
        surface: str | None = "toy",
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
    ) -> None:
        """``overwrite`` removes a previous run's files from ``run_dir``; without it (or
        ``resume``) a folder holding a run raises :class:`RunExistsError`."""
        if model is None and spec is None:
            raise ValueError("Trainer needs a detector spec or a model")
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other")
        self.config = config
        self.train_set = train_set
        self.eval_set = eval_set
        self.surface = surface
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.spec = spec
        self.stop = _StopFlag()
        self.dist = dist_utils.from_env()
        if not resume and self.dist.is_main:
            found = existing_run_files(self.run_dir)
            if found and not overwrite:
                raise RunExistsError(
                    f"run folder {self.run_dir} already holds a run ({', '.join(found)}); "
                    "continue it with --resume, pick a new --out, or replace it with --overwrite"
                )
            clear_run(self.run_dir)
        self.device = select_device(config.device, self.dist.local_rank)
        self.is_main = self.dist.is_main
        dist_utils.init(self.dist, self.device)
        config = self._pin_threads(config, resume)
        self.config = config

        seed_all(config.seed)  # same initial weights on every process
        if model is None:
            from fnl_detector import build_detector

            model = build_detector(spec)
        self.model = model.to(self.device)
        if config.sync_bn and self.dist.enabled:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.train()
        self.optimizer = build_optimizer(
            self.model,
            config.lr,
            config.momentum,
            config.weight_decay,
            config.weight_decay_norm,
            kind=config.optimizer,
        )
        self.schedule = self._schedule_of(config)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.checkpoints = CheckpointDir(self.run_dir / "checkpoints")
        self.start_iter = 0
        self.train_seconds = 0.0
        self.records = [r for r in train_set.records if has_training_instances(r)]
        self.eval_history: list[dict[str, Any]] = []
        self._evaluator: Any = None
        seed_all(config.seed + self.dist.rank)  # per-process sampling randomness

        if resume:
            self._resume()
        elif self.is_main:
            self._write_run_files()
        self.ddp_model = self._wrap_ddp()

    # ------------------------------------------------------------------ setup
    def _pin_threads(self, config: TrainConfig, resume: bool) -> TrainConfig:
        """Fix the CPU thread count and record it in the config (train_config.json).

        CPU kernels split their reductions by thread count, so the same run on 1 and on 2
        threads differs from the first step (measured: total loss 8.40856262 against
        8.40856235 at step 1 of a tiny toy run). A resumed run takes the count of the run
        it continues unless one is given.
        """
        threads = config.num_threads
        saved = self.run_dir / CONFIG_FILE
        if threads is None and resume and saved.is_file():
            threads = TrainConfig.model_validate_json(saved.read_text()).num_threads
        if threads is None:
            threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        return config.model_copy(update={"num_threads": threads})

    @staticmethod
    def _schedule_of(config: TrainConfig) -> WarmupStepSchedule:
        return WarmupStepSchedule(
            base_lr=config.lr,
            steps=tuple(config.steps),
            gamma=config.gamma,
            warmup_iters=config.warmup_iters,
            warmup_factor=config.warmup_factor,
        )

    def _wrap_ddp(self) -> nn.Module:
        if not self.dist.enabled:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            self.model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.spec is not None and hasattr(self.spec, "to_dict"):
            spec_record = with_provenance(self.spec.to_dict())  # + package/version per part
            (self.run_dir / SPEC_FILE).write_text(json.dumps(spec_record, indent=2))
        (self.run_dir / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2))

    def _resume(self) -> None:
        folder = self.checkpoints.last()
        if folder is None:
            raise CheckpointError(
                f"--resume: no checkpoint in {self.checkpoints.root} (no last_checkpoint file)"
            )
        saved_cfg = self.run_dir / CONFIG_FILE
        if saved_cfg.is_file():
            old = TrainConfig.model_validate_json(saved_cfg.read_text())
            changed = [k for k in _RESUME_FIXED if getattr(old, k) != getattr(self.config, k)]
            if changed:
                raise ValueError(
                    f"--resume: {', '.join(changed)} differ from the run in {self.run_dir} "
                    f"({', '.join(f'{k}={getattr(old, k)}' for k in changed)})"
                )
        state = self.checkpoints.load(folder, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule = WarmupStepSchedule.from_state_dict(state["schedule"])
        self.config = self.config.model_copy(
            update={
                "iters": int(state["iters"]),
                "steps": self.schedule.steps,
                "warmup_iters": self.schedule.warmup_iters,
            }
        )
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rng", [])
        if self.dist.rank < len(rng):
            set_rng_state(rng[self.dist.rank])
        self.start_iter = int(state["iteration"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.eval_history = list(json.loads(state.get("eval_history", "[]")))

    # ------------------------------------------------------------------ state
    def _state(self, iteration: int) -> dict[str, Any]:
        rng = get_rng_state()
        if self.dist.enabled:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng)
            rngs = gathered
        else:
            rngs = [rng]
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "iters": self.config.iters,
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rngs,
            "data": {
                "seed": self.config.seed,
                "global_batch": self.config.batch_size,
                "num_samples": len(self.records),
                "next_sample": iteration * self.config.batch_size,
            },
            "train_seconds": self.train_seconds,
            "world_size": self.dist.world_size,
            "eval_history": json.dumps(self.eval_history),
        }

    def save_checkpoint(self, iteration: int) -> Path | None:
        """Checkpoint ``iteration``. A second signal while it is written does not cut it: it
        raises :class:`TrainingInterrupted` once the checkpoint is complete."""
        folder = None
        try:
            with self.stop.shielded():
                state = self._state(iteration)  # collective: every rank takes part
                if self.is_main:
                    folder = self.checkpoints.save(self.model, state, iteration)
        except _AbortAfterCheckpoint:
            raise TrainingInterrupted(iteration, folder, self.stop.signum) from None
        return folder

    def _stop_requested(self) -> bool:
        """Ctrl-C seen by this process or (under DDP) by any: every process stops at the same
        step, so the checkpoint's collectives line up."""
        return dist_utils.any_true(self.stop.set, self.device)

    def _interrupt(self, iteration: int, writer: MetricsWriter) -> TrainingInterrupted:
        """Checkpoint ``iteration`` (the steps done so far) and build the exception to raise."""
        try:
            folder = self.save_checkpoint(iteration)
        finally:
            writer.close()
        return TrainingInterrupted(iteration, folder, self.stop.signum)

    # ------------------------------------------------------------------ loop
    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run to ``config.iters``; return a summary (iterations, last losses, evaluation).

        ``stop_at`` ends this call early at that iteration with a checkpoint (as a preempted
        job would); ``Trainer(..., resume=True).train()`` then finishes the run. Ctrl-C
        (SIGINT) or SIGTERM does the same after the current step (or within one image of an
        evaluation) and raises :class:`TrainingInterrupted`; a second signal aborts at once,
        except within a second of the first (the same Ctrl-C delivered twice) and while a
        checkpoint is written (it is finished first). See :class:`_StopFlag`.
        """
        with self.stop, _deterministic_kernels(self.device):
            return self._train(stop_at)

    def _train(self, stop_at: int | None) -> dict[str, Any]:
        cfg = self.config
        budget_mode = cfg.max_minutes is not None
        input_spec = self._input_spec()
        resize = None if input_spec is None else TrainResize.from_input_spec(input_spec)
        self._forward_options = {} if resize is None else {"presized": True}
        sampler = DeterministicBatchSampler(
            len(self.records),
            cfg.batch_size,
            iters=10**9 if budget_mode else cfg.iters,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_iter=self.start_iter,
            flip_prob=0.0 if getattr(input_spec, "random_flip", None) == "none" else 0.5,
            num_sizes=1 if resize is None else len(resize.short_sides),
        )
        samples = TrainSamples(self.train_set, self.records, resize)
        loader = make_loader(samples, sampler, cfg.num_workers)
        writer = MetricsWriter(
            self.run_dir,
            enabled=self.is_main,
            resume_from=self.start_iter if self.start_iter else None,
        )
        bar = self._progress_bar()
        window: dict[str, list[float]] = defaultdict(list)
        last: dict[str, float] = {}
        it = self.start_iter
        data_iter = iter(loader)
        t_window = time.perf_counter()
        data_time = 0.0
        if cfg.eval_at_start and not self.start_iter:
            self._evaluate(0, writer)
            t_window = time.perf_counter()
        try:
            while it < self.config.iters and (stop_at is None or it < stop_at):
                if self._stop_requested():
                    raise self._interrupt(it, writer)
                t0 = time.perf_counter()
                images, targets = next(data_iter)
                t_data = time.perf_counter()
                data_time += t_data - t0
                losses = self._step(it, images, targets)
                it += 1
                self.train_seconds += time.perf_counter() - t0
                for k, v in losses.items():
                    window[k].append(v)
                last = losses
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(_short(losses), refresh=False)
                if budget_mode:
                    self._fit_budget(it, bar)
                if it % cfg.log_period == 0 or it == self.config.iters:
                    now = time.perf_counter()
                    n = len(next(iter(window.values()), [])) or 1
                    means = {k: sum(v) / len(v) for k, v in window.items()}
                    means = dist_utils.reduce_mean(means, self.device)
                    writer.write(
                        {
                            "iteration": it,
                            "lr": self.schedule.lr(it - 1),
                            **means,
                            "time_per_iter": (now - t_window) / n,
                            "data_time": data_time / n,
                        }
                    )
                    window.clear()
                    t_window, data_time = time.perf_counter(), 0.0
                if it % cfg.checkpoint_period == 0 and it < self.config.iters:
                    self.save_checkpoint(it)
                if cfg.eval_period and it % cfg.eval_period == 0 and it < self.config.iters:
                    self._evaluate(it, writer)
                    t_window = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
        if self._stop_requested():
            raise self._interrupt(it, writer)
        self.save_checkpoint(it)
        if it < self.config.iters:
            writer.close()
            return {
                "iterations": it,
                "train_seconds": self.train_seconds,
                "last_losses": last,
                "eval": None,
                "stopped": True,
            }
        if self.is_main:
            with self.stop.shielded():
                save_weights(self.model, self.run_dir / FINAL_WEIGHTS, {"iteration": str(it)})
        final = self._evaluate(it, writer) if self.eval_set is not None else None
        writer.close()
        if self._stop_requested():  # in the final evaluation: weights and checkpoint are written
            folder = self.checkpoints.last() if self.is_main else None
            raise TrainingInterrupted(it, folder, self.stop.signum)
        if self.is_main:
            plot_loss_curve(writer.path, self.run_dir / CURVE_FILE)
        dist_utils.barrier()
        return {
            "iterations": it,
            "train_seconds": self.train_seconds,
            "last_losses": last,
            "eval": final,
            "stopped": False,
        }

    def _input_spec(self) -> Any:
        """The ``input`` section of the spec being trained (the trainer's or the model's); None
        for a model without a spec, which then gets images at their own size and resizes them
        itself."""
        spec = self.spec if self.spec is not None else getattr(self.model, "spec", None)
        return getattr(spec, "input", None)

    def _step(self, it: int, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
        images = [im.to(self.device, non_blocking=True).float() for im in images]
        targets = [_to_device(t, self.device) for t in targets]
        self.schedule.apply(self.optimizer, it)
        with torch.autocast(
            device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp
        ):
            loss_dict = self.ddp_model(images, targets, **self._forward_options)
        values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
        if not dist_utils.all_finite(values):
            raise NonFiniteLossError(self._nonfinite_message(it, loss_dict))
        total = sum(loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = None
        clip = self.config.clip_grad_norm
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            if clip is not None:
                self.scaler.unscale_(self.optimizer)
                grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if clip is not None:
                grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        out = {k: float(v) for k, v in zip(loss_dict, values.tolist(), strict=True)}
        out["total_loss"] = float(sum(values.tolist()))
        if grad_norm is not None:
            out["grad_norm"] = float(grad_norm)  # before clipping
        return out

    @staticmethod
    def _nonfinite_message(it: int, loss_dict: dict[str, torch.Tensor]) -> str:
        bad = {
            k: float(v.detach())
            for k, v in loss_dict.items()
            if not math.isfinite(float(v.detach()))
        }
        if not bad:
            return f"a loss became non-finite on another process at iteration {it}; stopping"
        terms = ", ".join(f"{k} = {v}" for k, v in bad.items())
        return (
            f"loss {terms} at iteration {it}; stopping (try a lower --lr, a longer warm-up or "
            "--set train.clip_grad_norm=...)"
        )

    def _fit_budget(self, it: int, bar: Any) -> None:
        """Fit the iteration count to the time budget (refit only before the first LR step)."""
        budget = float(self.config.max_minutes) * 60.0
        if self.train_seconds >= budget:
            self.config = self.config.model_copy(update={"iters": it})
            if bar is not None:
                bar.total = it
            return
        first_step = self.config.steps[0] if self.config.steps else self.config.iters
        done = it - self.start_iter
        if it >= first_step or done < 5 or it % 5:
            return
        rate = it / max(self.train_seconds, 1e-6)
        target = max(it + 1, int(budget * rate))
        base = self.config
        frac = [s / base.iters for s in base.steps]
        steps = tuple(max(it + 1, round(f * target)) for f in frac)
        self.config = base.model_copy(
            update={
                "iters": target,
                "steps": steps,
                "warmup_iters": min(base.warmup_iters, target // 10),
            }
        )
        self.schedule = self._schedule_of(self.config)
        if bar is not None:
            bar.total = target
            bar.refresh()

    def _progress_bar(self) -> Any:
        if not (self.is_main and self.progress):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.config.iters,
            initial=self.start_iter,
            desc="train",
            unit="it",
            dynamic_ncols=True,
        )

    def _evaluate(self, it: int, writer: MetricsWriter) -> dict[str, Any] | None:
        if self.eval_set is None:
            return None
        result = None
        if self.is_main:
            from fnl_detector.train.evaluate import build_evaluator, evaluate_model, flatten

            t0 = time.perf_counter()
            if self._evaluator is None:
                self._evaluator = build_evaluator(self.surface)
            self.stop.raise_now = True  # Ctrl-C abandons an evaluation at once
            try:
                metrics = evaluate_model(
                    self.model,
                    self.eval_set,
                    self.device,
                    self.surface,
                    self.run_dir / "eval",
                    max_images=self.config.eval_max_images,
                    evaluator=self._evaluator,
                    should_stop=lambda: self.stop.set,
                )
            except KeyboardInterrupt:
                if not self.stop.set:  # not ours (no handler installed): pass it on
                    raise
                metrics = None
            finally:
                self.stop.raise_now = False
            if metrics is None:  # interrupted: the loop checkpoints and stops
                dist_utils.barrier()
                return None
            result = {"iteration": it, "eval_seconds": time.perf_counter() - t0, **metrics}
            self.eval_history = [h for h in self.eval_history if h["iteration"] != it] + [result]
            writer.write({"iteration": it, **flatten(metrics, "eval/")})
            out = {"final": result, "history": self.eval_history}
            (self.run_dir / EVAL_FILE).write_text(json.dumps(out, indent=2))
        dist_utils.barrier()
        return result


@contextmanager
def _deterministic_kernels(device: torch.device) -> Iterator[None]:
    """On CPU, torch's deterministic kernels while training.

    Some CPU kernels add floats with atomics from several threads, in an order that depends on
    how the threads are scheduled: the backward of advanced indexing (``index_put_`` with
    ``accumulate=True``, which the DensePose losses' point sampling runs over ~60k values) gave
    a different gradient in 114 of 199 repeats on a busy 2-core machine, and two same-seed
    trainings parted after a few steps. With ``torch.use_deterministic_algorithms`` they add
    in a fixed order (0 of 199). GPUs keep their fast kernels (several have no deterministic
    version); the previous setting is restored afterwards.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def _to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


_SHORT = {
    "total_loss": "loss",
    "loss_rpn_cls": "rpn",
    "loss_rpn_loc": "rpn_loc",
    "loss_box_cls": "cls",
    "loss_box_reg": "reg",
    "loss_densepose_I": "I",
    "loss_densepose_U": "U",
    "loss_densepose_V": "V",
    "loss_densepose_S": "S",
}


def _short(losses: dict[str, float]) -> str:
    return " ".join(f"{_SHORT.get(k, k)}={v:.3f}" for k, v in losses.items())
