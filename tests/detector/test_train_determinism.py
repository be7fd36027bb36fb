"""Bit-identical CPU training with the real detector: two runs with the same seed, and a run
interrupted and resumed, end with the same weights (the thread count is pinned and recorded).

The detector (transform, RPN, RoI heads, samplers, DensePose targets) is fnl-detector's own;
its backbone, neck and heads are the in-process stand-ins on a fake DensePose dataset (what an
isolated fnl-detector has) and, where fnl-backbones, -necks, -heads and fnl-data are installed,
the ``mobile_parsing_rcnn_b`` preset's on the toy dataset."""

from __future__ import annotations

import copy

import pytest
import torch
from detector_standins import missing_zoo, standins, tiny_spec
from train_fakes import FakeDataset

from fnl_detector import load_spec
from fnl_detector.train import TrainConfig, Trainer
from fnl_detector.train.recipes import TOY_CPU_SPEC_OVERRIDES

SMALL = [
    *TOY_CPU_SPEC_OVERRIDES,
    "input.min_size_train=[80,64]",  # two sizes: the per-image size draw must replay too
    "input.max_size_train=112",
    "rpn.pre_nms_top_n_train=200",
    "rpn.post_nms_top_n_train=100",
    "roi_heads.batch_size_per_image=64",
]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["stand-ins", "preset"])
def setup(request, tmp_path_factory):
    """(initial model, training set); the model is built once and every run trains a copy."""
    from fnl_detector import build_detector

    if request.param == "stand-ins":
        small = tiny_spec()
        small["input"] = {**small["input"], "min_size_train": [80, 64], "max_size_train": 112}
        with standins():  # registered while training too (a run records the spec's provenance)
            torch.manual_seed(0)
            yield build_detector(load_spec(small)), FakeDataset(n=6, size=96, densepose=True)
        return
    if missing := missing_zoo():
        pytest.skip(f"the mobile_parsing_rcnn_b preset needs {', '.join(missing)} (not installed)")
    pytest.importorskip("fnl_data", reason="needs the toy dataset (fnl-data)")
    from fnl_core import groups, registry

    config = registry.get(groups.DATASETS, "toy")(
        num_images={"train": 6, "val": 1}, width=112, height=80, max_people=2,
        points_per_person=20, cache_dir=str(tmp_path_factory.mktemp("cache")),
    )  # fmt: skip
    torch.manual_seed(0)  # the timm build dominates a short run: built once
    yield build_detector(load_spec("mobile_parsing_rcnn_b", SMALL)), config.build(split="train")


def _weights(model, toy_train, run, steps, stop_at=None) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(
        iters=steps, batch_size=2, lr=0.02, warmup_iters=3, steps=(steps * 2 // 3,),
        clip_grad_norm=10.0,
        log_period=5, checkpoint_period=100, device="cpu", seed=0, num_threads=1,
    )  # fmt: skip
    trainer = Trainer(cfg, toy_train, run, model=copy.deepcopy(model), progress=False)
    if stop_at is not None:
        trainer.train(stop_at=stop_at)
        trainer = Trainer(
            cfg, toy_train, run, model=copy.deepcopy(model), progress=False, resume=True
        )
    trainer.train()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize(
    "steps", [6, pytest.param(30, marks=pytest.mark.slow)], ids=["6-steps", "30-steps"]
)
def test_same_seed_same_weights_and_resume_changes_nothing(setup, tmp_path, steps):
    initial_model, toy_train = setup
    first = _weights(initial_model, toy_train, tmp_path / "a", steps)
    second = _weights(initial_model, toy_train, tmp_path / "b", steps)
    resumed = _weights(initial_model, toy_train, tmp_path / "c", steps, stop_at=steps // 2 - 1)
    assert first.keys() == second.keys() == resumed.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name}: two runs differ"
        assert torch.equal(first[name], resumed[name]), f"{name}: the resumed run differs"
    initial = initial_model.state_dict()
    trained = [name for name in first if not torch.equal(first[name], initial[name])]
    assert any(name.startswith("roi_heads.densepose_predictor.") for name in trained), trained
