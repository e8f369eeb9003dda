"""Rotation conversions with ONE implementation for numpy and jax.numpy.

Every function picks its array namespace from its input (`jax.Array` or tracer -> jax.numpy,
anything else -> numpy), or takes `xp=` explicitly, so the feature pipeline (numpy, on the
host) and models/metrics (jax, on device) share exactly the same math and the same tests.

Conventions
  * angles in radians (BVH files hold degrees: convert with np.deg2rad at the boundary);
  * Euler `order` lists the axes of the angle vector, e.g. "ZYX" with angles (a, b, c) means
    R = Rz(a) @ Ry(b) @ Rx(c): the intrinsic convention of BVH channel order;
  * matrices act on column vectors (v' = R @ v), shape [..., 3, 3];
  * quaternions are (w, x, y, z), shape [..., 4];
  * exponential map = axis * angle, shape [..., 3];
  * 6D (Zhou et al. 2019) = the first two COLUMNS of R concatenated, shape [..., 6].
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "namespace", "axis_rotation", "euler_to_matrix", "matrix_to_euler", "matrix_to_quat",
    "quat_to_matrix", "quat_to_expmap", "expmap_to_quat", "expmap_to_matrix", "matrix_to_expmap",
    "matrix_to_6d", "sixd_to_matrix", "euler_to_quat", "quat_to_euler", "quat_mul", "quat_conj",
    "quat_slerp", "quat_continuity", "expmap_continuity", "euler_to_expmap", "expmap_to_euler",
    "EULER_ORDERS",
]

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
_AXIS = {"X": 0, "Y": 1, "Z": 2}


def namespace(*arrays, xp=None):
    """numpy or jax.numpy, chosen from the inputs (any jax array/tracer -> jax.numpy)."""
    if xp is not None:
        return xp
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("jax") or mod.startswith("jaxlib"):
            import jax.numpy as jnp
            return jnp
    return np


def _check_order(order: str) -> str:
    order = order.upper()
    if len(order) != 3 or set(order) != {"X", "Y", "Z"}:
        raise ValueError(f"Euler order must be a permutation of XYZ (one of {EULER_ORDERS}), got {order!r}")
    return order


def axis_rotation(axis: str, angle, xp=None):
    """[..., 3, 3] rotation by `angle` (radians, [...]) about the X, Y or Z axis."""
    xp = namespace(angle, xp=xp)
    angle = xp.asarray(angle)
    c, s = xp.cos(angle), xp.sin(angle)
    o, z = xp.ones_like(angle), xp.zeros_like(angle)
    a = _AXIS[axis.upper()]
    if a == 0:
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif a == 1:
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def euler_to_matrix(angles, order: str, xp=None):
    """angles [..., 3] (radians, in `order`'s axis order) -> R [..., 3, 3] = R_a0 @ R_a1 @ R_a2."""
    xp = namespace(angles, xp=xp)
    order = _check_order(order)
    angles = xp.asarray(angles)
    R = axis_rotation(order[0], angles[..., 0], xp)
    R = R @ axis_rotation(order[1], angles[..., 1], xp)
    return R @ axis_rotation(order[2], angles[..., 2], xp)


def matrix_to_euler(R, order: str, xp=None):
    """R [..., 3, 3] -> angles [..., 3] (radians) with R = R_a0 @ R_a1 @ R_a2.

    Middle angle in [-pi/2, pi/2]; at gimbal lock (|cos b| ~ 0) the last angle is set to 0.
    """
    xp = namespace(R, xp=xp)
    order = _check_order(order)
    i, j, k = (_AXIS[a] for a in order)
    s = 1.0 if (j - i) % 3 == 1 else -1.0  # +1 for cyclic orders (XYZ, YZX, ZXY)
    R = xp.asarray(R)
    sin_b = s * R[..., i, k]
    cos_b = xp.sqrt(R[..., i, i] ** 2 + R[..., i, j] ** 2)
    b = xp.arctan2(sin_b, cos_b)
    a = xp.arctan2(-s * R[..., j, k], R[..., k, k])
    c = xp.arctan2(-s * R[..., i, j], R[..., i, i])
    # gimbal lock: only a +- c is defined; put it all in a (c = 0)
    gimbal = cos_b < 1e-7
    sign_b = xp.where(sin_b >= 0, 1.0, -1.0)
    a_g = xp.arctan2(sign_b * R[..., j, i], R[..., j, j])
    a = xp.where(gimbal, a_g, a)
    c = xp.where(gimbal, xp.zeros_like(c), c)
    return xp.stack([a, b, c], axis=-1)


def quat_to_matrix(q, xp=None):
    """q [..., 4] (w, x, y, z; normalised here) -> R [..., 3, 3]."""
    xp = namespace(q, xp=xp)
    q = xp.asarray(q)
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quat(R, xp=None):
    """R [..., 3, 3] -> unit q [..., 4] with w >= 0 (Shepperd's method: stable for every R)."""
    xp = namespace(R, xp=xp)
    R = xp.asarray(R)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    tr = m00 + m11 + m22
    # four candidate solutions, each accurate when its pivot is largest
    cands = xp.stack([
        xp.stack([1 + tr, m21 - m12, m02 - m20, m10 - m01], -1),
        xp.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        xp.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        xp.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], -2)  # [..., 4, 4]
    pivots = xp.stack([tr, m00, m11, m22], -1)
    best = xp.argmax(pivots, axis=-1)
    q = xp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
    return q * xp.where(q[..., :1] < 0, -1.0, 1.0)


def quat_mul(a, b, xp=None):
    """Hamilton product a * b, [..., 4]: the rotation of b followed by a (as matrices A @ B)."""
    xp = namespace(a, b, xp=xp)
    aw, ax, ay, az = (a[..., i] for i in range(4))
    bw, bx, by, bz = (b[..., i] for i in range(4))
    return xp.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_conj(q, xp=None):
    xp = namespace(q, xp=xp)
    return q * xp.asarray([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def _safe_norm(v, xp, eps=1e-12):
    """|v| over the last axis, and a version safe to divide by (and to differentiate)."""
    sq = xp.sum(v * v, axis=-1)
    small = sq < eps * eps
    n = xp.sqrt(xp.where(small, 1.0, sq))
    return xp.where(small, 0.0, n), n, small


def quat_to_expmap(q, xp=None):
    """q [..., 4] -> axis*angle [..., 3]. Keeps the quaternion's hemisphere: w < 0 gives an
    angle in (pi, 2pi], which is what continuity across frames needs."""
    xp = namespace(q, xp=xp)
    q = xp.asarray(q)
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
    v = q[..., 1:]
    n, n_div, small = _safe_norm(v, xp)
    angle = 2.0 * xp.arctan2(n, q[..., 0])
    # small angles: angle/n -> 2/w
    scale = xp.where(small, 2.0 / q[..., 0], angle / n_div)
    return v * scale[..., None]


def expmap_to_quat(e, xp=None):
    """axis*angle [..., 3] -> unit q [..., 4]."""
    xp = namespace(e, xp=xp)
    e = xp.asarray(e)
    n, n_div, small = _safe_norm(e, xp)
    half = 0.5 * n
    # sin(n/2)/n, with its Taylor series near 0
    k = xp.where(small, 0.5 - n * n / 48.0, xp.sin(half) / n_div)
    return xp.concatenate([xp.cos(half)[..., None], e * k[..., None]], axis=-1)


def expmap_to_matrix(e, xp=None):
    """axis*angle [..., 3] -> R [..., 3, 3] (Rodrigues, safe at 0)."""
    xp = namespace(e, xp=xp)
    return quat_to_matrix(expmap_to_quat(e, xp), xp)


def matrix_to_expmap(R, xp=None):
    """R [..., 3, 3] -> axis*angle [..., 3] with angle in [0, pi]."""
    xp = namespace(R, xp=xp)
    return quat_to_expmap(matrix_to_quat(R, xp), xp)


def matrix_to_6d(R, xp=None):
    """R [..., 3, 3] -> [..., 6]: first column then second column."""
    xp = namespace(R, xp=xp)
    return xp.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def sixd_to_matrix(d6, xp=None):
    """[..., 6] -> R [..., 3, 3] by Gram-Schmidt (any non-degenerate input gives a rotation)."""
    xp = namespace(d6, xp=xp)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / xp.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - xp.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / xp.linalg.norm(a2, axis=-1, keepdims=True)
    b3 = xp.cross(b1, b2)
    return xp.stack([b1, b2, b3], axis=-1)


def euler_to_quat(angles, order: str, xp=None):
    xp = namespace(angles, xp=xp)
    return matrix_to_quat(euler_to_matrix(angles, order, xp), xp)


def quat_to_euler(q, order: str, xp=None):
    xp = namespace(q, xp=xp)
    return matrix_to_euler(quat_to_matrix(q, xp), order, xp)


def euler_to_expmap(angles, order: str, xp=None):
    xp = namespace(angles, xp=xp)
    return matrix_to_expmap(euler_to_matrix(angles, order, xp), xp)


def expmap_to_euler(e, order: str, xp=None):
    xp = namespace(e, xp=xp)
    return matrix_to_euler(expmap_to_matrix(e, xp), order, xp)


def quat_continuity(q, axis: int = 0, xp=None):
    """Flip signs so consecutive quaternions along `axis` are in the same hemisphere.

    q and -q are the same rotation; interpolating or differencing needs the sign that keeps
    neighbours close. The flips accumulate (a cumulative product), so this is vectorised.
    """
    xp = namespace(q, xp=xp)
    q = xp.moveaxis(xp.asarray(q), axis, 0)
    dots = xp.sum(q[1:] * q[:-1], axis=-1)
    flips = xp.where(dots < 0, -1.0, 1.0)
    sign = xp.concatenate([xp.ones_like(q[:1, ..., 0]), xp.cumprod(flips, axis=0)], axis=0)
    return xp.moveaxis(q * sign[..., None], 0, axis)


def quat_slerp(q0, q1, t, xp=None):
    """Spherical interpolation between unit quaternions [..., 4] at t [...] in [0, 1]
    (shortest arc; falls back to normalised lerp when the two are nearly equal)."""
    xp = namespace(q0, q1, t, xp=xp)
    t = xp.asarray(t)[..., None]
    d = xp.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = xp.where(d < 0, -q1, q1)
    d = xp.abs(d)
    close = d > 0.9995
    theta = xp.arccos(xp.clip(d, -1.0, 1.0))
    sin_t = xp.sin(xp.where(close, 1.0, theta))
    w0 = xp.where(close, 1.0 - t, xp.sin((1.0 - t) * theta) / sin_t)
    w1 = xp.where(close, t, xp.sin(t * theta) / sin_t)
    q = w0 * q0 + w1 * q1
    return q / xp.linalg.norm(q, axis=-1, keepdims=True)


def expmap_continuity(e, axis: int = 0, xp=None):
    """Make exponential maps continuous along `axis` (time): no 2*pi flips between frames.

    axis*angle and axis*(angle + 2*pi*k) are the same rotation; per frame we pick the k
    (in a sequential pass, numpy loop or jax.lax.scan) whose vector is nearest the previous
    frame's. The rotations are unchanged.
    """
    xp = namespace(e, xp=xp)
    e = xp.moveaxis(xp.asarray(e), axis, 0)
    n, n_div, small = _safe_norm(e, xp)
    u = e / n_div[..., None]  # unit axis (0 where the angle is ~0)
    two_pi = 2.0 * np.pi

    def step(prev, cur):
        u_t, n_t = cur
        k = xp.round((xp.sum(u_t * prev, axis=-1) - n_t) / two_pi)
        out = u_t * (n_t + two_pi * k)[..., None]
        return out, out

    if xp is np:
        out = np.empty_like(e)
        if e.shape[0]:
            out[0] = e[0]
            for t in range(1, e.shape[0]):
                out[t] = step(out[t - 1], (u[t], n[t]))[0]
    else:
        import jax
        if e.shape[0] == 0:
            out = e
        else:
            _, rest = jax.lax.scan(step, e[0], (u[1:], n[1:]))
            out = xp.concatenate([e[:1], rest], axis=0)
    return xp.moveaxis(out, 0, axis)
