"""Trainer infrastructure: schedule, optimiser groups, data order, checkpoints, resume, NaN."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from train_fakes import FakeDataset, FakeDetector, tiny_config

from fnl_detector.train.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointDir,
    CheckpointError,
    load_state,
)
from fnl_detector.train.config import TrainConfig
from fnl_detector.train.data import DeterministicBatchSampler
from fnl_detector.train.loop import NonFiniteLossError, Trainer
from fnl_detector.train.optim import build_optimizer, param_groups
from fnl_detector.train.schedule import WarmupStepSchedule
from fnl_detector.weights import read_weights


def _config(**kw) -> TrainConfig:
    return tiny_config(**{**kw})


def _fake(**kw) -> FakeDetector:
    torch.manual_seed(0)  # the same initial weights for every run that is compared
    return FakeDetector(**kw)


def _trainer(tmp_path, config=None, model=None, resume=False, data=None) -> Trainer:
    return Trainer(
        config or _config(),
        data or FakeDataset(),
        tmp_path / "run",
        model=model or _fake(),
        resume=resume,
        progress=False,
    )


def test_schedule_warmup_and_steps():
    s = WarmupStepSchedule(base_lr=0.002, steps=(100, 120), warmup_iters=10, warmup_factor=0.1)
    assert s.lr(0) == pytest.approx(0.0002)
    assert s.lr(5) == pytest.approx(0.002 * (0.1 * 0.5 + 0.5))
    assert s.lr(10) == pytest.approx(0.002)
    assert s.lr(99) == pytest.approx(0.002)
    assert s.lr(100) == pytest.approx(0.0002)
    assert s.lr(120) == pytest.approx(0.00002)
    assert WarmupStepSchedule.from_state_dict(s.state_dict()) == s


def test_paper_schedule_scales_with_iters():
    cfg = TrainConfig.scaled(1300)
    assert cfg.steps == (1000, 1200)
    assert cfg.warmup_iters == 10
    assert TrainConfig().steps == (100_000, 120_000) and TrainConfig().lr == 0.002
    with pytest.raises(ValueError, match="steps must be increasing"):
        TrainConfig(steps=(5, 3))
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_reference_schedules_stretch_to_the_run_length():
    s3x = TrainConfig.scaled(3900, "s3x")
    assert s3x.steps == (3300, 3700) and s3x.warmup_iters == 10
    assert TrainConfig.scaled(390_000, "s3x").steps == (330_000, 370_000)
    assert TrainConfig.scaled(1300).steps == (1000, 1200)
    assert TrainConfig().amp is False  # the reference trains in float32
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig.scaled(100, "s2x")


def test_no_weight_decay_on_norm_params():
    model = FakeDetector()
    groups = param_groups(model, 1e-4, 0.0)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 1e-4 and groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[1]["params"]} == {id(model.norm.weight), id(model.norm.bias)}
    assert id(model.conv.weight) in decayed and id(model.norm.weight) not in decayed


def test_weight_decay_follows_the_reference_on_fusion_weights_and_subclassed_norms():
    """detectron2 exempts norm layers by type: a module that merely has "Norm" in its class
    name (the BiFPN's fast normalised fusion) keeps its weight decay; a subclass of a torch
    norm (timm's BatchNormAct2d) loses it."""

    class FastNormalizedFusion(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(2))

    class BatchNormAct(nn.BatchNorm2d):
        pass

    model = nn.ModuleDict({"fuse": FastNormalizedFusion(), "bn": BatchNormAct(4)})
    decayed, exempt = param_groups(model, 1e-4, 0.0)
    assert [id(p) for p in decayed["params"]] == [id(model["fuse"].weight)]
    assert {id(p) for p in exempt["params"]} == {id(model["bn"].weight), id(model["bn"].bias)}


def test_optimizer_choice():
    model = FakeDetector()
    sgd = build_optimizer(model, 0.1, 0.9, 1e-4, 0.0)
    adamw = build_optimizer(model, 1e-3, 0.8, 1e-4, 0.0, kind="adamw")
    assert isinstance(sgd, torch.optim.SGD) and isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.8, 0.999)
    assert [g["weight_decay"] for g in adamw.param_groups] == [1e-4, 0.0]
    with pytest.raises(ValueError, match="'sgd' or 'adamw', got 'adam'"):
        build_optimizer(model, 0.1, 0.9, 1e-4, 0.0, kind="adam")
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam")


def test_data_order_is_deterministic_and_split_between_ranks():
    one = DeterministicBatchSampler(10, 4, iters=6, seed=1)
    ranks = [
        DeterministicBatchSampler(10, 4, iters=6, seed=1, rank=r, world_size=2) for r in range(2)
    ]
    for it in range(6):
        assert one.batch(it) == ranks[0].batch(it) + ranks[1].batch(it)
    assert list(DeterministicBatchSampler(10, 4, 6, seed=1, start_iter=3)) == list(one)[3:]
    epoch0 = sorted(one.sample(k)[0] for k in range(10))
    assert epoch0 == list(range(10))
    assert one.batch(0) != DeterministicBatchSampler(10, 4, 6, seed=2).batch(0)
    with pytest.raises(ValueError, match="divisible"):
        DeterministicBatchSampler(10, 3, 6, seed=1, world_size=2)


def test_loss_decreases_and_run_files_written(tmp_path):
    summary = _trainer(tmp_path, _config(iters=40, steps=(30,), lr=0.2)).train()
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["loss_box_reg"] > 2 * records[-1]["loss_box_reg"]
    assert summary["iterations"] == 40 and not summary["stopped"]
    assert (run / "model.safetensors").is_file() and (run / "loss_curve.png").is_file()
    assert (run / "train_config.json").is_file()
    assert not list(run.rglob("*.tmp"))
    assert records[0]["lr"] == pytest.approx(0.2 * (0.1 + 0.9 * 1 / 2))


def test_resume_gives_the_same_weights(tmp_path):
    straight = _fake()
    _trainer(tmp_path / "a", model=straight).train()

    first = _fake()
    out = _trainer(tmp_path / "b", model=first).train(stop_at=5)
    assert out["stopped"] and out["iterations"] == 5
    resumed = _fake()
    torch.nn.init.zeros_(resumed.fc.weight)  # must be overwritten by the checkpoint
    trainer = _trainer(tmp_path / "b", model=resumed, resume=True)
    assert trainer.start_iter == 5
    trainer.train()
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    state = load_state(tmp_path / "b" / "run" / "checkpoints" / "iter_0000008" / STATE_FILE)
    assert state["data"]["next_sample"] == 8 * 4 and state["iteration"] == 8


def test_resume_without_checkpoint_or_with_changed_config_fails(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _trainer(tmp_path, resume=True)
    _trainer(tmp_path).train(stop_at=2)
    with pytest.raises(ValueError, match="lr"):
        _trainer(tmp_path, _config(lr=0.5), resume=True)


@pytest.mark.parametrize("name", [WEIGHTS_FILE, STATE_FILE])
def test_truncated_checkpoint_names_the_file(tmp_path, name):
    _trainer(tmp_path).train(stop_at=2)
    folder = CheckpointDir(tmp_path / "run" / "checkpoints").last()
    path = folder / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        _trainer(tmp_path, resume=True)


def test_truncated_weights_file_error():
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weights("/nonexistent/model.safetensors")


def test_nan_loss_stops_with_term_and_iteration(tmp_path):
    trainer = _trainer(tmp_path, model=FakeDetector(nan_at=3))
    with pytest.raises(NonFiniteLossError, match=r"loss_box_reg = nan at iteration 3"):
        trainer.train()


def test_gradient_clipping_bounds_the_update(tmp_path):
    model = FakeDetector()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _config(
        iters=1, lr=1.0, warmup_iters=0, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e-3
    )
    _trainer(tmp_path, cfg, model=model).train()
    delta = torch.sqrt(
        sum(
            ((model.state_dict()[k] - v).float() ** 2).sum()
            for k, v in before.items()
            if v.is_floating_point() and "running" not in k
        )
    )
    assert float(delta) <= 1e-3 + 1e-6
