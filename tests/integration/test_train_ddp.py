"""Two CPU processes under torchrun (gloo): both step, gradients are averaged, rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_train_worker.py")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_process_gloo_training(tmp_path):
    run_dir, check_dir = tmp_path / "run", tmp_path / "check"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        str(run_dir),
        str(check_dir),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(check_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(r["iterations"] == 4 for r in ranks)
    for name, value in ranks[0]["final"].items():
        if "running" in name or "num_batches" in name:
            continue  # BatchNorm statistics are per process (plain BN, not SyncBN)
        assert torch.equal(value, ranks[1]["final"][name]), f"{name} differs between ranks"
    moved = [
        k
        for k, v in ranks[0]["final"].items()
        if v.is_floating_point() and not torch.equal(v, ranks[0]["initial"][k])
    ]
    assert "fc.weight" in moved and "conv.weight" in moved
    # rank 0 alone wrote the logs: one line per iteration, no duplicates
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4]
    assert (run_dir / "model.safetensors").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "iter_0000002",
        "iter_0000004",
        "last_checkpoint",
    ]
    state = torch.load(
        run_dir / "checkpoints" / "iter_0000004" / "trainer_state.pt", weights_only=True
    )
    assert state["world_size"] == 2 and len(state["rng"]) == 2
