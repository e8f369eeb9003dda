"""Window layout and per-step fusion for long audio (gesture_jax/sampling/long_audio.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gesture_jax.sampling import long_audio as L
from gesture_jax.sampling import samplers as S


def test_windows_cover_every_frame_and_last_is_end_aligned():
    plan = L.plan_windows([80, 100, 137], window=80, overlap=20)
    assert plan.total == 317
    covered = np.zeros(plan.total, int)
    np.add.at(covered, plan.indices().ravel(), 1)
    assert covered.min() >= 1
    for s, n in enumerate(plan.lengths):
        ls = plan.local_starts[plan.timeline == s]
        assert ls[0] == 0 and ls[-1] == n - 80
    # no window crosses from one timeline into the next
    ends = plan.local_starts + 80
    assert np.all(ends <= plan.lengths[plan.timeline])


def test_crossfade_weights_sum_to_one_over_a_regular_overlap():
    w = L.crossfade_weights(80, 20)
    np.testing.assert_allclose(w[60:] + w[:20], 1.0, rtol=1e-6)
    assert w.min() > 0 and w[20:60].min() == 1.0
    np.testing.assert_array_equal(L.crossfade_weights(10, 0), np.ones(10))


def test_fusion_is_exact_for_consistent_windows_and_smooth_for_inconsistent_ones():
    plan = L.plan_windows([230], window=80, overlap=20)
    x = jnp.asarray(np.sin(np.arange(plan.total) / 7.0)[:, None] * np.ones((1, 3)), jnp.float32)

    def consistent(xw, t):
        return 2.0 * xw

    np.testing.assert_allclose(np.asarray(L.fused_x0_fn(consistent, plan)(x, jnp.int32(0))),
                               2.0 * np.asarray(x), rtol=1e-5, atol=1e-6)

    offsets = jnp.asarray(np.random.default_rng(0).normal(size=(plan.num_windows, 1, 1)) * 5, jnp.float32)

    def inconsistent(xw, t):
        return xw + offsets

    y = np.asarray(L.fused_x0_fn(inconsistent, plan)(x, jnp.int32(0)))
    # cross-fading spreads each offset change over the 20-frame overlap: no frame-to-frame jump
    # bigger than pi/2 x the offset difference / overlap (cosine ramp; + the signal's own slope).
    max_jump = np.abs(np.diff(y, axis=0)).max()
    assert max_jump < np.abs(np.diff(np.asarray(offsets).ravel())).max() / 20 * np.pi / 2 * 1.1 + 1 / 7.0
    plan0 = L.plan_windows([230], window=80, overlap=0)
    offsets0 = offsets[: plan0.num_windows]
    y0 = np.asarray(L.fused_x0_fn(lambda xw, t: xw + offsets0, plan0)(x, jnp.int32(0)))
    assert np.abs(np.diff(y0, axis=0)).max() > 2 * max_jump  # the reference's disjoint windows jump


def test_whole_loop_over_fused_windows_is_one_jitted_scan():
    plan = L.plan_windows([100, 90], window=40, overlap=10)
    ab = S.betas_to_alphas_cumprod(np.linspace(1e-4, 0.05, 50))
    co = S.sampler_coefficients(ab, "dpm-solver++", 10)
    abj = jnp.asarray(ab, jnp.float32)

    def window_x0(xw, t):  # exact denoiser of N(0, 0.25^2) data
        a = abj[t]
        return jnp.sqrt(a) * 0.0625 / (a * 0.0625 + 1 - a) * xw

    run = jax.jit(lambda x, k: S.sample_loop(L.fused_x0_fn(window_x0, plan), co, x, k))
    out = run(jax.random.normal(jax.random.key(0), (plan.total, 2)), jax.random.key(1))
    parts = plan.split(np.asarray(out))
    assert [p.shape for p in parts] == [(100, 2), (90, 2)]
    assert 0.15 < float(np.asarray(out).std()) < 0.35


def test_gather_windows_with_a_faster_feature_rate():
    plan = L.plan_windows([60], window=40, overlap=10)
    feats = [np.arange(150, dtype=np.float32)[:, None]]  # 2.5x the motion rate
    g = L.gather_windows(feats, plan, frames_per_window=100, rate_ratio=2.5)
    assert g.shape == (plan.num_windows, 100, 1)
    assert g[0, 0, 0] == 0 and g[-1, -1, 0] == 149


def test_bad_geometry_is_reported():
    with pytest.raises(L.WindowPlanError, match="shorter than the model window"):
        L.plan_windows([30], window=40, overlap=10)
    with pytest.raises(L.WindowPlanError, match="overlap"):
        L.plan_windows([50], window=40, overlap=40)


def test_single_window_fusion_is_the_identity_wrapper():
    plan = L.plan_windows([40], window=40, overlap=10)
    x = jax.random.normal(jax.random.key(0), (40, 3))
    f = lambda xw, t: jnp.tanh(xw) * (t + 1)  # noqa: E731
    np.testing.assert_allclose(np.asarray(L.fused_x0_fn(f, plan)(x, jnp.int32(2))),
                               np.asarray(f(x[None], 2)[0]), rtol=1e-6)


def test_borders_snap_to_the_cheapest_frames_within_reach():
    n, window, overlap, snap = 400, 80, 40, 10
    regular = L.window_starts(n, window, overlap)
    reach = L.snap_reach(overlap, snap)
    assert reach == 10
    # cheap frames 7 after every interior regular start (reachable), expensive elsewhere
    cost = np.ones(n)
    for g in regular[1:-1]:
        cost[g + 7] = 0.0
    starts = L.snapped_window_starts(n, window, overlap, cost, snap)
    assert starts[0] == 0 and starts[-1] == n - window and len(starts) == len(regular)
    np.testing.assert_array_equal(starts[1:-1], regular[1:-1] + 7)
    # a window's start and end are both borders: a cheap end pulls its start along
    cost = np.ones(n)
    cost[regular[1] + window - 4] = -5.0
    starts = L.snapped_window_starts(n, window, overlap, cost, snap)
    assert starts[1] == regular[1] - 4
    # random costs: never farther than reach, overlaps keep at least overlap - 2 * reach
    rng = np.random.default_rng(0)
    for _ in range(20):
        starts = L.snapped_window_starts(n, window, overlap, rng.random(n), snap)
        assert np.all(np.abs(starts - regular) <= reach)
        assert np.all(np.diff(starts) > 0) and np.all(window - np.diff(starts) >= overlap - 2 * reach)
        plan = L.plan_windows([n], window, overlap, cost=[rng.random(n)], snap_frames=snap)
        covered = np.zeros(n, int)
        np.add.at(covered, plan.indices().ravel(), 1)
        assert covered.min() >= 1


def test_snapping_falls_back_to_the_regular_grid_and_rejects_bad_costs():
    n, window = 300, 80
    np.testing.assert_array_equal(L.snapped_window_starts(n, window, 40, None, 10), L.window_starts(n, window, 40))
    # disjoint windows must tile: nothing to move
    np.testing.assert_array_equal(L.snapped_window_starts(n, window, 0, np.random.rand(n), 10),
                                  L.window_starts(n, window, 0))
    assert L.snap_reach(8, 10) == 2  # at most a quarter of the overlap
    with pytest.raises(L.WindowPlanError, match="border cost"):
        L.snapped_window_starts(n, window, 40, np.ones(n - 1), 10)
    with pytest.raises(L.WindowPlanError, match="border cost"):
        L.snapped_window_starts(n, window, 40, np.full(n, np.nan), 10)
    with pytest.raises(L.WindowPlanError, match="border-cost curves"):
        L.plan_windows([n, n], window, 40, cost=[np.ones(n)], snap_frames=10)
