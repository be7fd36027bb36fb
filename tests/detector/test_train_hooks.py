"""Trainer hooks: a user's hook runs after every step and can write into the run folder."""

from __future__ import annotations

import json

import pytest
import torch
from train_fakes import FakeDataset, FakeDetector, tiny_config

from fnl_detector.train import HookBase
from fnl_detector.train.hooks import CheckpointHook, LoggingHook
from fnl_detector.train.loop import Trainer


class NotesHook(HookBase):
    """Writes one line per step to RUN_DIR/notes.jsonl (main process only)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def before_train(self) -> None:
        self.calls.append(("before_train", self.trainer.iter))

    def after_step(self) -> None:
        t = self.trainer
        self.calls.append(("after_step", t.iter))
        if t.is_main:
            with (t.run_dir / "notes.jsonl").open("a") as f:
                f.write(json.dumps({"iteration": t.iter, "loss": t.last_losses["total_loss"]}))
                f.write("\n")

    def after_train(self) -> None:
        self.calls.append(("after_train", self.trainer.iter))
        self.trainer.writer.write({"iteration": self.trainer.iter, "note": 1.0})


def _trainer(run, **kw) -> Trainer:
    torch.manual_seed(0)
    return Trainer(tiny_config(), FakeDataset(), run, model=FakeDetector(), progress=False, **kw)


def test_a_user_hook_runs_after_every_step_and_writes_to_the_run_folder(tmp_path):
    hook = NotesHook()
    trainer = _trainer(tmp_path / "run", hooks=[hook])
    assert isinstance(trainer.hooks[0], LoggingHook) and trainer.hooks[-1] is hook
    assert hook.trainer is trainer
    trainer.train()
    steps = [("after_step", it) for it in range(1, 9)]
    assert hook.calls == [("before_train", 0), *steps, ("after_train", 8)]
    notes = [
        json.loads(line) for line in (tmp_path / "run" / "notes.jsonl").read_text().splitlines()
    ]
    assert [n["iteration"] for n in notes] == list(range(1, 9))
    logged = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    by_iter = {r["iteration"]: r for r in logged if "total_loss" in r}
    mean = (notes[0]["loss"] + notes[1]["loss"]) / 2  # the losses the log averages
    assert by_iter[2]["total_loss"] == pytest.approx(mean, rel=1e-12)
    assert logged[-1] == {"iteration": 8, "note": 1.0}  # after_train writes before the log closes


def test_hooks_registered_later_run_after_the_others_and_stop_early_skips_after_train(tmp_path):
    first, second = NotesHook(), NotesHook()
    trainer = _trainer(tmp_path / "run", hooks=[first])
    trainer.register_hooks([second])
    assert trainer.hooks[-2:] == [first, second]
    assert any(isinstance(h, CheckpointHook) for h in trainer.hooks)
    trainer.train(stop_at=3)
    assert second.calls == [("before_train", 0), ("after_step", 1), ("after_step", 2),
                            ("after_step", 3)]  # fmt: skip
    assert first.calls == second.calls


def test_a_spent_time_budget_ends_the_run_at_that_step(tmp_path):
    """TimeBudgetHook runs before the others: the step that spends the budget is the last
    one, logged, checkpointed and saved as the final weights."""
    run = tmp_path / "run"
    torch.manual_seed(0)
    config = tiny_config(max_minutes=1e-9, log_period=5)
    summary = Trainer(config, FakeDataset(), run, model=FakeDetector(), progress=False).train()
    assert summary["iterations"] == 1 and not summary["stopped"]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in logged] == [1]
    assert (run / "checkpoints" / "last_checkpoint").read_text().strip() == "iter_0000001"
    assert (run / "model.safetensors").is_file()
