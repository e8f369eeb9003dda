"""Rotation math: one set of tests run on numpy and on jax.numpy (same implementation)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gesture_jax.motion import rotations as R

jax.config.update("jax_enable_x64", False)

BACKENDS = ["numpy", "jax"]


def _arr(x, backend):
    return np.asarray(x, np.float64) if backend == "numpy" else jnp.asarray(x, jnp.float32)


def _tol(backend):
    return 1e-9 if backend == "numpy" else 2e-4


def _np(x):
    return np.asarray(x, np.float64)


def _run(backend, fn, *args):
    """Call fn on backend arrays; under jax, as ONE jitted function (eager jax would compile
    every primitive separately, which is slow on a busy CPU)."""
    args = [_arr(a, backend) for a in args]
    return fn(*args) if backend == "numpy" else jax.jit(fn)(*args)


def _random_angles(n, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-np.pi, np.pi, (n, 3))
    a[:, 1] *= 0.49  # keep the middle angle inside (-pi/2, pi/2): unique Euler angles
    return a


def _rx(t):
    c, s = np.cos(t), np.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(t):
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(t):
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_namespace_follows_input(backend):
    x = _arr(np.zeros(3), backend)
    assert R.namespace(x) is (np if backend == "numpy" else jnp)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", R.EULER_ORDERS)
def test_euler_matrix_round_trip_all_orders(order, backend):
    a = _random_angles(64)
    M = R.euler_to_matrix(_arr(a, backend), order)
    # intrinsic BVH convention: "ZYX" -> Rz @ Ry @ Rx with angles in that order
    f = {"X": _rx, "Y": _ry, "Z": _rz}
    ref = np.stack([f[order[0]](x) @ f[order[1]](y) @ f[order[2]](z) for x, y, z in a])
    np.testing.assert_allclose(_np(M), ref, atol=_tol(backend))
    a2 = R.matrix_to_euler(M, order)
    np.testing.assert_allclose(_np(a2), a, atol=_tol(backend) * 10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", R.EULER_ORDERS)
def test_euler_gimbal_lock_gives_same_matrix(order, backend):
    a = _random_angles(16, seed=1)
    a[:8, 1] = np.pi / 2
    a[8:, 1] = -np.pi / 2
    M = R.euler_to_matrix(_arr(a, backend), order)
    M2 = R.euler_to_matrix(R.matrix_to_euler(M, order), order)
    np.testing.assert_allclose(_np(M2), _np(M), atol=_tol(backend) * 20)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quaternion_expmap_6d_round_trips(backend):
    a = _random_angles(200, seed=2)

    def fn(a):
        M = R.euler_to_matrix(a, "ZXY")
        q = R.matrix_to_quat(M)
        e = R.matrix_to_expmap(M)
        d6 = R.matrix_to_6d(M)
        return dict(M=M, q=q, Mq=R.quat_to_matrix(q), e=e, Me=R.expmap_to_matrix(e),
                    eqe=R.quat_to_expmap(R.expmap_to_quat(e)), d6=d6, M6=R.sixd_to_matrix(d6),
                    a_q=R.quat_to_euler(R.euler_to_quat(a, "YXZ"), "YXZ"),
                    a_e=R.expmap_to_euler(R.euler_to_expmap(a, "XZY"), "XZY"))

    o = {k: _np(v) for k, v in _run(backend, fn, a).items()}
    tol = _tol(backend) * 10
    assert (o["q"][:, 0] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(o["q"], axis=-1), 1.0, atol=tol)
    np.testing.assert_allclose(o["Mq"], o["M"], atol=tol)
    assert (np.linalg.norm(o["e"], axis=-1) <= np.pi + 1e-5).all()
    np.testing.assert_allclose(o["Me"], o["M"], atol=tol)
    np.testing.assert_allclose(o["eqe"], o["e"], atol=tol)
    assert o["d6"].shape == (200, 6)
    np.testing.assert_allclose(o["M6"], o["M"], atol=tol)
    # euler <-> quat / expmap shortcuts agree with the matrix path
    np.testing.assert_allclose(o["a_q"], a, atol=tol)
    np.testing.assert_allclose(o["a_e"], a, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_expmap_known_values_and_identity(backend):
    e = np.array([[0.0, 0.0, 0.0], [np.pi / 2, 0, 0], [0, 0, 1e-9]])
    M, e2 = (_np(x) for x in _run(backend, lambda e: (R.expmap_to_matrix(e),
                                                      R.matrix_to_expmap(R.expmap_to_matrix(e))), e))
    np.testing.assert_allclose(M[0], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(M[1], _rx(np.pi / 2), atol=1e-6)
    np.testing.assert_allclose(e2[:2], e[:2], atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_expmap_continuity_removes_2pi_flips(backend):
    # a rotation about a fixed axis spinning through several turns: canonical exp maps
    # (angle <= pi) flip from +pi*u to -pi*u; the continuous version keeps growing.
    t = np.linspace(0, 5 * np.pi, 300)
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    true = t[:, None] * axis

    def fn(true):
        canon = R.matrix_to_expmap(R.expmap_to_matrix(true))
        cont = R.expmap_continuity(canon, axis=0)
        both = R.matrix_to_expmap(R.expmap_to_matrix(R.namespace(true).stack([true, -true], 1)))
        return dict(canon=canon, cont=cont, Mc=R.expmap_to_matrix(cont), M=R.expmap_to_matrix(canon),
                    batched=R.expmap_continuity(both))

    o = {k: _np(v) for k, v in _run(backend, fn, true).items()}
    assert np.linalg.norm(np.diff(o["canon"], axis=0), axis=-1).max() > 5.0  # canonical form flips
    np.testing.assert_allclose(o["cont"], true, atol=1e-3 if backend == "jax" else 1e-8)
    np.testing.assert_allclose(o["Mc"], o["M"], atol=1e-4)  # same rotations
    # batched over joints ([N, J, 3]) with time on axis 0
    assert np.linalg.norm(np.diff(o["batched"], axis=0), axis=-1).max() < 0.2


@pytest.mark.parametrize("backend", BACKENDS)
def test_quat_continuity_and_slerp(backend):
    a = np.zeros((50, 3))
    a[:, 0] = np.linspace(0, 4 * np.pi, 50)
    b1, b2 = _random_angles(10, 3), _random_angles(10, 4)
    ends = np.array([[0.0, 0, 0], [1.0, 0, 0]])  # Rz(0), Rz(1)

    def fn(a, b1, b2, ends, half):
        q = R.euler_to_quat(a, "ZYX")  # w >= 0: the sign flips every half turn
        q0, q1 = R.euler_to_quat(ends[:1], "ZYX"), R.euler_to_quat(ends[1:], "ZYX")
        qa, qb = R.euler_to_quat(b1, "XYZ"), R.euler_to_quat(b2, "XYZ")
        return dict(qc=R.quat_continuity(q), mid=R.quat_to_matrix(R.quat_slerp(q0, q1, half)),
                    prod=R.quat_to_matrix(R.quat_mul(qa, qb)), ma=R.quat_to_matrix(qa), mb=R.quat_to_matrix(qb))

    o = {k: _np(v) for k, v in _run(backend, fn, a, b1, b2, ends, np.array([0.5])).items()}
    assert (np.sum(o["qc"][1:] * o["qc"][:-1], -1) > 0).all()
    np.testing.assert_allclose(o["mid"][0], _rz(0.5), atol=1e-5)  # halfway between Rz(0), Rz(1)
    np.testing.assert_allclose(o["prod"], o["ma"] @ o["mb"], atol=_tol(backend) * 10)  # q*q <-> A@B


def test_jax_functions_jit_and_grad():
    f = jax.jit(lambda e: R.matrix_to_6d(R.expmap_to_matrix(e)))
    out = f(jnp.zeros((4, 3)))
    assert out.shape == (4, 6)
    g = jax.jit(jax.grad(lambda e: R.expmap_to_matrix(e).sum()))(jnp.zeros(3))
    assert np.isfinite(np.asarray(g)).all()


def test_bad_order_raises():
    with pytest.raises(ValueError, match="permutation"):
        R.euler_to_matrix(np.zeros(3), "XXY")
