"""``fnl train`` from the command line: argument checks, recipes, occupied run folders, resume
with the saved spec, Ctrl-C (exit 130)."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys

import pytest
import torch
from detector_standins import fnl_fresh, missing_zoo, write_tiny_spec

from fnl_core.cli import main as fnl
from fnl_detector.commands.train import EXIT_INTERRUPTED, choose_recipe

TINY = [
    "input.min_size_train=[128]",
    "input.min_size_test=128",
    "input.max_size_train=192",
    "input.max_size_test=192",
]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--iters", "0", "expected an integer > 0, got '0'"),
        ("--iters", "-3", "expected an integer > 0, got '-3'"),
        ("--batch-size", "two", "expected an integer > 0, got 'two'"),
        ("--lr", "-0.1", "expected a number > 0, got '-0.1'"),
        ("--minutes", "inf", "expected a finite number > 0, got 'inf'"),
        ("--seed", "-1", "expected an integer >= 0, got '-1'"),
        ("--eval-period", "-1", "expected an integer >= 0, got '-1'"),
    ],
)
def test_nonsense_numbers_are_rejected(tmp_path, capsys, option, value, expected):
    with pytest.raises(SystemExit) as info:
        fnl(["train", "mobile_parsing_rcnn_b", "--data", "toy", "--out", str(tmp_path),
             option, value])  # fmt: skip
    assert info.value.code == 2
    assert f"argument {option}: {expected}" in capsys.readouterr().err


def _fnl_without_torch(args: list[str], standins: bool = False) -> tuple[int, str, bool]:
    """Run ``fnl ARGS`` in a fresh interpreter (with the stand-ins registered when asked);
    (exit code, stderr, torch or timm imported?)."""
    rc, err, imported = fnl_fresh(args, standins=standins)
    return rc, err, bool(imported)


@pytest.mark.parametrize("kind", ["stand-ins", "preset"])
def test_spec_typo_is_reported_before_torch_is_imported(tmp_path, kind):
    if kind == "preset" and (missing := missing_zoo()):
        pytest.skip(f"the mobile_parsing_rcnn_b preset needs {', '.join(missing)} (not installed)")
    spec = "mobile_parsing_rcnn_b" if kind == "preset" else write_tiny_spec(tmp_path / "t.json")
    args = ["train", spec, "--data", "toy", "--out", str(tmp_path / "r"),
            "--set", "backbone.nrom=bn"]  # fmt: skip
    rc, err, imported = _fnl_without_torch(args, standins=kind == "stand-ins")
    assert rc == 2 and "backbone.nrom: Extra inputs are not permitted" in err and not imported


def test_occupied_out_is_refused_before_torch_is_imported(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\n')
    (tmp_path / "checkpoints").mkdir()
    rc, err, imported = _fnl_without_torch(
        ["train", "mobile_parsing_rcnn_b", "--data", "toy", "--out", str(tmp_path)]
    )
    assert rc == 2 and not imported
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "already holds a run (metrics.jsonl, checkpoints)" in lines[0]
    assert "--resume" in lines[0] and "--overwrite" in lines[0]
    assert (tmp_path / "metrics.jsonl").read_text() == '{"iteration": 1}\n'


def test_resume_needs_a_run(tmp_path, capsys):
    rc = fnl(["train", "mobile_parsing_rcnn_b", "--data", "toy", "--out", str(tmp_path),
              "--resume"])  # fmt: skip
    assert rc == 2 and "holds no run to resume" in capsys.readouterr().err


@pytest.mark.skipif(
    bool(missing_zoo()) or importlib.util.find_spec("fnl_data") is None,
    reason="the preset and the toy dataset need fnl-backbones, fnl-necks, fnl-heads and fnl-data",
)
def test_bad_data_is_reported_before_the_recipe_is_announced(tmp_path, capsys):
    argv = ["train", "mobile_parsing_rcnn_b", "--out", str(tmp_path / "run"), "--data"]
    assert fnl([*argv, "tyo"]) == 2
    out, err = capsys.readouterr()
    assert "recipe" not in out and "did you mean 'toy'" in err
    assert fnl([*argv, "toy", "--data-set", "num_images={train:40}"]) == 2
    out, err = capsys.readouterr()
    assert "recipe" not in out and "invalid spec" not in err
    assert err.count("\n") == 1 and "values are JSON" in err
    assert """num_images='{"train": 40}'""" in err


def test_recipe_choice():
    assert choose_recipe("auto", "toy", "cpu") == "cpu-toy"
    assert choose_recipe("auto", "toy:/data", "cpu") == "cpu-toy"
    assert choose_recipe("auto", "toy", "cuda") == "paper"
    assert choose_recipe("auto", "coco:/data", "cpu") == "paper"
    assert choose_recipe("paper", "toy", "cpu") == "paper"
    assert choose_recipe("auto", "toy", None) == ("paper" if torch.cuda.is_available()
                                                  else "cpu-toy")  # fmt: skip


# ----------------------------------------------------------------- real runs on toy data
@pytest.fixture(scope="module")
def toy_options(tmp_path_factory):
    pytest.importorskip("fnl_data", reason="needs the toy dataset (fnl-data)")
    cache = tmp_path_factory.mktemp("cache")
    return [
        "--data-set", 'num_images={"train": 4, "val": 2}', "width=160", "height=128",
        "max_people=2", "points_per_person=30", f"cache_dir={cache}",
    ]  # fmt: skip


def _train(run, toy_options, *args: str) -> int:
    return fnl(["train", "mobile_parsing_rcnn_b", "--data", "toy", "--out", str(run),
                "--no-progress", "--val-split", "", *toy_options, *args])  # fmt: skip


def test_cpu_toy_recipe_ctrl_c_and_resume_with_the_saved_spec(
    tmp_path, toy_options, capsys, monkeypatch
):
    from fnl_detector.train.loop import Trainer

    run = tmp_path / "run"
    step = Trainer._step

    def ctrl_c_at_second_step(self, it, images, targets):
        if it == 1 and not self.start_iter:
            signal.raise_signal(signal.SIGINT)
        return step(self, it, images, targets)

    monkeypatch.setattr(Trainer, "_step", ctrl_c_at_second_step)
    rc = _train(run, toy_options, "--device", "cpu", "--iters", "4", "--set", *TINY,
                "train.num_threads=1", "train.log_period=1")  # fmt: skip
    captured = capsys.readouterr()
    assert rc == EXIT_INTERRUPTED
    assert (
        "fnl train: recipe cpu-toy (chosen for toy data on a CPU): from scratch, trainable BN, "
        "128 px, batch 2, lr 0.02, 4 steps; --recipe paper" in captured.out
    )
    assert "interrupted at iteration 2; checkpoint" in captured.err
    assert (run / "checkpoints" / "iter_0000002").is_dir()
    spec = json.loads((run / "spec.json").read_text())
    assert spec["densepose"]["predictor"]["coarse_channels"] == 2  # the recipe's
    config = json.loads((run / "train_config.json").read_text())
    assert config["batch_size"] == 2 and config["lr"] == 0.02 and config["num_threads"] == 1

    # a conflicting override is refused in one line, naming the key
    rc = _train(run, toy_options, "--resume", "--set", "densepose.predictor.coarse_channels=15")
    err = capsys.readouterr().err
    assert rc == 2 and "densepose.predictor.coarse_channels" in err and "spec.json" in err

    # the schedule belongs to the run: another length is refused, the same one is fine
    rc = _train(run, toy_options, "--resume", "--iters", "9")
    assert rc == 2 and "--iters 9 cannot change it" in capsys.readouterr().err

    # no --set needed: spec and trainer options come from the run folder
    assert _train(run, toy_options, "--resume", "--iters", "4") == 0
    out = capsys.readouterr().out
    assert "resuming" in out and '"iterations": 4' in out
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines if "total_loss" in r] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bench", "mobile_parsing_rcnn_b", "--runs", "0"], "--runs: expected an integer > 0"),
        (["info", "mobile_parsing_rcnn_b", "--size", "-1"], "--size: expected an integer > 0"),
        (["demo", "--minutes", "0"], "--minutes: expected a number > 0"),
        (["quantize", "x", "--threads", "0", "--out", "q"], "--threads: expected an integer > 0"),
        (["export", "x", "--opset", "-2", "--out", "e"], "--opset: expected an integer > 0"),
    ],
    ids=["bench", "info", "demo", "quantize", "export"],
)
def test_other_commands_reject_nonsense_numbers(capsys, args, expected):
    with pytest.raises(SystemExit) as info:
        fnl(args)
    assert info.value.code == 2 and f"argument {expected}" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_from_outside_checkpoints_and_exits_130(tmp_path, toy_options):
    """A real SIGINT sent to a running ``fnl train`` process (as a terminal's Ctrl-C)."""
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fnl_core.cli", "train", "mobile_parsing_rcnn_b", "--data", "toy",
           "--out", str(run), "--no-progress", "--iters", "500", "--val-split", "", *toy_options,
           "--set", *TINY, "train.log_period=1", "train.num_threads=1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    line = proc.stderr.readline()
    reaction = time.monotonic() - sent
    proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED
    assert "interrupted at iteration" in line and "--resume" in line
    step = int(line.split("iteration ")[1].split(";")[0])
    assert step >= 3 and (run / "checkpoints" / f"iter_{step:07d}").is_dir()
    assert reaction < 30, reaction


def test_init_weights_starts_a_new_run_from_trained_weights(tmp_path, toy_options, capsys):
    from safetensors.torch import load_file

    first = tmp_path / "first"
    common = ["--device", "cpu", "--set", *TINY, "train.num_threads=1"]
    assert _train(first, toy_options, "--iters", "2", *common) == 0
    trained = first / "model.safetensors"

    # one step at a negligible LR: the run must stay at the weights it started from
    second = tmp_path / "second"
    rc = _train(second, toy_options, "--iters", "1", "--lr", "1e-9", "--init-weights",
                str(trained), *common)  # fmt: skip
    assert rc == 0 and f"starting from the weights in {trained}" in capsys.readouterr().out
    fresh = tmp_path / "fresh"
    assert _train(fresh, toy_options, "--iters", "1", "--lr", "1e-9", *common) == 0
    start, end = load_file(trained), load_file(second / "model.safetensors")
    scratch = load_file(fresh / "model.safetensors")
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    learned = [
        k
        for k in start
        if not k.endswith(buffers) and not torch.allclose(start[k].float(), scratch[k].float())
    ]
    assert learned, "the first run changed no weight"
    for key in learned:
        assert torch.allclose(end[key].float(), start[key].float(), atol=1e-4), key
    counts = [k for k in start if k.endswith("num_batches_tracked")]
    assert any(int(end[k]) == int(start[k]) + 1 for k in counts)  # BN counts carried on

    # with --resume it is refused in one line; a missing file too
    assert _train(second, toy_options, "--resume", "--init-weights", str(trained)) == 2
    assert "--init-weights starts a new run" in capsys.readouterr().err
    assert _train(tmp_path / "x", toy_options, "--init-weights", str(tmp_path / "no.pt")) == 2
    assert "no such file" in capsys.readouterr().err
