"""The files of a run folder, and the checks around them (no torch import, so ``fnl train``
can refuse an occupied ``--out`` before the slow imports)."""

from __future__ import annotations

import shutil
from pathlib import Path

SPEC_FILE = "spec.json"
CONFIG_FILE = "train_config.json"
FINAL_WEIGHTS = "model.safetensors"
EVAL_FILE = "metrics_eval.json"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"
CHECKPOINTS = "checkpoints"

#: What a run writes into its folder; :func:`clear_run` removes exactly these.
RUN_FILES = (
    METRICS_FILE,
    CHECKPOINTS,
    SPEC_FILE,
    CONFIG_FILE,
    FINAL_WEIGHTS,
    EVAL_FILE,
    CURVE_FILE,
    "eval",
    "tensorboard",
)


def existing_run_files(run_dir: str | Path) -> list[str]:
    """Names of the run files (metrics, checkpoints, weights...) already in ``run_dir``."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def clear_run(run_dir: str | Path) -> list[str]:
    """Remove a previous run's files from ``run_dir`` (nothing else); returns their names."""
    removed = existing_run_files(run_dir)
    for name in removed:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed
