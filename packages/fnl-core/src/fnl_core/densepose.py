"""DensePose constants: chart and part names, label symmetries and groupings.

Plain tuples (no numpy), indexed by label: index 0 is the background everywhere. Sources and
conventions: docs/data_format.md, 'Charts and parts' (names, fine → coarse, evaluation groups)
and 'Horizontal flip' (symmetries).

The official DensePose documentation names only the coarse part of each fine chart; which half
of a limb a chart covers ("back"/"front", "left"/"right" for the head) follows the informal
community naming (lower id = back half). The head charts 23/24 are a mirror pair (the flip table
swaps them), hence right/left halves.
"""

from __future__ import annotations

NUM_FINE_CHARTS = 24
"""Fine charts (``dp_I`` values 1..24); label 0 is the background."""

NUM_COARSE_PARTS = 14
"""Coarse parts (``dp_masks`` entries, labels 1..14); label 0 is the background."""

NUM_EVAL_GROUPS = 8
"""Groups of fine charts sharing one GPS normaliser κ (labels 1..8; 0 = background)."""

#: Fine chart names, index = ``dp_I`` (index 0 = background).
FINE_CHART_NAMES: tuple[str, ...] = (
    "Background",
    "Torso Back",
    "Torso Front",
    "Right Hand",
    "Left Hand",
    "Left Foot",
    "Right Foot",
    "Upper Leg Right Back",
    "Upper Leg Left Back",
    "Upper Leg Right Front",
    "Upper Leg Left Front",
    "Lower Leg Right Back",
    "Lower Leg Left Back",
    "Lower Leg Right Front",
    "Lower Leg Left Front",
    "Upper Arm Left Back",
    "Upper Arm Right Back",
    "Upper Arm Left Front",
    "Upper Arm Right Front",
    "Lower Arm Left Back",
    "Lower Arm Right Back",
    "Lower Arm Left Front",
    "Lower Arm Right Front",
    "Head Right",
    "Head Left",
)

#: Coarse part names, index = coarse label = position in ``dp_masks`` + 1.
COARSE_PART_NAMES: tuple[str, ...] = (
    "Background",
    "Torso",
    "Right Hand",
    "Left Hand",
    "Left Foot",
    "Right Foot",
    "Upper Leg Right",
    "Upper Leg Left",
    "Lower Leg Right",
    "Lower Leg Left",
    "Upper Arm Left",
    "Upper Arm Right",
    "Lower Arm Left",
    "Lower Arm Right",
    "Head",
)

#: Coarse label of each fine chart (docs/data_format.md, 'Charts and parts').
FINE_TO_COARSE: tuple[int, ...] = (
    0, 1, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13, 12, 13, 14, 14,
)  # fmt: skip

#: Evaluation group of each fine chart (docs/data_format.md, 'Charts and parts').
FINE_TO_EVAL_GROUP: tuple[int, ...] = (
    0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8,
)  # fmt: skip

#: Evaluation group names, index = group label.
EVAL_GROUP_NAMES: tuple[str, ...] = (
    "Background",
    "Torso",
    "Hands",
    "Feet",
    "Upper Legs",
    "Lower Legs",
    "Upper Arms",
    "Lower Arms",
    "Head",
)

#: Per-group GPS normaliser κ of the SMPL surface, in metres (docs/evaluation.md, GPS; group 0 = 0).
SMPL_KAPPA: tuple[float, ...] = (0.0, 0.351, 0.107, 0.126, 0.237, 0.173, 0.142, 0.128, 0.150)

#: Fine chart of the mirror image under a horizontal flip (docs/data_format.md, 'Horizontal
#: flip', step 2).
FINE_FLIP: tuple[int, ...] = (
    0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23,
)  # fmt: skip

#: Coarse label of the mirror image under a horizontal flip (docs/data_format.md, 'Horizontal
#: flip', step 4).
COARSE_FLIP: tuple[int, ...] = (0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14)

__all__ = [
    "COARSE_FLIP",
    "COARSE_PART_NAMES",
    "EVAL_GROUP_NAMES",
    "FINE_CHART_NAMES",
    "FINE_FLIP",
    "FINE_TO_COARSE",
    "FINE_TO_EVAL_GROUP",
    "NUM_COARSE_PARTS",
    "NUM_EVAL_GROUPS",
    "NUM_FINE_CHARTS",
    "SMPL_KAPPA",
]
