"""Trainer robustness: run folders are not clobbered, Ctrl-C checkpoints, file modes, threads."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading

import pytest
import torch
from train_fakes import FakeDataset, FakeDetector, tiny_config

from fnl_detector.train.checkpoint import CheckpointDir, CheckpointError
from fnl_detector.train.config import TrainConfig
from fnl_detector.train.evaluate import evaluate_model
from fnl_detector.train.loop import RunExistsError, Trainer, TrainingInterrupted, _StopFlag


def _config(**kw) -> TrainConfig:
    return tiny_config(**{"log_period": 1, **kw})


def _fake(cls=FakeDetector, **kw) -> FakeDetector:
    torch.manual_seed(0)
    return cls(**kw)


def _trainer(run, model=None, **kw) -> Trainer:
    return Trainer(_config(), FakeDataset(), run, model=model or _fake(), progress=False, **kw)


class CtrlCDetector(FakeDetector):
    """Delivers SIGINT to this process during forward call number ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def forward(self, images, targets=None):
        if self.training and self.calls == self.at:
            signal.raise_signal(signal.SIGINT)
        return super().forward(images, targets)


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_existing_run_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    _trainer(run).train()
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(RunExistsError, match=r"already holds a run \(metrics.jsonl, checkpoints"):
        _trainer(run)
    assert (run / "metrics.jsonl").read_text() == before  # untouched


def test_overwrite_replaces_the_old_run_entirely(tmp_path):
    run = tmp_path / "run"
    _trainer(run).train()
    (run / "notes.txt").write_text("mine")
    trainer = Trainer(
        _config(iters=4, steps=(3,)), FakeDataset(), run, model=_fake(), progress=False,
        overwrite=True,
    )  # fmt: skip
    assert not (run / "checkpoints").exists() and not (run / "model.safetensors").exists()
    trainer.train()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "checkpoints").glob("iter_*")) == ["iter_0000004"]
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_ctrl_c_checkpoints_the_current_iteration_and_resumes_exactly(tmp_path):
    straight = _fake()
    _trainer(tmp_path / "a", model=straight).train()

    run = tmp_path / "b"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup, else Python's default
    with pytest.raises(TrainingInterrupted) as info:
        _trainer(run, model=_fake(CtrlCDetector, at=4)).train()
    assert info.value.iteration == 5  # the step in progress finishes, then it stops
    assert CheckpointDir(run / "checkpoints").last().name == "iter_0000005"
    assert signal.getsignal(signal.SIGINT) is before  # handler restored

    resumed = _fake()
    _trainer(run, model=resumed, resume=True).train()
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


class TwiceDetector(FakeDetector):
    """Delivers SIGINT twice (``second``: SIGINT or SIGTERM) during forward call 1."""

    second = signal.SIGINT

    def forward(self, images, targets=None):
        if self.training and self.calls == 1:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(self.second)
        return super().forward(images, targets)


def test_second_ctrl_c_aborts_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(_StopFlag, "REPEAT_WINDOW_S", 0.0)  # the second comes later than that
    with pytest.raises(KeyboardInterrupt) as info:
        _trainer(tmp_path / "run", model=_fake(TwiceDetector)).train()
    assert not isinstance(info.value, TrainingInterrupted)


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_repeat_within_the_window_is_the_same_request(tmp_path, second):
    """``uv run`` hands one Ctrl-C to its child twice, 200 ms apart: that is no abort."""
    model = _fake(type("Twice", (TwiceDetector,), {"second": second}))
    with pytest.raises(TrainingInterrupted) as info:
        _trainer(tmp_path / "run", model=model).train()
    assert info.value.iteration == 2 and info.value.signum == signal.SIGINT
    assert CheckpointDir(tmp_path / "run" / "checkpoints").last().name == "iter_0000002"


def test_sigterm_checkpoints_like_ctrl_c(tmp_path):
    class TermDetector(FakeDetector):
        def forward(self, images, targets=None):
            if self.training and self.calls == 2:
                signal.raise_signal(signal.SIGTERM)
            return super().forward(images, targets)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        _trainer(tmp_path / "run", model=_fake(TermDetector)).train()
    assert info.value.iteration == 3 and info.value.signum == signal.SIGTERM
    assert CheckpointDir(tmp_path / "run" / "checkpoints").last().name == "iter_0000003"
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_signal_while_a_checkpoint_is_written_waits_for_it(tmp_path, monkeypatch):
    """The second Ctrl-C lands between the checkpoint's weights and its trainer state: the
    checkpoint is finished first, then training stops; it resumes to the uninterrupted run."""
    import fnl_detector.train.checkpoint as checkpoint

    straight = _fake()
    _trainer(tmp_path / "a", model=straight).train()

    monkeypatch.setattr(_StopFlag, "REPEAT_WINDOW_S", 0.0, raising=False)
    save_state = checkpoint.save_state

    def ctrl_c_between_the_files(state, path):
        signal.raise_signal(signal.SIGINT)
        save_state(state, path)

    monkeypatch.setattr(checkpoint, "save_state", ctrl_c_between_the_files)
    run = tmp_path / "b"
    with pytest.raises(TrainingInterrupted) as info:
        _trainer(run, model=_fake(CtrlCDetector, at=4)).train()
    assert info.value.iteration == 5
    folder = CheckpointDir(run / "checkpoints").last()
    assert folder.name == "iter_0000005"
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "trainer_state.pt"]
    monkeypatch.undo()

    resumed = _fake()
    _trainer(run, model=resumed, resume=True).train()
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_folder_appears_complete_or_not_at_all(tmp_path, monkeypatch):
    import fnl_detector.train.checkpoint as checkpoint

    run = tmp_path / "run"
    _trainer(run).train(stop_at=2)
    root = run / "checkpoints"

    def killed(state, path):  # the process dies after the weights, before the trainer state
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        CheckpointDir(root).save(_fake(), {}, 3)
    assert sorted(p.name for p in root.iterdir()) == ["iter_0000002", "last_checkpoint"]
    monkeypatch.undo()

    stale = root / ".iter_0000004.999.tmp"  # as a SIGKILL mid-write leaves it
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert CheckpointDir(root).last().name == "iter_0000002"
    CheckpointDir(root).save(_fake(), {}, 4)
    assert sorted(p.name for p in root.iterdir()) == [
        "iter_0000002", "iter_0000004", "last_checkpoint",
    ]  # fmt: skip
    CheckpointDir(root).save(_fake(), {}, 4)  # the same iteration again replaces it whole
    assert CheckpointDir(root).last().name == "iter_0000004"


def test_evaluation_stops_before_the_next_image():
    class Counting(FakeDataset):
        calls = 0

        def load_image(self, record):
            self.calls += 1
            return super().load_image(record)

    data = Counting(n=5)
    out = evaluate_model(
        FakeDetector().eval(), data, torch.device("cpu"), None, "unused",
        evaluator=object(), should_stop=lambda: True,
    )  # fmt: skip
    assert out is None and data.calls == 0


def test_checkpoint_files_are_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        _trainer(tmp_path / "run").train()
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_thread_count_is_recorded_and_reused_on_resume(tmp_path):
    run = tmp_path / "run"
    Trainer(_config(num_threads=1), FakeDataset(), run, model=_fake(), progress=False).train(
        stop_at=2
    )
    assert json.loads((run / "train_config.json").read_text())["num_threads"] == 1
    torch.set_num_threads(2)
    _trainer(run, resume=True)  # the config given has no thread count: the run's is used
    assert torch.get_num_threads() == 1


def test_thread_count_follows_the_load_at_run_start_and_is_recorded(tmp_path, monkeypatch):
    from fnl_detector.train import recipes

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(recipes.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(recipes.os, "getloadavg", lambda: (5.0, 5.0, 5.0))  # a busy machine
    torch.set_num_threads(2)
    run = tmp_path / "run"
    Trainer(_config(), FakeDataset(), run, model=_fake(), progress=False).train(stop_at=1)
    assert torch.get_num_threads() == 1
    assert json.loads((run / "train_config.json").read_text())["num_threads"] == 1


def test_ctrl_c_during_evaluation_abandons_it_at_once(tmp_path, monkeypatch):
    import time

    import fnl_detector.train.evaluate as evaluate

    def slow_scoring(*args, **kwargs):
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        time.sleep(30)  # scoring that never checks a flag: Ctrl-C must cut it short
        raise AssertionError("not interrupted")

    monkeypatch.setattr(evaluate, "evaluate_model", slow_scoring)
    monkeypatch.setattr(evaluate, "build_evaluator", lambda surface: object())
    trainer = Trainer(
        _config(eval_period=3), FakeDataset(), tmp_path / "run", model=_fake(),
        eval_set=FakeDataset(n=2), progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(TrainingInterrupted) as info:
        trainer.train()
    assert time.perf_counter() - start < 20
    assert info.value.iteration == 3
    assert CheckpointDir(tmp_path / "run" / "checkpoints").last().name == "iter_0000003"


def test_resume_with_another_model_shape_fails_in_one_line(tmp_path):
    run = tmp_path / "run"
    _trainer(run).train(stop_at=2)
    other = _fake()
    other.fc = torch.nn.Linear(8, 5)  # as if built from another spec
    expected = r"2 tensor\(s\) of another shape, e.g. fc.weight \(4, 8\) in the file"
    with pytest.raises(CheckpointError, match=expected):
        _trainer(run, model=other, resume=True)


class _RecordsDeterminism(FakeDetector):
    """Notes whether torch's deterministic kernels are on during each training forward."""

    seen: list[bool]

    def forward(self, images, targets=None):
        if self.training:
            self.seen.append(torch.are_deterministic_algorithms_enabled())
        return super().forward(images, targets)


def test_cpu_training_runs_deterministic_kernels_and_restores_the_setting(tmp_path):
    """CPU kernels that add with atomics (index_put_ with accumulate, the DensePose point
    sampling's backward) made same-seed runs part on a busy machine; training on CPU turns
    torch's deterministic kernels on, and leaves the caller's setting as it was."""
    model = _RecordsDeterminism()
    model.seen = []
    assert not torch.are_deterministic_algorithms_enabled()
    _trainer(tmp_path / "run", model=model).train()
    assert model.seen and all(model.seen)
    assert not torch.are_deterministic_algorithms_enabled()
