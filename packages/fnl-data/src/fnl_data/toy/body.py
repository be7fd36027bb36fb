"""The toy human: 14 ellipsoids on a 15-joint skeleton, with the 24 DensePose charts.

Body frame (metres): x = the person's left, y = up, z = forward; the canonical pose stands on
y = 0, arms 20° away from the body (A-pose), about 1.71 m tall.

Each coarse part is one ellipsoid with a right-handed local frame (e1, e2, e3): e3 runs along
the bone from the proximal end (torso: from the neck down; head: from the neck up; foot: heel
to toes), e2 points forward for the torso and the limbs, to the person's left for the head, up
for the feet. A point p of the unit sphere (ellipsoid coordinates) has

* ``V = arccos(−p3) / π`` (0 at the proximal end, 1 at the distal end);
* two-chart parts, split by the sign of p2 (front/back, head left/right):
  ``a = atan2(|p2|, p1) / π``, ``U = a`` on the p2 ≥ 0 chart and ``U = 1 − a`` on the other;
* single-chart parts (hands, feet): ``U = ((atan2(p2, p1) + π/2) / 2π) mod 1``.

With left and right frames mirror images of each other (e2, e3 mirrored, e1 = e2 × e3), the
left-right mirror of the point (chart i, U, V) is exactly (``FINE_FLIP[i]``, 1 − U, V): the
toy body's chart symmetry needs no lookup table (see :class:`ToySymmetry`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fnl_core.densepose import FINE_FLIP, NUM_FINE_CHARTS

_FINE_FLIP = np.asarray(FINE_FLIP, dtype=np.int64)

# Joints: name, parent, rest position (body frame, metres).
JOINTS: tuple[tuple[str, int, tuple[float, float, float]], ...] = (
    ("pelvis", -1, (0.0, 0.95, 0.0)),
    ("spine", 0, (0.0, 1.02, 0.0)),
    ("neck", 1, (0.0, 1.46, 0.0)),
    ("shoulder_l", 1, (0.145, 1.40, 0.0)),
    ("elbow_l", 3, (0.145 + 0.29 * np.sin(0.35), 1.40 - 0.29 * np.cos(0.35), 0.0)),
    ("wrist_l", 4, (0.145 + 0.54 * np.sin(0.35), 1.40 - 0.54 * np.cos(0.35), 0.0)),
    ("shoulder_r", 1, (-0.145, 1.40, 0.0)),
    ("elbow_r", 6, (-0.145 - 0.29 * np.sin(0.35), 1.40 - 0.29 * np.cos(0.35), 0.0)),
    ("wrist_r", 7, (-0.145 - 0.54 * np.sin(0.35), 1.40 - 0.54 * np.cos(0.35), 0.0)),
    ("hip_l", 0, (0.09, 0.92, 0.0)),
    ("knee_l", 9, (0.095, 0.50, 0.0)),
    ("ankle_l", 10, (0.10, 0.09, 0.0)),
    ("hip_r", 0, (-0.09, 0.92, 0.0)),
    ("knee_r", 12, (-0.095, 0.50, 0.0)),
    ("ankle_r", 13, (-0.10, 0.09, 0.0)),
)
JOINT_INDEX = {name: k for k, (name, _, _) in enumerate(JOINTS)}
JOINT_PARENT = np.array([p for _, p, _ in JOINTS], dtype=np.int64)
JOINT_REST = np.array([pos for _, _, pos in JOINTS], dtype=np.float64)

_X, _Y, _Z = np.eye(3)


@dataclass(frozen=True)
class Part:
    """One ellipsoid of the body; ``charts`` = (chart where p2 < 0, chart where p2 ≥ 0)."""

    name: str
    coarse: int
    charts: tuple[int, int]
    joint: int
    center: np.ndarray
    axes: np.ndarray
    """3×3, columns e1, e2, e3 in the body frame."""
    radii: np.ndarray

    @property
    def single_chart(self) -> bool:
        return self.charts[0] == self.charts[1]


def _frame(e2: np.ndarray, e3: np.ndarray) -> np.ndarray:
    e3 = e3 / np.linalg.norm(e3)
    e2 = e2 - e3 * (e2 @ e3)
    e2 = e2 / np.linalg.norm(e2)
    return np.stack([np.cross(e2, e3), e2, e3], axis=1)


def _segment(
    name: str,
    coarse: int,
    charts: tuple[int, int],
    start: str,
    end: str,
    radius: tuple[float, float],
    extend: float,
) -> Part:
    a, b = JOINT_REST[JOINT_INDEX[start]], JOINT_REST[JOINT_INDEX[end]]
    half = np.linalg.norm(b - a) / 2 + extend
    return Part(
        name, coarse, charts, JOINT_INDEX[start], (a + b) / 2, _frame(_Z, b - a),
        np.array([radius[0], radius[1], half]),
    )  # fmt: skip


def _hand(name: str, coarse: int, chart: int, elbow: str, wrist: str) -> Part:
    a, b = JOINT_REST[JOINT_INDEX[elbow]], JOINT_REST[JOINT_INDEX[wrist]]
    d = (b - a) / np.linalg.norm(b - a)
    return Part(
        name, coarse, (chart, chart), JOINT_INDEX[wrist], b + d * 0.075, _frame(_Z, d),
        np.array([0.022, 0.045, 0.095]),
    )  # fmt: skip


def _foot(name: str, coarse: int, chart: int, ankle: str) -> Part:
    a = JOINT_REST[JOINT_INDEX[ankle]]
    return Part(
        name, coarse, (chart, chart), JOINT_INDEX[ankle], a + np.array([0.0, -0.045, 0.06]),
        _frame(_Y, _Z), np.array([0.045, 0.035, 0.125]),
    )  # fmt: skip


#: The 14 parts, in coarse-label order (part k has coarse label k + 1).
PARTS: tuple[Part, ...] = (
    Part("torso", 1, (1, 2), JOINT_INDEX["spine"], np.array([0.0, 1.15, 0.0]),
         _frame(_Z, -_Y), np.array([0.175, 0.105, 0.33])),
    _hand("hand_r", 2, 3, "elbow_r", "wrist_r"),
    _hand("hand_l", 3, 4, "elbow_l", "wrist_l"),
    _foot("foot_l", 4, 5, "ankle_l"),
    _foot("foot_r", 5, 6, "ankle_r"),
    _segment("upper_leg_r", 6, (7, 9), "hip_r", "knee_r", (0.075, 0.08), 0.04),
    _segment("upper_leg_l", 7, (8, 10), "hip_l", "knee_l", (0.075, 0.08), 0.04),
    _segment("lower_leg_r", 8, (11, 13), "knee_r", "ankle_r", (0.052, 0.058), 0.035),
    _segment("lower_leg_l", 9, (12, 14), "knee_l", "ankle_l", (0.052, 0.058), 0.035),
    _segment("upper_arm_l", 10, (15, 17), "shoulder_l", "elbow_l", (0.048, 0.05), 0.04),
    _segment("upper_arm_r", 11, (16, 18), "shoulder_r", "elbow_r", (0.048, 0.05), 0.04),
    _segment("lower_arm_l", 12, (19, 21), "elbow_l", "wrist_l", (0.038, 0.04), 0.03),
    _segment("lower_arm_r", 13, (20, 22), "elbow_r", "wrist_r", (0.038, 0.04), 0.03),
    Part("head", 14, (23, 24), JOINT_INDEX["neck"], np.array([0.0, 1.595, 0.01]),
         _frame(_X, _Y), np.array([0.10, 0.085, 0.115])),
)  # fmt: skip

NUM_PARTS = len(PARTS)
PART_JOINT = np.array([p.joint for p in PARTS], dtype=np.int64)
PART_CENTER = np.stack([p.center for p in PARTS])
PART_AXES = np.stack([p.axes for p in PARTS])
PART_RADII = np.stack([p.radii for p in PARTS])
PART_CHART_NEG = np.array([p.charts[0] for p in PARTS], dtype=np.int64)
PART_CHART_POS = np.array([p.charts[1] for p in PARTS], dtype=np.int64)
PART_SINGLE = np.array([p.single_chart for p in PARTS])
#: Part index of each chart id (index 0 unused).
CHART_PART = np.zeros(NUM_FINE_CHARTS + 1, dtype=np.int64)
for _k, _p in enumerate(PARTS):
    CHART_PART[list(_p.charts)] = _k
#: Mirror part index of each part.
PART_MIRROR = np.array([CHART_PART[FINE_FLIP[p.charts[1]]] for p in PARTS], dtype=np.int64)


def local_to_chart(part: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chart id, U, V of unit-sphere points ``p`` (…×3) of parts ``part`` (…)."""
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    p1, p2, p3 = p[..., 0], p[..., 1], p[..., 2]
    v = np.arccos(np.clip(-p3, -1.0, 1.0)) / np.pi
    pos = p2 >= 0
    a = np.arctan2(np.abs(p2), p1) / np.pi
    u_half = np.where(pos, a, 1.0 - a)
    u_single = np.mod((np.arctan2(p2, p1) + np.pi / 2) / (2 * np.pi), 1.0)
    u = np.where(PART_SINGLE[part], u_single, u_half)
    chart = np.where(pos, PART_CHART_POS[part], PART_CHART_NEG[part])
    return chart, u, v


def chart_to_local(
    chart: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`local_to_chart`: (part index, unit-sphere point …×3)."""
    chart = np.asarray(chart, dtype=np.int64)
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    part = CHART_PART[chart]
    pos = chart == PART_CHART_POS[part]
    phi_half = np.where(pos, np.pi * u, -np.pi * (1.0 - u))
    phi = np.where(PART_SINGLE[part], 2 * np.pi * u - np.pi / 2, phi_half)
    s = np.sin(np.pi * v)
    p = np.stack([s * np.cos(phi), s * np.sin(phi), -np.cos(np.pi * v)], axis=-1)
    return part, p


def local_to_body(part: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Canonical-pose body-frame position of unit-sphere points ``p`` of parts ``part``."""
    scaled = p * PART_RADII[part]
    return PART_CENTER[part] + np.einsum("...ij,...j->...i", PART_AXES[part], scaled)


def body_to_local(part: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Ellipsoid coordinates of body-frame points ``x`` w.r.t. parts ``part`` (canonical pose)."""
    rel = x - PART_CENTER[part]
    return np.einsum("...ji,...j->...i", PART_AXES[part], rel) / PART_RADII[part]


class ToySymmetry:
    """Exact left-right symmetry of the toy body's charts: (i, U, V) → (FINE_FLIP[i], 1 − U, V)."""

    def __call__(
        self, i: np.ndarray, u: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = np.asarray(i, dtype=np.int64)
        u = np.asarray(u, dtype=np.float32)
        return _FINE_FLIP[i], (np.float32(1) - u).astype(np.float32), np.array(v, dtype=np.float32)

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """The same map as ``UV_symmetry_transforms.mat``-style 24×256×256 U and V tables."""
        grid = np.arange(256, dtype=np.float32) / 255
        u_tab = np.broadcast_to(1 - grid[None, None, :], (NUM_FINE_CHARTS, 256, 256)).copy()
        v_tab = np.broadcast_to(grid[None, :, None], (NUM_FINE_CHARTS, 256, 256)).copy()
        return u_tab, v_tab
