"""The training loop: one optimiser step per global batch, resume and (under torchrun)
DistributedDataParallel; logging, periodic checkpoints, evaluation and the time budget are
hooks (:mod:`fnl_detector.train.hooks`), stopping on a signal is :mod:`fnl_detector.train.stop`.

Only the main process (rank 0) writes files; every process computes the same number of steps.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
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
from fnl_detector.train.hooks import CheckpointHook, EvalHook, HookBase, LoggingHook, TimeBudgetHook
from fnl_detector.train.metrics import MetricsWriter, plot_loss_curve, short_losses
from fnl_detector.train.optim import build_optimizer
from fnl_detector.train.rng import deterministic_kernels, get_rng_state, seed_all, set_rng_state
from fnl_detector.train.rundir import (
    CONFIG_FILE,
    CURVE_FILE,
    FINAL_WEIGHTS,
    SPEC_FILE,
    clear_run,
    existing_run_files,
)
from fnl_detector.train.schedule import WarmupStepSchedule
from fnl_detector.train.stop import TrainingInterrupted, _AbortAfterCheckpoint, _StopFlag
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


class Trainer:
    """Train ``model`` (or the detector built from ``spec``) on ``train_set`` into ``run_dir``.

    ``model`` must follow the detector contract: in train mode ``model(images, targets)``
    returns a dict of scalar losses. ``eval_set`` (optional) is scored every
    ``config.eval_period`` iterations and at the end with the ``fnl.evaluators`` entry on the
    ``surface`` body surface. ``hooks`` (:class:`~fnl_detector.train.hooks.HookBase`) run
    after the trainer's own (:meth:`default_hooks`); :meth:`register_hooks` adds more.
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
        hooks: Iterable[HookBase] = (),
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
        self.schedule = WarmupStepSchedule.from_config(config)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.checkpoints = CheckpointDir(self.run_dir / "checkpoints")
        self.start_iter = 0
        self.train_seconds = 0.0
        self.records = [r for r in train_set.records if has_training_instances(r)]
        self.eval_history: list[dict[str, Any]] = []
        seed_all(config.seed + self.dist.rank)  # per-process sampling randomness

        if resume:
            self._resume()
        elif self.is_main:
            self._write_run_files()
        self.ddp_model = self._wrap_ddp()
        # what a train() call shares with its hooks (see fnl_detector.train.hooks.HookBase)
        self.iter = self.start_iter
        self.last_losses: dict[str, float] = {}
        self.data_seconds = 0.0
        self.untimed_until = 0.0
        self.final_eval: dict[str, Any] | None = None
        self.writer = MetricsWriter(self.run_dir, enabled=False)  # train() opens the log
        self.bar: Any = None
        self.hooks: list[HookBase] = []
        self.register_hooks(self.default_hooks())
        self.register_hooks(hooks)

    # ------------------------------------------------------------------ hooks
    def default_hooks(self) -> list[HookBase]:
        """The trainer's own hooks, in their order: the time budget (``max_minutes``),
        logging, periodic checkpoints, evaluation (with an ``eval_set``)."""
        cfg = self.config
        hooks: list[HookBase] = []
        if cfg.max_minutes is not None:
            hooks.append(TimeBudgetHook())
        hooks += [LoggingHook(cfg.log_period), CheckpointHook(cfg.checkpoint_period)]
        if self.eval_set is not None:
            hooks.append(EvalHook(cfg.eval_period, at_start=cfg.eval_at_start))
        return hooks

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Add ``hooks`` after those registered so far; they run in this order."""
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def exclude_from_timing(self) -> None:
        """Leave the work done up to now out of the logged ``time_per_iter`` (evaluation)."""
        self.untimed_until = time.perf_counter()

    # ------------------------------------------------------------------ setup
    def _pin_threads(self, config: TrainConfig, resume: bool) -> TrainConfig:
        """Fix the CPU thread count and record it in the config (train_config.json).

        CPU kernels split their reductions by thread count, so the same run on 1 and on 2
        threads differs from the first step (measured: total loss 8.40856262 against
        8.40856235 at step 1 of a tiny toy run). A resumed run takes the count of the run
        it continues unless one is given. Otherwise a single CPU process picks the count from
        the load now (:func:`~fnl_detector.train.recipes.cpu_threads`: one thread when other
        work keeps the cores busy, else one per core; as ``fnl demo`` does) unless
        ``OMP_NUM_THREADS`` says it; GPUs and distributed runs keep torch's choice.
        """
        threads = config.num_threads
        saved = self.run_dir / CONFIG_FILE
        if threads is None and resume and saved.is_file():
            threads = TrainConfig.model_validate_json(saved.read_text()).num_threads
        single_cpu = self.device.type == "cpu" and not self.dist.enabled
        if threads is None and single_cpu and "OMP_NUM_THREADS" not in os.environ:
            from fnl_detector.train.recipes import cpu_threads

            threads = cpu_threads()
        if threads is None:
            threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        return config.model_copy(update={"num_threads": threads})

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

    def _interrupt(self, iteration: int) -> TrainingInterrupted:
        """Checkpoint ``iteration`` (the steps done so far) and build the exception to raise."""
        try:
            folder = self.save_checkpoint(iteration)
        finally:
            self.writer.close()
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
        with self.stop, deterministic_kernels(self.device):
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
        self.writer = writer = MetricsWriter(
            self.run_dir,
            enabled=self.is_main,
            resume_from=self.start_iter if self.start_iter else None,
        )
        self.bar = bar = self._progress_bar()
        self.iter = self.start_iter
        self.last_losses, self.final_eval = {}, None
        data_iter = iter(loader)
        for hook in self.hooks:
            hook.before_train()
        try:
            while self.iter < self.config.iters and (stop_at is None or self.iter < stop_at):
                if self._stop_requested():
                    raise self._interrupt(self.iter)
                t0 = time.perf_counter()
                images, targets = next(data_iter)
                t_data = time.perf_counter()
                self.data_seconds = t_data - t0
                losses = self._step(self.iter, images, targets)
                self.iter += 1
                self.train_seconds += time.perf_counter() - t0
                self.last_losses = losses
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(short_losses(losses), refresh=False)
                for hook in self.hooks:
                    hook.after_step()
        finally:
            if bar is not None:
                bar.close()
        it = self.iter
        if self._stop_requested():
            raise self._interrupt(it)
        self.save_checkpoint(it)
        if it < self.config.iters:
            writer.close()
            return self._summary(eval_result=None, stopped=True)
        if self.is_main:
            with self.stop.shielded():
                save_weights(self.model, self.run_dir / FINAL_WEIGHTS, {"iteration": str(it)})
        for hook in self.hooks:
            hook.after_train()  # the final evaluation
        writer.close()
        if self._stop_requested():  # in the final evaluation: weights and checkpoint are written
            folder = self.checkpoints.last() if self.is_main else None
            raise TrainingInterrupted(it, folder, self.stop.signum)
        if self.is_main:
            plot_loss_curve(writer.path, self.run_dir / CURVE_FILE)
        dist_utils.barrier()
        return self._summary(eval_result=self.final_eval, stopped=False)

    def _summary(self, eval_result: dict[str, Any] | None, stopped: bool) -> dict[str, Any]:
        return {
            "iterations": self.iter,
            "train_seconds": self.train_seconds,
            "last_losses": self.last_losses,
            "eval": eval_result,
            "stopped": stopped,
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


def _to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in target.items()}
