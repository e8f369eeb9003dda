"""Root motion as `pos_rot_deltas` (the reference's RootTransformer): invariant to where
the speaker stands and which way they face, so one model serves every take.

Per frame t, with heading theta_t = yaw of the root's forward (+Z) axis and the ground
reference g_t = root position with y = 0 (Gaussian-smoothed over time when
position_smoothing > 0; forward smoothed when rotation_smoothing > 0):
  pos   [3]: Ry(-theta_t) (p_t - g_t)           (height, plus the residual when smoothed)
  dpos  [2]: x, z of Ry(-theta_t) (g_t - g_{t-1})   ground velocity in the heading frame
  dyaw  [1]: theta_t - theta_{t-1} (wrapped)        turning speed
  rot   [3,3]: Ry(-theta_t) R_t                     root rotation without its heading
Frame 0 copies the deltas of frame 1 (as the reference does). The inverse integrates the
deltas from a start pose (x, z, theta of frame 0: `RootStart`), which is the only thing the
features do not hold; by default the take starts at the origin facing +Z.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RootStart", "root_to_deltas", "deltas_to_root", "yaw_matrix"]


@dataclass
class RootStart:
    """Ground position (x, z) and heading (radians about +Y) of the first frame."""

    x: float = 0.0
    z: float = 0.0
    heading: float = 0.0


def yaw_matrix(theta: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation by theta about +Y."""
    c, s = np.cos(theta), np.sin(theta)
    o, z = np.ones_like(theta), np.zeros_like(theta)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or x.shape[0] < 2:
        return x
    from scipy.ndimage import gaussian_filter1d
    return gaussian_filter1d(x, sigma, axis=0, mode="nearest")


def _first_from_second(d: np.ndarray) -> np.ndarray:
    """Deltas [N, ...] where row t = x_t - x_{t-1}; row 0 copies row 1 (zeros for one frame)."""
    out = np.zeros_like(d)
    if d.shape[0] > 1:
        out[1:] = d[1:]
        out[0] = d[1]
    return out


def root_to_deltas(rot: np.ndarray, pos: np.ndarray, position_smoothing: float = 0.0,
                   rotation_smoothing: float = 0.0) -> tuple[dict[str, np.ndarray], RootStart]:
    """rot [N, 3, 3], pos [N, 3] -> ({pos [N,3], dpos [N,2], dyaw [N], rot [N,3,3]}, start)."""
    rot = np.asarray(rot, np.float64)
    pos = np.asarray(pos, np.float64)
    ground = _smooth(pos * np.array([1.0, 0.0, 1.0]), position_smoothing)
    fwd = rot[:, :, 2] * np.array([1.0, 0.0, 1.0])  # root's +Z axis in the world, on the ground
    fwd = _smooth(fwd, rotation_smoothing)
    theta = np.arctan2(fwd[:, 0], fwd[:, 2])  # yaw taking +Z to fwd
    Rinv = yaw_matrix(-theta)  # [N, 3, 3]
    local_pos = np.einsum("nij,nj->ni", Rinv, pos - ground)
    vel = np.zeros_like(ground)
    vel[1:] = ground[1:] - ground[:-1]
    local_vel = _first_from_second(np.einsum("nij,nj->ni", Rinv, vel))
    dyaw = np.zeros_like(theta)
    dyaw[1:] = np.angle(np.exp(1j * (theta[1:] - theta[:-1])))  # wrapped to (-pi, pi]
    dyaw = _first_from_second(dyaw)
    feats = {"pos": local_pos, "dpos": local_vel[:, [0, 2]], "dyaw": dyaw, "rot": Rinv @ rot}
    start = RootStart(float(ground[0, 0]), float(ground[0, 2]), float(theta[0])) if len(theta) else RootStart()
    return feats, start


def deltas_to_root(feats: dict[str, np.ndarray], start: RootStart | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of root_to_deltas: -> (rot [N, 3, 3], pos [N, 3])."""
    start = start or RootStart()
    dyaw = np.asarray(feats["dyaw"], np.float64)
    N = dyaw.shape[0]
    theta = start.heading + np.concatenate([[0.0], np.cumsum(dyaw[1:])]) if N else np.zeros(0)
    R = yaw_matrix(theta)
    dpos = np.asarray(feats["dpos"], np.float64)
    v_local = np.stack([dpos[:, 0], np.zeros(N), dpos[:, 1]], -1)
    v = np.einsum("nij,nj->ni", R, v_local)
    v[:1] = 0.0
    ground = np.cumsum(v, axis=0) + np.array([start.x, 0.0, start.z])
    pos = ground + np.einsum("nij,nj->ni", R, np.asarray(feats["pos"], np.float64))
    return R @ np.asarray(feats["rot"], np.float64), pos
