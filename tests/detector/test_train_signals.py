"""``fnl train``'s run stopped from outside: SIGTERM (preemption, ``timeout``, ``docker stop``)
and one Ctrl-C delivered twice 200 ms apart (``uv run`` forwards it to a child that already got
it) each leave a checkpoint that ``--resume`` continues from, bit-identical to a run that was
never stopped. The child process (train_signal_child.py) trains the fake stand-ins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fnl_detector.train.checkpoint import CheckpointDir

HERE = Path(__file__).parent
CHILD = HERE / "train_signal_child.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _child(run: Path, mode: str, at: int = -1, hold: float = 0.0) -> subprocess.Popen:
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    cmd = [sys.executable, str(CHILD), str(run), mode, str(at), str(hold)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=180)
    return proc.returncode, err


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the run never stopped."""
    run = tmp_path_factory.mktemp("straight") / "run"
    rc, err = _finish(_child(run, "new"))
    assert rc == 0, err
    return _weights(run / "model.safetensors")


def _stop_then_resume(run: Path, send, expected_rc: int, straight) -> str:
    ready = run.with_suffix(".ready")
    proc = _child(run, "new", at=3, hold=1.5)  # step 4 takes 1.5 s: the signals land in it
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.01)
    send(proc)
    rc, err = _finish(proc)
    assert rc == expected_rc, err
    assert "Traceback" not in err, err
    assert "interrupted at iteration 4; checkpoint" in err and "--resume" in err, err
    last = CheckpointDir(run / "checkpoints").last()
    assert last is not None and last.name == "iter_0000004"
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]

    rc, err = _finish(_child(run, "resume"))
    assert rc == 0, err
    resumed = _weights(run / "model.safetensors")
    assert resumed.keys() == straight.keys()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name
    return err


def test_sigterm_checkpoints_and_resume_is_bit_identical(tmp_path, straight):
    _stop_then_resume(tmp_path / "run", lambda p: p.send_signal(signal.SIGTERM), 143, straight)


def test_one_ctrl_c_delivered_twice_checkpoints_and_resume_is_bit_identical(tmp_path, straight):
    def twice(proc):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)

    _stop_then_resume(tmp_path / "run", twice, 130, straight)
