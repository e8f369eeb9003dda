"""Samplers on an exact Gaussian toy, where the true denoiser E[x0 | x_t] is known in closed form.

Data x0 ~ N(mu, s^2) per dimension. Then x_t = sqrt(ab) x0 + sqrt(1-ab) eps is Gaussian and
E[x0 | x_t] = mu + sqrt(ab) s^2 / (ab s^2 + 1 - ab) * (x_t - sqrt(ab) mu).
With that exact denoiser every sampler must reproduce N(mu, s^2) up to its discretization
error, and since all updates are affine, deterministic samplers map x_T to A x_T + B exactly,
so their output distribution N(B, A^2) can be read off two evaluations.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gesture_jax.sampling import samplers as S

T = 1000
BETAS = np.linspace(np.sqrt(1e-4), np.sqrt(0.08), T) ** 2  # the reference schedule
AB = S.betas_to_alphas_cumprod(BETAS)
MU = jnp.array([1.5, -0.7, 0.0, 2.0], jnp.float32)
SD = jnp.array([0.5, 0.2, 1.0, 0.05], jnp.float32)
ABJ = jnp.asarray(AB, jnp.float32)


def exact_x0(x_t, t):
    a = ABJ[t]
    gain = jnp.sqrt(a) * SD ** 2 / (a * SD ** 2 + 1.0 - a)
    return MU + gain * (x_t - jnp.sqrt(a) * MU)


def exact_eps(x_t, t):
    """The eps-network equivalent of exact_x0 (to test model_x0_fn)."""
    a = ABJ[t]
    return (x_t - jnp.sqrt(a) * exact_x0(x_t, t)) / jnp.sqrt(1.0 - a)


def affine_map(sampler, steps, eta=0.0):
    """(A, B) with output = A * x_T + B for a deterministic sampler."""
    co = S.sampler_coefficients(AB, sampler, steps, eta=eta)
    run = jax.jit(lambda x: S.sample_loop(exact_x0, co, x, jax.random.key(0)))
    b = run(jnp.zeros((1, 4)))[0]
    a = run(jnp.ones((1, 4)))[0] - b
    return np.asarray(a), np.asarray(b)


@pytest.mark.parametrize("sampler,steps,rtol", [("ddim", 50, 0.10), ("dpm-solver++", 20, 0.03),
                                                ("dpm-solver++", 10, 0.08), ("ddim", 1000, 0.04)])
def test_deterministic_samplers_reach_the_data_distribution(sampler, steps, rtol):
    a, b = affine_map(sampler, steps)
    np.testing.assert_allclose(b, MU, atol=1e-4)
    np.testing.assert_allclose(np.abs(a), SD, rtol=rtol)


def test_dpm_solver_pp_converges_faster_than_ddim():
    """Error of the ODE solution vs a 1000-step DDIM reference, at equal step counts."""
    a_ref, b_ref = affine_map("ddim", 1000)
    for steps in (10, 20):
        a_d, b_d = affine_map("ddim", steps)
        a_p, b_p = affine_map("dpm-solver++", steps)
        err_d = np.abs(a_d - a_ref).max() + np.abs(b_d - b_ref).max()
        err_p = np.abs(a_p - a_ref).max() + np.abs(b_p - b_ref).max()
        assert err_p < 0.5 * err_d, (steps, err_p, err_d)


def test_ddpm_ancestral_matches_data_statistics():
    n = 4000
    co = S.sampler_coefficients(AB, "ddpm", T)
    run = jax.jit(lambda k: S.sample_loop(exact_x0, co, jax.random.normal(k, (n, 4)), jax.random.fold_in(k, 1)))
    x = np.asarray(run(jax.random.key(3)))
    se = np.asarray(SD) / np.sqrt(n)
    assert np.all(np.abs(x.mean(0) - np.asarray(MU)) < 5 * se + 1e-3)
    np.testing.assert_allclose(x.std(0), SD, rtol=0.06)


def test_ddim_eta1_equals_ddpm_and_respaced_ddpm_is_consistent():
    for steps in (T, 50):
        d = S.sampler_coefficients(AB, "ddpm", steps)
        i = S.sampler_coefficients(AB, "ddim", steps, eta=1.0, spacing="linear")
        np.testing.assert_allclose(d.a, i.a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d.b, i.b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d.s, i.s, rtol=1e-5, atol=1e-6)
    d = S.sampler_coefficients(AB, "ddpm", T)
    # The full-length DDPM step is the reference posterior: var = beta~_t, last step noiseless.
    t = 500
    i = T - 1 - t
    beta_tilde = (1 - AB[t - 1]) / (1 - AB[t]) * BETAS[t]
    np.testing.assert_allclose(d.s[i] ** 2, beta_tilde, rtol=1e-4)
    assert d.s[-1] == 0.0 and d.ts[-1] == 0 and d.ts[0] == T - 1


def test_stochastic_samplers_are_reproducible_and_seeded():
    co = S.sampler_coefficients(AB, "ddim", 20, eta=0.5)
    f = jax.jit(lambda k: S.sample(exact_x0, AB, (3, 4), k, sampler="ddim", steps=20, eta=0.5))
    x1, x2, x3 = f(jax.random.key(1)), f(jax.random.key(1)), f(jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    assert not np.allclose(np.asarray(x1), np.asarray(x3))
    assert co.num_steps == 20


def test_model_x0_fn_prediction_types_agree():
    x = jax.random.normal(jax.random.key(0), (2, 4))
    t = jnp.int32(321)
    x0 = exact_x0(x, t)
    a, sg = jnp.sqrt(ABJ[t]), jnp.sqrt(1 - ABJ[t])
    eps = exact_eps(x, t)
    v = a * eps - sg * x0
    for pred, out in (("eps", lambda xx, tt: exact_eps(xx, tt)), ("x0", exact_x0), ("v", lambda xx, tt: v)):
        np.testing.assert_allclose(np.asarray(S.model_x0_fn(out, AB, pred)(x, t)), np.asarray(x0), atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_output_space_guidance_is_eps_space_guidance(prediction):
    """samplers.guided_output (the CFG mix generate.py applies to the network's two outputs),
    followed by model_x0_fn, gives the x0 of the usual eps-space guidance eps_u + w (eps_c - eps_u)
    for every prediction type; w = 1 is the conditional output itself; swapped branches differ."""
    x = jax.random.normal(jax.random.key(0), (2, 4))
    t = jnp.int32(300)
    a, sg = jnp.sqrt(ABJ[t]), jnp.sqrt(1 - ABJ[t])
    w = 2.5

    def as_output(eps):  # what an eps / x0 / v network with this eps prediction returns at (x, t)
        x0 = (x - sg * eps) / a
        return {"eps": eps, "x0": x0, "v": a * eps - sg * x0}[prediction]

    def to_x0(out):
        return np.asarray(S.model_x0_fn(lambda xx, tt: out, AB, prediction)(x, t))

    eps_u = exact_eps(x, t)
    eps_c = eps_u + jnp.array([0.3, -0.1, 0.2, 0.0])  # audio pulls eps this way
    out_c, out_u = as_output(eps_c), as_output(eps_u)
    want = np.asarray((x - sg * (eps_u + w * (eps_c - eps_u))) / a)
    np.testing.assert_allclose(to_x0(S.guided_output(out_c, out_u, w)), want, atol=1e-4)
    assert np.abs(to_x0(S.guided_output(out_u, out_c, w)) - want).max() > 0.1  # swapped branches
    assert S.guided_output(out_c, out_u, 1.0) is out_c  # no guidance: nothing computed


def test_bad_arguments_are_clear():
    with pytest.raises(S.SamplerError, match="unknown sampler"):
        S.sampler_coefficients(AB, "euler", 10)
    with pytest.raises(S.SamplerError, match="exceeds"):
        S.sampler_coefficients(AB, "ddim", T + 1)
    with pytest.raises(S.SamplerError, match=">= 1"):
        S.sampler_coefficients(AB, "ddim", 0)


def test_grid_on_small_schedule():
    ts = S.timestep_grid(100, 100)
    np.testing.assert_array_equal(ts, np.arange(99, -1, -1))
    ts = S.timestep_grid(100, 20)
    assert ts[0] == 99 and ts[-1] == 0 and len(ts) == 20 and np.all(np.diff(ts) < 0)


def test_grid_has_exactly_the_requested_distinct_steps():
    for T, n in [(100, 50), (100, 20), (1000, 50), (1000, 20), (100, 100)]:
        for spacing in ("linear", "quadratic", "logsnr"):
            ts = S.timestep_grid(T, n, spacing, AB if T == 1000 else S.betas_to_alphas_cumprod(BETAS[:: 10]))
            assert len(ts) == n and ts[0] == T - 1 and ts[-1] == 0 and np.all(np.diff(ts) < 0), (T, n, spacing)


def test_x0_clipping_bounds_every_sampler_with_an_imperfect_model():
    """A deliberately poor eps model (half the exact one): clipped x0 keeps every output in the bound."""
    def eps_poor(x, t):
        return 0.5 * exact_eps(x, t)

    for sampler, steps in (("ddpm", T), ("ddim", 50), ("dpm-solver++", 20)):
        f = S.model_x0_fn(eps_poor, AB, "eps", clip=3.0)
        co = S.sampler_coefficients(AB, sampler, steps)
        out = np.asarray(jax.jit(lambda k: S.sample_loop(f, co, jax.random.normal(k, (64, 4)), k))(jax.random.key(0)))
        assert np.isfinite(out).all() and np.abs(out).max() <= 3.0 + 1e-4, sampler


def test_clipping_does_not_change_an_exact_model():
    co = S.sampler_coefficients(AB, "dpm-solver++", 20)
    x = jax.random.normal(jax.random.key(0), (8, 4))
    a = S.sample_loop(S.model_x0_fn(exact_eps, AB, "eps"), co, x, jax.random.key(1))
    b = S.sample_loop(S.model_x0_fn(exact_eps, AB, "eps", clip=20.0), co, x, jax.random.key(1))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3)


def test_dpm_solver_pp_sde_variant():
    """eta = 1: first-order part equals the DDPM posterior step; 20 steps reproduce the data."""
    d = S.sampler_coefficients(AB, "ddpm", 20, spacing="linear")
    p = S.sampler_coefficients(AB, "dpm-solver++", 20, eta=1.0, spacing="linear")
    np.testing.assert_allclose(p.a, d.a, atol=1e-6)
    np.testing.assert_allclose(p.b, d.b, atol=1e-6)
    np.testing.assert_allclose(p.s, d.s, atol=1e-6)
    assert p.c[0] == 0 and np.all(p.c[1:-1] > 0)
    n = 4000
    co = S.sampler_coefficients(AB, "dpm-solver++", 20, eta=1.0)
    x = np.asarray(jax.jit(lambda k: S.sample_loop(exact_x0, co, jax.random.normal(k, (n, 4)),
                                                   jax.random.fold_in(k, 1)))(jax.random.key(3)))
    assert np.all(np.abs(x.mean(0) - np.asarray(MU)) < 5 * np.asarray(SD) / np.sqrt(n) + 1e-2)
    np.testing.assert_allclose(x.std(0), SD, rtol=0.1)
