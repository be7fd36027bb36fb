"""Worker of test_train_ddp.py, started by torchrun with 2 CPU processes (gloo).

Trains the fake detector of tests/detector/train_fakes.py for a few steps through the real
Trainer (DistributedDataParallel), then saves this rank's parameters to CHECK_DIR so the test
can compare ranks. The trainer itself must write RUN_DIR from rank 0 only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detector"))

from train_fakes import FakeDataset, FakeDetector

from fnl_detector.train.config import TrainConfig
from fnl_detector.train.loop import Trainer


def main() -> None:
    run_dir, check_dir = Path(sys.argv[1]), Path(sys.argv[2])
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    model = FakeDetector()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(
        iters=4,
        batch_size=4,
        lr=0.1,
        steps=(3,),
        warmup_iters=1,
        log_period=1,
        checkpoint_period=2,
        device="cpu",
        seed=5,
    )
    trainer = Trainer(config, FakeDataset(), run_dir, model=model, progress=False)
    assert trainer.dist.world_size == 2 and trainer.ddp_model is not trainer.model
    summary = trainer.train()
    check_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "initial": initial,
            "final": trainer.model.state_dict(),
            "iterations": summary["iterations"],
        },
        check_dir / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main()
