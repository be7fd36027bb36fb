"""Training logs: ``metrics.jsonl`` (one JSON object per logged iteration), TensorBoard when
installed, a loss-curve PNG drawn with matplotlib (or Pillow when matplotlib is missing), and
the progress bar's line of losses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"


class MetricsWriter:
    """Append-only metrics log of the main process."""

    def __init__(self, run_dir: Path, enabled: bool = True, resume_from: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self._tb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from is not None and self.path.is_file():
            self._truncate_after(resume_from)
        elif resume_from is None:
            self.path.write_text("")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        except ImportError:
            self._tb = None

    def _truncate_after(self, iteration: int) -> None:
        """Drop lines logged after the checkpoint we resume from (they will be redone)."""
        kept = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= iteration]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record.get("iteration", 0)
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


def plot_loss_curve(metrics_path: Path, out_path: Path) -> Path | None:
    """Draw the total and per-term losses against the iteration; None when nothing was logged."""
    records = [r for r in read_metrics(metrics_path) if "total_loss" in r]
    if not records:
        return None
    keys = ["total_loss", *sorted(k for k in records[0] if k.startswith("loss_"))]
    series = {k: [(r["iteration"], r[k]) for r in records if k in r] for k in keys}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_with_pil(series, out_path)
        return out_path
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for key, pts in series.items():
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, label=key, linewidth=2.0 if key == "total_loss" else 1.0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def _plot_with_pil(series: dict[str, list[tuple[int, float]]], out_path: Path) -> None:
    import math

    from PIL import Image, ImageDraw

    width, height, margin = 800, 500, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    pts_all = [p for pts in series.values() for p in pts if p[1] > 0]
    xs = [p[0] for p in pts_all] or [0, 1]
    ys = [math.log10(p[1]) for p in pts_all] or [0, 1]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(max(ys), min(ys) + 1e-6)
    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    palette = ["black", "red", "blue", "green", "orange", "purple", "brown", "magenta", "cyan"]
    for k, (key, pts) in enumerate(series.items()):
        color = palette[k % len(palette)]
        line = [
            (
                margin + (x - x0) / (x1 - x0) * (width - 2 * margin),
                height - margin - (math.log10(y) - y0) / (y1 - y0) * (height - 2 * margin),
            )
            for x, y in pts
            if y > 0
        ]
        if len(line) > 1:
            draw.line(line, fill=color, width=2 if key == "total_loss" else 1)
        draw.text((margin + 5, margin + 5 + 12 * k), key, fill=color)
    draw.text((margin, height - margin + 10), f"iteration {x0}..{x1}, log10 loss", fill="black")
    img.save(out_path)


_SHORT_NAMES = {
    "total_loss": "loss",
    "loss_rpn_cls": "rpn",
    "loss_rpn_loc": "rpn_loc",
    "loss_box_cls": "cls",
    "loss_box_reg": "reg",
    "loss_densepose_I": "I",
    "loss_densepose_U": "U",
    "loss_densepose_V": "V",
    "loss_densepose_S": "S",
}


def short_losses(losses: dict[str, float]) -> str:
    """``loss=1.234 rpn=0.567 ...``: a step's losses under short names (the progress bar)."""
    return " ".join(f"{_SHORT_NAMES.get(k, k)}={v:.3f}" for k, v in losses.items())
