"""Tiny in-process components registered through the plugin path (``registry.registered``).

They make the detector tests independent of the zoo packages (an isolated fnl-detector has none
of fnl-backbones, fnl-necks, fnl-heads) and double as a test that any registered component (not
only the built-ins) plugs into the detector.

This module imports no torch (the configs' ``build`` imports :mod:`detector_standin_nets`), so
a fresh interpreter can register the stand-ins and still check that a command reports spec
errors before importing torch: see :func:`fnl_fresh`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from fnl_core import groups, registry
from fnl_core.spec import ComponentConfig, ShapeSpec

if TYPE_CHECKING:
    from detector_standin_nets import TinyLoss
    from torch import nn


class TinyBackboneConfig(ComponentConfig):
    type: Literal["tiny_backbone"] = "tiny_backbone"
    width: int = Field(8, gt=0)

    def build(self) -> nn.Module:
        from detector_standin_nets import TinyBackbone

        return TinyBackbone(self.width)


class TinyNeckConfig(ComponentConfig):
    type: Literal["tiny_neck"] = "tiny_neck"
    channels: int = Field(16, gt=0)

    def build(self, input_shape: dict[str, ShapeSpec]) -> nn.Module:
        from detector_standin_nets import TinyNeck

        return TinyNeck(input_shape, self.channels)


class TinyRPNConfig(ComponentConfig):
    type: Literal["tiny_rpn"] = "tiny_rpn"

    def build(self, in_channels: int, num_anchors: int) -> nn.Module:
        from detector_standin_nets import TinyRPNHead

        return TinyRPNHead(in_channels, num_anchors)


class TinyBoxHeadConfig(ComponentConfig):
    type: Literal["tiny_box"] = "tiny_box"
    dim: int = Field(32, gt=0)

    def build(self, in_channels: int, resolution: int) -> nn.Module:
        from detector_standin_nets import TinyBoxHead

        return TinyBoxHead(in_channels, resolution, self.dim)


class TinyDPHeadConfig(ComponentConfig):
    type: Literal["tiny_dp"] = "tiny_dp"
    channels: int = Field(16, gt=0)

    def build(self, in_channels: int) -> nn.Module:
        from detector_standin_nets import TinyDPHead

        return TinyDPHead(in_channels, self.channels)


class TinyPredictorConfig(ComponentConfig):
    type: Literal["tiny_chart"] = "tiny_chart"

    def build(self, in_channels: int, heatmap_size: int) -> nn.Module:
        from detector_standin_nets import TinyPredictor

        return TinyPredictor(in_channels, heatmap_size)


class TinyLossConfig(ComponentConfig):
    type: Literal["tiny_loss"] = "tiny_loss"

    def build(self, heatmap_size: int) -> TinyLoss:
        from detector_standin_nets import TinyLoss

        return TinyLoss(heatmap_size)


STANDINS = [
    (groups.BACKBONES, "tiny_backbone", TinyBackboneConfig),
    (groups.NECKS, "tiny_neck", TinyNeckConfig),
    (groups.RPN_HEADS, "tiny_rpn", TinyRPNConfig),
    (groups.BOX_HEADS, "tiny_box", TinyBoxHeadConfig),
    (groups.DENSEPOSE_HEADS, "tiny_dp", TinyDPHeadConfig),
    (groups.DENSEPOSE_PREDICTORS, "tiny_chart", TinyPredictorConfig),
    (groups.DENSEPOSE_LOSSES, "tiny_loss", TinyLossConfig),
]


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A complete spec made of stand-ins, small sizes everywhere."""
    spec: dict[str, Any] = {
        "input": {
            "min_size_train": [96, 128],
            "max_size_train": 192,
            "min_size_test": 128,
            "max_size_test": 192,
        },
        "backbone": {"type": "tiny_backbone"},
        "neck": {"type": "tiny_neck"},
        "rpn": {
            "head": {"type": "tiny_rpn"},
            "pre_nms_top_n_test": 200,
            "post_nms_top_n_test": 100,
            "pre_nms_top_n_train": 200,
            "post_nms_top_n_train": 100,
            "batch_size_per_image": 64,
        },
        "box_head": {"type": "tiny_box"},
        "roi_heads": {"batch_size_per_image": 32},
        "densepose": {
            "head": {"type": "tiny_dp"},
            "predictor": {"type": "tiny_chart"},
            "loss": {"type": "tiny_loss"},
            "pooler": {"in_features": ["p2"], "resolution": 8},
            "heatmap_size": 16,
        },
    }
    for key, value in overrides.items():
        spec[key] = value
    return spec


@contextmanager
def standins():
    with ExitStack() as stack:
        for group, name, cls in STANDINS:
            stack.enter_context(registry.registered(group, name, cls))
        yield


def write_tiny_spec(path: Path, **overrides: Any) -> str:
    """:func:`tiny_spec` saved as a JSON spec file (what the CLI takes instead of a preset)."""
    path.write_text(json.dumps(tiny_spec(**overrides), indent=2))
    return str(path)


ZOO = {"fnl_backbones": "fnl-backbones", "fnl_necks": "fnl-necks", "fnl_heads": "fnl-heads"}


def missing_zoo() -> list[str]:
    """The zoo distributions that the presets (``mobile_parsing_rcnn_b``...) need and that are not
    installed (all three in the isolated fnl-detector test venv)."""
    return [dist for module, dist in ZOO.items() if importlib.util.find_spec(module) is None]


def register_standins() -> None:
    """Register every stand-in for the rest of this process (a fresh interpreter's)."""
    for group, name, cls in STANDINS:
        registry.register(group, name, cls)


def fnl_fresh(
    args: list[str], *, standins: bool, modules: tuple[str, ...] = ("torch", "timm")
) -> tuple[int, str, list[str]]:
    """``fnl ARGS`` in a fresh interpreter; (exit code, stderr, which of ``modules`` it had
    imported when the command returned).

    In-process registrations do not reach a child process: with ``standins`` the child registers
    them (importing no torch) before running the command.
    """
    prelude = (
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from detector_standins import register_standins\n"
        "register_standins()\n"
    )
    code = (
        "import sys\n"
        f"{prelude if standins else ''}"
        "from fnl_core.cli import main\n"
        f"rc = main({args!r})\n"
        f"print('imported:', *(m for m in {modules!r} if m in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("imported:"):
        raise AssertionError(f"fnl {' '.join(args)} did not return (rc {done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}")  # fmt: skip
    return done.returncode, done.stderr, lines[-1].split()[1:]


def smooth_picture(h: int = 96, w: int = 128, seed: int = 0) -> Any:
    """An H×W×3 uint8 test picture: random colours upsampled (smooth, like a photo's)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    low = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC)).copy()
