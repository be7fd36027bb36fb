"""Posing the toy body and ray-casting ellipsoids into a z-buffer (numpy, perspective camera).

Camera frame: x right, y down, z forward (pinhole at the origin). A pixel (row r, column c) is
the ray through its centre, direction ((c + 0.5 − cx)/f, (r + 0.5 − cy)/f, 1); the ray
parameter of a hit is therefore its depth. Each ellipsoid is intersected analytically over
the pixels of its projected bounding box only, and the nearest hit wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fnl_data.toy.body import (
    JOINT_PARENT,
    JOINT_REST,
    NUM_PARTS,
    PART_AXES,
    PART_CENTER,
    PART_JOINT,
    PART_RADII,
)

#: Body frame (x left, y up, z forward) → camera frame for a person facing the camera.
BODY_TO_CAMERA = np.diag([1.0, -1.0, -1.0])

# Per joint: (low, high) limits in radians of the rotations about x, z, y (applied Rz·Rx·Ry in
# the parent's frame), for the LEFT side; right-side joints use the mirrored rotation.
_LIMITS = {
    "spine": ((-0.15, 0.45), (-0.2, 0.2), (-0.4, 0.4)),
    "neck": ((-0.3, 0.4), (-0.3, 0.3), (-0.7, 0.7)),
    "shoulder": ((-2.6, 0.7), (-0.35, 1.9), (-0.8, 0.8)),
    "elbow": ((-2.4, 0.0), (0.0, 0.0), (-0.5, 0.5)),
    "wrist": ((-0.6, 0.6), (-0.3, 0.3), (0.0, 0.0)),
    "hip": ((-1.6, 0.45), (-0.15, 0.6), (-0.4, 0.4)),
    "knee": ((0.0, 2.2), (0.0, 0.0), (-0.2, 0.2)),
    "ankle": ((-0.4, 0.6), (-0.2, 0.2), (0.0, 0.0)),
}
_JOINT_LIMIT_KEY = ("pelvis", "spine", "neck") + ("shoulder", "elbow", "wrist") * 2 + (
    "hip", "knee", "ankle",
) * 2  # fmt: skip
_RIGHT = np.array([n.endswith("_r") for n in (
    "pelvis", "spine", "neck", "shoulder_l", "elbow_l", "wrist_l", "shoulder_r", "elbow_r",
    "wrist_r", "hip_l", "knee_l", "ankle_l", "hip_r", "knee_r", "ankle_r",
)])  # fmt: skip


def rotation(ax: float, az: float, ay: float) -> np.ndarray:
    """Rz(az) · Rx(ax) · Ry(ay)."""
    cx, sx, cz, sz, cy, sy = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az), np.cos(ay), np.sin(ay)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def sample_pose(rng: np.random.Generator) -> np.ndarray:
    """Random joint rotations (15×3×3) within the joint limits; the pelvis stays identity.

    An activity level in [0.15, 1] scales all angles, so calm and wild poses both occur.
    """
    activity = rng.uniform(0.15, 1.0)
    rots = np.empty((len(JOINT_PARENT), 3, 3))
    rots[0] = np.eye(3)
    for j in range(1, len(JOINT_PARENT)):
        lim = _LIMITS[_JOINT_LIMIT_KEY[j]]
        ax, az, ay = (activity * rng.uniform(lo, hi) for lo, hi in lim)
        if _RIGHT[j]:
            az, ay = -az, -ay
        rots[j] = rotation(ax, az, ay)
    return rots


def forward_kinematics(
    joint_rots: np.ndarray, root_rot: np.ndarray, root_pos: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """World rotation (J×3×3) and position (J×3) of each joint; rest offsets scaled."""
    n = len(JOINT_PARENT)
    g_rot = np.empty((n, 3, 3))
    g_pos = np.empty((n, 3))
    g_rot[0] = root_rot @ joint_rots[0]
    g_pos[0] = root_pos
    for j in range(1, n):
        par = JOINT_PARENT[j]
        g_rot[j] = g_rot[par] @ joint_rots[j]
        g_pos[j] = g_pos[par] + g_rot[par] @ ((JOINT_REST[j] - JOINT_REST[par]) * scale)
    return g_rot, g_pos


@dataclass
class PosedBody:
    """The 14 ellipsoids of one person in camera coordinates."""

    centers: np.ndarray  # 14×3
    axes: np.ndarray  # 14×3×3, columns e1, e2, e3
    radii: np.ndarray  # 14×3


def pose_body(
    joint_rots: np.ndarray,
    root_rot: np.ndarray,
    root_pos: np.ndarray,
    scale: float = 1.0,
    radius_scale: np.ndarray | None = None,
) -> PosedBody:
    """Place the body: ``root_rot`` maps the body frame to the camera frame at the pelvis."""
    g_rot, g_pos = forward_kinematics(joint_rots, root_rot, root_pos, scale)
    rot = g_rot[PART_JOINT]
    rel = (PART_CENTER - JOINT_REST[PART_JOINT]) * scale
    centers = g_pos[PART_JOINT] + np.einsum("kij,kj->ki", rot, rel)
    axes = rot @ PART_AXES
    radii = PART_RADII * scale
    if radius_scale is not None:
        radii = radii * radius_scale
    return PosedBody(centers, axes, radii)


@dataclass
class ZBuffer:
    """Per-pixel nearest hit: depth, ellipsoid index (−1 = none) and unit-sphere coordinates."""

    depth: np.ndarray  # H×W float32, inf where empty
    owner: np.ndarray  # H×W int32
    local: np.ndarray  # H×W×3 float32


def raycast(
    centers: np.ndarray,
    axes: np.ndarray,
    radii: np.ndarray,
    height: int,
    width: int,
    focal: float,
    near: float = 0.1,
) -> ZBuffer:
    """Z-buffer of K ellipsoids (K×3 centres, K×3×3 axes, K×3 radii) in camera coordinates."""
    cx, cy = width / 2, height / 2
    depth = np.full((height, width), np.inf, dtype=np.float32)
    owner = np.full((height, width), -1, dtype=np.int32)
    local = np.zeros((height, width, 3), dtype=np.float32)
    cols = (np.arange(width) + 0.5 - cx) / focal
    rows = (np.arange(height) + 0.5 - cy) / focal
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    for k in range(len(centers)):
        c, rad, ax = centers[k], radii[k], axes[k]
        pts = c + (corners * rad) @ ax.T
        if (pts[:, 2] <= near).any():
            continue
        px = pts[:, 0] / pts[:, 2] * focal + cx
        py = pts[:, 1] / pts[:, 2] * focal + cy
        c0, c1 = max(int(np.floor(px.min())), 0), min(int(np.ceil(px.max())) + 1, width)
        r0, r1 = max(int(np.floor(py.min())), 0), min(int(np.ceil(py.max())) + 1, height)
        if c0 >= c1 or r0 >= r1:
            continue
        q = ax.T / rad[:, None]  # world → unit-sphere coordinates
        q0 = -(q @ c)
        dx, dy = cols[None, c0:c1], rows[r0:r1, None]
        qd = [q[i, 0] * dx + q[i, 1] * dy + q[i, 2] for i in range(3)]
        a = qd[0] * qd[0] + qd[1] * qd[1] + qd[2] * qd[2]
        b = q0[0] * qd[0] + q0[1] * qd[1] + q0[2] * qd[2]  # half of the usual b
        disc = b * b - a * (q0 @ q0 - 1.0)
        hit = disc >= 0
        s = (-b - np.sqrt(np.where(hit, disc, 0.0))) / a
        sub_depth = depth[r0:r1, c0:c1]
        win = hit & (s > near) & (s < sub_depth)
        if not win.any():
            continue
        sub_depth[win] = s[win]
        owner[r0:r1, c0:c1][win] = k
        sw = s[win]
        local[r0:r1, c0:c1][win] = np.stack([q0[i] + sw * qd[i][win] for i in range(3)], axis=-1)
    return ZBuffer(depth, owner, local)


def surface_normals(
    zbuf: ZBuffer, axes: np.ndarray, radii: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Unit camera-frame normals (N×3) at the pixels of ``mask``."""
    k = zbuf.owner[mask]
    p = zbuf.local[mask]
    n = np.einsum("nij,nj->ni", axes[k], p / radii[k])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


__all__ = [
    "BODY_TO_CAMERA",
    "NUM_PARTS",
    "PosedBody",
    "ZBuffer",
    "forward_kinematics",
    "pose_body",
    "raycast",
    "rotation",
    "sample_pose",
    "surface_normals",
]
