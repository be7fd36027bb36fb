"""Child process of test_train_signals.py: a trainer run on the fake stand-ins, ended the way
``fnl train`` ends one (the same message and exit status), so a test can signal it from outside.

``python train_signal_child.py RUN_DIR new|resume AT HOLD``: forward call ``AT`` (-1: none)
writes ``RUN_DIR.ready`` when it starts and then takes ``HOLD`` seconds, for the signals to land
inside a step.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from train_fakes import FakeDataset, FakeDetector, tiny_config

from fnl_detector.commands.train import interrupted_message, interrupted_status
from fnl_detector.train.loop import Trainer, TrainingInterrupted

ITERS = 12


class SlowStepDetector(FakeDetector):
    def __init__(self, ready: Path, at: int, hold: float) -> None:
        super().__init__()
        self.ready, self.at, self.hold = ready, at, hold

    def forward(self, images, targets=None):
        if self.training and self.calls == self.at:
            self.ready.write_text("in the step")
            time.sleep(self.hold)
        return super().forward(images, targets)


def main(argv: list[str]) -> int:
    run, mode, at, hold = Path(argv[1]), argv[2], int(argv[3]), float(argv[4])
    torch.manual_seed(0)
    model = SlowStepDetector(run.with_suffix(".ready"), at, hold)
    config = tiny_config(iters=ITERS, steps=(9,), log_period=1, num_threads=1)
    trainer = Trainer(
        config, FakeDataset(), run, model=model, progress=False, resume=mode == "resume"
    )
    try:
        trainer.train()
    except TrainingInterrupted as stop:
        print(interrupted_message(stop), file=sys.stderr)
        return interrupted_status(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
