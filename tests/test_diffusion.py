"""Diffusion schedule tables, forward process, posterior and prediction-type conversions."""
import numpy as np
import jax
import jax.numpy as jnp
import pytest

from configs import base
from gesture_jax.models import diffusion as D


@pytest.fixture(scope="module")
def ref():
    return D.make_schedule(base.get_base_config().diffusion)


def test_reference_schedule_values(ref):
    assert ref.num_steps == 1000
    np.testing.assert_allclose(float(ref.betas[0]), 1e-4, rtol=1e-6)
    np.testing.assert_allclose(float(ref.betas[-1]), 0.08, rtol=1e-6)
    sb = np.sqrt(np.asarray(ref.betas, np.float64))
    np.testing.assert_allclose(np.diff(sb), np.diff(sb)[0], rtol=1e-3)  # linear in sqrt(beta)
    ac = np.asarray(ref.alphas_cumprod)
    assert (np.diff(ac) < 0).all() and 0 < ac[-1] < ac[0] < 1
    assert float(ref.posterior_variance[0]) == 0.0
    np.testing.assert_allclose(ref.posterior_log_variance_clipped[0], np.log(ref.posterior_variance[1]), rtol=1e-6)
    assert np.isfinite(np.asarray(ref.posterior_log_variance_clipped)).all()


def test_cosine_schedule():
    s = D.schedule_from_betas(D.make_betas("cosine", 100))
    ac = np.asarray(s.alphas_cumprod)
    assert (np.diff(ac) < 0).all() and float(s.betas.max()) <= 0.999 + 1e-6
    with pytest.raises(ValueError, match="schedule"):
        D.make_betas("quadratic", 10)


def test_q_sample_statistics(ref):
    t = jnp.array([10, 500, 999])
    x0 = jnp.ones((3, 4000, 2)) * 2.0
    noise = jax.random.normal(jax.random.key(0), x0.shape)
    xt = np.asarray(D.q_sample(ref, x0, t, noise))
    a = np.asarray(ref.alphas_cumprod)[np.asarray(t)]
    np.testing.assert_allclose(xt.mean((1, 2)), 2.0 * np.sqrt(a), atol=0.05)
    np.testing.assert_allclose(xt.var((1, 2)), 1 - a, rtol=0.06, atol=1e-4)


def test_posterior_of_true_x0_matches_sequential_forward_process(ref):
    """q(x_{t-1}|x_t,x0) is the Bayes posterior: sampling x_{t-1} from it reproduces q(x_{t-1}|x0)."""
    t = jnp.array([1, 300, 998])
    x0 = jnp.full((3, 20000, 1), 1.5)
    k1, k2 = jax.random.split(jax.random.key(1))
    xt = D.q_sample(ref, x0, t, jax.random.normal(k1, x0.shape))
    mean, var, log_var = D.posterior(ref, x0, xt, t)
    assert var.shape == (3, 1, 1)
    np.testing.assert_allclose(np.exp(log_var[1:]), var[1:], rtol=1e-5)
    prev = mean + jnp.sqrt(var) * jax.random.normal(k2, x0.shape)
    a_prev = np.asarray(ref.alphas_cumprod)[np.asarray(t) - 1]
    np.testing.assert_allclose(np.asarray(prev).mean((1, 2)), 1.5 * np.sqrt(a_prev), atol=0.03)
    np.testing.assert_allclose(np.asarray(prev).var((1, 2)), 1 - a_prev, rtol=0.05, atol=2e-4)
    # t=0 posterior mean is x0 itself (coef1=1, coef2=0)
    m0, v0, _ = D.posterior(ref, x0[:1], xt[:1], jnp.array([0]))
    np.testing.assert_allclose(m0, x0[:1], rtol=1e-5)
    assert float(v0.squeeze()) == 0.0


@pytest.mark.parametrize("prediction", D.PREDICTIONS)
def test_prediction_conversions_invert(ref, prediction):
    # Not t=999: the reference schedule ends at abar = 4.9e-13, where x0 = (x_t - sqrt(1-abar) eps)/sqrt(abar)
    # amplifies float32 rounding by 1.4e6 for eps prediction (v prediction stays well conditioned there).
    t = jnp.array([0, 7, 500, 700]) if prediction != "v" else jnp.array([0, 7, 500, 999])
    k1, k2 = jax.random.split(jax.random.key(2))
    x0 = jax.random.normal(k1, (4, 6, 3))
    eps = jax.random.normal(k2, x0.shape)
    xt = D.q_sample(ref, x0, t, eps)
    target = D.training_target(ref, x0, eps, t, prediction)
    x0_hat, eps_hat = D.to_x0_eps(ref, target, xt, t, prediction)
    np.testing.assert_allclose(x0_hat, x0, rtol=1e-3, atol=2e-3)
    # eps is ill-conditioned at t=0 when predicting x0 (sqrt(1/abar - 1) ~ 0.01): check t > 0 tightly.
    np.testing.assert_allclose(eps_hat[1:], eps[1:], rtol=1e-3, atol=2e-3)
    assert float(D.loss(ref, target, x0, eps, t, prediction)) < 1e-10
    with pytest.raises(ValueError, match="prediction"):
        D.training_target(ref, x0, eps, t, "score")


def test_eps_x0_roundtrip(ref):
    t = jnp.array([3, 900])
    xt = jax.random.normal(jax.random.key(3), (2, 5, 4))
    eps = jax.random.normal(jax.random.key(4), xt.shape)
    x0 = D.x0_from_eps(ref, xt, t, eps)
    np.testing.assert_allclose(D.eps_from_x0(ref, xt, t, x0), eps, rtol=1e-4, atol=1e-4)
    assert D.sample_timesteps(jax.random.key(0), 64, 1000).max() < 1000


def test_min_snr_weights_equalize_every_prediction_type_to_the_x0_error(ref):
    """min(SNR, g) x x0-error for each parameterization: eps error = SNR x x0 error, v error =
    (SNR + 1) x x0 error, so the weighted losses of the three types agree for the same x0 miss."""
    s = ref
    t = jnp.array([0, 50, 400, 800, 999])
    ab = np.asarray(s.alphas_cumprod)[np.asarray(t)]
    snr = ab / (1 - ab)
    wx = np.asarray(D.loss_weights(s, t, "x0", "min_snr", 5.0))
    np.testing.assert_allclose(wx, np.minimum(snr, 5.0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(D.loss_weights(s, t, "eps", "min_snr", 5.0)) * snr, wx, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(D.loss_weights(s, t, "v", "min_snr", 5.0)) * (snr + 1), wx, rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(D.loss_weights(s, t, "x0", "none")), np.ones(5))
    with pytest.raises(ValueError, match="loss_weighting"):
        D.loss_weights(s, t, "x0", "p2")
