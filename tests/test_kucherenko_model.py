"""Kucherenko 2019 networks, losses and normalization (gesture_jax/methods/kucherenko/{model,losses}.py)
against the spec (../shared/methods/kucherenko.md §3, §4) and plain numpy re-implementations."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gesture_jax.methods.kucherenko.losses import (KANormalizer, autoencoder_loss, functional_loss,
                                                   global_noise_std, l2_loss, noisy_input, speech_loss,
                                                   speech_model_loss)
from gesture_jax.methods.kucherenko.model import (KerasBatchNorm, KerasGRU, MotionAutoencoder, SpeechEncoder,
                                                  doubled_glorot_uniform)
from conftest import shared_file


def _count(module: nnx.Module, kind=nnx.Param) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(module, kind))))


def _set(var: nnx.Variable, value) -> None:
    var[...] = jnp.asarray(value, jnp.float32)


# ---------------------------------------------------------------------------- parameter counts
def _speech_trainable(n_in: int, width: int, n_out: int) -> int:
    """Keras SpeechE trainable count from the layer sizes of spec §4."""
    dense = (n_in * width + width) + 2 * (width * width + width)     # dense_1..3
    bn = 4 * 2 * width                                                # gamma + beta of batch_normalization_1..4
    gru = 3 * width * width + 3 * width * width + 3 * width           # kernel, recurrent kernel, bias (z, r, h)
    out = width * n_out + n_out                                       # dense_4
    return dense + bn + gru + out


def test_parameter_counts_match_spec():
    abstract = lambda make: nnx.eval_shape(lambda: make(rngs=nnx.Rngs(0)))   # shapes only, nothing computed
    ae = abstract(MotionAutoencoder)
    assert _count(ae) == 384 * 325 + 325 + 325 * 384 + 384 == 250_309
    proposed = abstract(SpeechEncoder)
    assert _count(proposed) == _speech_trainable(26, 256, 325) == 618_053
    assert _count(proposed, nnx.BatchStat) == 4 * 2 * 256              # moving mean/variance, not trained
    baseline = abstract(functools.partial(SpeechEncoder, n_output=384))
    assert _count(baseline) == _speech_trainable(26, 256, 384) == 633_216
    assert proposed.gru.kernel.shape == (256, 768) and proposed.gru.recurrent_kernel.shape == (256, 768)
    assert proposed.out.kernel.shape == (256, 325) and baseline.out.kernel.shape == (256, 384)


# ---------------------------------------------------------------------------- GRU (Keras, reset_after=False)
def _np_keras_gru(x, kernel, rec, bias, act):
    """Keras 2 GRUCell equations, one step at a time, float64."""
    b, t, _ = x.shape
    u = rec.shape[0]
    h = np.zeros((b, u))
    for i in range(t):
        xt = x[:, i]
        z = act(xt @ kernel[:, :u] + bias[:u] + h @ rec[:, :u])
        r = act(xt @ kernel[:, u:2 * u] + bias[u:2 * u] + h @ rec[:, u:2 * u])
        cand = np.tanh(xt @ kernel[:, 2 * u:] + bias[2 * u:] + (r * h) @ rec[:, 2 * u:])
        h = z * h + (1 - z) * cand
    return h


_NP_ACTS = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "hard_sigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1)}


@pytest.mark.parametrize("activation", ["sigmoid", "hard_sigmoid"])
def test_gru_matches_numpy_keras_equations(activation):
    rng = np.random.default_rng(1)
    d, u, b, t = 5, 4, 3, 9
    gru = KerasGRU(d, u, activation, rngs=nnx.Rngs(0))
    kernel, rec, bias = rng.normal(size=(d, 3 * u)), rng.normal(size=(u, 3 * u)), rng.normal(size=3 * u)
    _set(gru.kernel, kernel), _set(gru.recurrent_kernel, rec), _set(gru.bias, bias)
    x = rng.normal(size=(b, t, d))
    want = _np_keras_gru(x, kernel, rec, bias, _NP_ACTS[activation])
    got = np.asarray(jax.jit(lambda v: gru(v))(jnp.asarray(x, jnp.float32)))
    assert got.shape == (b, u)
    np.testing.assert_allclose(got, want, atol=2e-5)
    if activation == "hard_sigmoid":   # the weights are large enough to reach the clipped region
        assert np.abs(x[:, 0] @ kernel[:, :2 * u] + bias[:2 * u]).max() > 2.5


def test_gru_init_is_keras_default():
    gru = KerasGRU(6, 8, rngs=nnx.Rngs(3))
    k, rk = np.asarray(gru.kernel[...]), np.asarray(gru.recurrent_kernel[...])
    assert np.abs(k).max() <= math.sqrt(6 / (6 + 24)) + 1e-7            # Glorot over the whole [D, 3u]
    np.testing.assert_allclose(rk @ rk.T, np.eye(8), atol=1e-5)        # orthogonal rows of [u, 3u]
    assert not np.any(np.asarray(gru.bias[...]))
    with pytest.raises(ValueError, match="recurrent_activation"):
        KerasGRU(6, 8, "relu", rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------- BatchNorm (Keras)
def test_batchnorm_keras_statistics_over_batch_and_time():
    rng = np.random.default_rng(2)
    bn = KerasBatchNorm(4)
    _set(bn.scale, rng.normal(size=4)), _set(bn.bias, rng.normal(size=4))
    x = rng.normal(2.0, 3.0, size=(3, 5, 4))
    y = np.asarray(bn(jnp.asarray(x, jnp.float32), use_running_average=False))
    mu, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))                  # biased, over B*T = 15
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-3) * np.asarray(bn.scale[...]) + np.asarray(bn.bias[...]),
                               atol=1e-5)
    n = 15
    np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.99 * 0 + 0.01 * mu, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.var[...]), 0.99 * 1 + 0.01 * var * n / (n - 1.001), rtol=1e-5)
    before = (np.asarray(bn.mean[...]).copy(), np.asarray(bn.var[...]).copy())
    y_eval = np.asarray(bn(jnp.asarray(x, jnp.float32), use_running_average=True))   # running stats, no update
    np.testing.assert_allclose(y_eval, (x - before[0]) / np.sqrt(before[1] + 1e-3) * np.asarray(bn.scale[...])
                               + np.asarray(bn.bias[...]), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(bn.mean[...]), before[0])


def test_speech_encoder_bn_updates_over_batch_times_time():
    rng = np.random.default_rng(3)
    model = SpeechEncoder(n_input=3, context=7, width=6, n_output=2, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(4, 7, 3)), jnp.float32)
    h1 = np.asarray(model.dense1(x))                                    # [4, 7, 6]
    model(x, deterministic=False, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(model.bn1.mean[...]), 0.01 * h1.mean(axis=(0, 1)), rtol=1e-4, atol=1e-7)
    stats = np.asarray(model.bn4.mean[...]).copy()
    model(x, deterministic=True)                                        # inference leaves the statistics alone
    np.testing.assert_array_equal(np.asarray(model.bn4.mean[...]), stats)


# ---------------------------------------------------------------------------- SpeechE forward
def _np_speech_inference(m: SpeechEncoder, x: np.ndarray) -> np.ndarray:
    """Keras SpeechE.predict: dense → BN(running) → relu (×3) → GRU → BN → relu → dense."""
    p = lambda v: np.asarray(v[...], np.float64)

    def bn(h, layer):
        return (h - p(layer.mean)) / np.sqrt(p(layer.var) + 1e-3) * p(layer.scale) + p(layer.bias)

    h = x
    for dense, layer in ((m.dense1, m.bn1), (m.dense2, m.bn2), (m.dense3, m.bn3)):
        h = np.maximum(bn(h @ p(dense.kernel) + p(dense.bias), layer), 0)
    h = _np_keras_gru(h, p(m.gru.kernel), p(m.gru.recurrent_kernel), p(m.gru.bias), _NP_ACTS["sigmoid"])
    h = np.maximum(bn(h, m.bn4), 0)
    return h @ p(m.out.kernel) + p(m.out.bias)


def test_speech_encoder_inference_matches_numpy_and_rejects_bad_shapes():
    rng = np.random.default_rng(4)
    model = SpeechEncoder(n_input=3, context=7, width=6, n_output=5, rngs=nnx.Rngs(1))
    for layer in (model.bn1, model.bn2, model.bn3, model.bn4):
        _set(layer.mean, rng.normal(size=6)), _set(layer.var, rng.uniform(0.5, 2.0, size=6))
        _set(layer.scale, rng.normal(size=6)), _set(layer.bias, rng.normal(size=6))
    for dense in (model.dense1, model.dense2, model.dense3, model.out):
        _set(dense.bias, rng.normal(size=dense.bias.shape))
    x = rng.normal(size=(2, 7, 3))
    got = np.asarray(model(jnp.asarray(x, jnp.float32), deterministic=True))
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, _np_speech_inference(model, x), atol=1e-4)
    with pytest.raises(ValueError, match=r"\[B, 7, 3\]"):
        model(jnp.zeros((2, 6, 3)), deterministic=True)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        model(jnp.zeros((2, 7, 3)), deterministic=False)


# ---------------------------------------------------------------------------- autoencoder
def _np_ae_inference(ae: MotionAutoencoder, x):
    p = lambda v: np.asarray(v[...], np.float64)
    code = np.tanh(x @ p(ae.encoder.kernel) + p(ae.encoder.bias))
    return np.tanh(code @ p(ae.decoder.kernel) + p(ae.decoder.bias)), code


def test_autoencoder_deterministic_is_exact_affine_tanh():
    rng = np.random.default_rng(5)
    ae = MotionAutoencoder(12, 5, rngs=nnx.Rngs(0))
    _set(ae.encoder.bias, rng.normal(size=5)), _set(ae.decoder.bias, rng.normal(size=12))
    x = rng.normal(size=(7, 12))
    want_rec, want_code = _np_ae_inference(ae, x)
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(np.asarray(ae.encode(xj, True)), want_code, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ae.decode(jnp.asarray(want_code, jnp.float32), True)), want_rec, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ae(xj, True)), want_rec, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ae(xj, True, jax.random.key(1))), np.asarray(ae(xj, True)))


def test_autoencoder_dropout_hits_both_layer_inputs_in_training():
    n, b, keep = 40, 500, 0.9
    ae = MotionAutoencoder(n, n, keep_prob=keep, rngs=nnx.Rngs(0))
    _set(ae.encoder.kernel, np.eye(n)), _set(ae.decoder.kernel, np.eye(n))
    half = jnp.full((b, n), 0.5, jnp.float32)
    for fn in (ae.encode, ae.decode):   # identity layers: out = tanh(dropout(0.5))
        out = np.asarray(fn(half, False, jax.random.key(7)))
        kept = np.isclose(out, np.tanh(0.5 / keep), atol=1e-6)
        dropped = out == 0.0
        assert np.all(kept | dropped)
        assert abs(dropped.mean() - (1 - keep)) < 0.01, dropped.mean()
    key = jax.random.key(11)
    k_enc, k_dec = jax.random.split(key)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(b, n)) * 0.3, jnp.float32)
    np.testing.assert_array_equal(np.asarray(ae(x, False, key)),
                                  np.asarray(ae.decode(ae.encode(x, False, k_enc), False, k_dec)))
    assert not np.allclose(np.asarray(ae(x, False, key)), np.asarray(ae(x, True)))
    with pytest.raises(ValueError, match="keep_prob"):
        MotionAutoencoder(4, 2, keep_prob=0.0, rngs=nnx.Rngs(0))


def test_autoencoder_init_bound():
    ae = MotionAutoencoder(rngs=nnx.Rngs(2))
    bound = 2 * math.sqrt(6 / (384 + 325))
    for lin in (ae.encoder, ae.decoder):
        w = np.asarray(lin.kernel[...])
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound
        assert abs(np.mean(w ** 2) - bound ** 2 / 3) < 0.01 * bound ** 2       # uniform: E w² = bound²/3
        assert not np.any(np.asarray(lin.bias[...]))
    with pytest.raises(ValueError, match="2-D"):
        doubled_glorot_uniform(jax.random.key(0), (3, 4, 5))


# ---------------------------------------------------------------------------- losses
def test_autoencoder_loss_hand_made_case():
    ae = MotionAutoencoder(2, 1, rngs=nnx.Rngs(0))
    _set(ae.encoder.kernel, [[0.5], [-1.0]]), _set(ae.decoder.kernel, [[1.0, 2.0]])
    x = jnp.asarray([[0.2, 0.1]], jnp.float32)      # code tanh(0.1 − 0.1) = 0 → reconstruction 0
    m = jnp.asarray([2.0, 3.0])
    # recon: mean((0.2·2)², (0.1·3)²) = 0.125; decay: 0.5·½(0.25 + 1) + 0.5·½(1 + 4) = 1.5625
    loss = autoencoder_loss(ae, x, jax.random.key(0), 0.0, m, deterministic=True)
    assert float(loss) == pytest.approx(1.6875, rel=1e-6)
    loss0 = autoencoder_loss(ae, x, jax.random.key(0), 0.0, m, weight_decay=0.0, deterministic=True)
    assert float(loss0) == pytest.approx(0.125, rel=1e-6)
    assert float(l2_loss(jnp.asarray([3.0, 4.0]))) == 12.5


def test_autoencoder_loss_noisy_input_clean_target_and_dropout():
    rng = np.random.default_rng(6)
    ae = MotionAutoencoder(10, 4, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(16, 10)) * 0.3, jnp.float32)
    m = jnp.asarray(rng.uniform(1, 50, size=10), jnp.float32)
    key, std = jax.random.key(3), 0.2
    k_noise, k_drop = jax.random.split(key)
    x_hat = ae(noisy_input(x, k_noise, std), False, k_drop)
    want = jnp.mean(jnp.square((x_hat - x) * m)) + 0.5 * (l2_loss(ae.encoder.kernel[...]) + l2_loss(ae.decoder.kernel[...]))
    got = jax.jit(lambda k: autoencoder_loss(ae, x, k, std, m))(key)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    clean = autoencoder_loss(ae, x, key, 0.0, m, deterministic=True)
    assert float(autoencoder_loss(ae, x, key, std, m, deterministic=True)) != pytest.approx(float(clean))
    noise = np.asarray(noisy_input(jnp.zeros((200, 50)), jax.random.key(0), 0.1))
    assert abs(noise.std() - 0.1) < 0.005


def test_speech_loss_is_mse():
    pred, target = jnp.asarray([[1.0, 2.0], [3.0, 5.0]]), jnp.asarray([[0.0, 2.0], [1.0, 5.0]])
    assert float(speech_loss(pred, target)) == pytest.approx((1 + 0 + 4 + 0) / 4)
    with pytest.raises(ValueError, match="shape"):
        speech_loss(pred, target[:, :1])


# ---------------------------------------------------------------------------- normalization
def _frames(rng, n=50):
    y = rng.normal(5.0, 20.0, size=(n, 6))
    y[:, 2] = 0.0        # constant zero (fixed-hip velocity): M = 0
    y[:, 3] = 60.0       # constant non-zero (fixed-hip height): M = μ = 60
    return y


def test_normalizer_statistics_round_trip_and_epsilon_asymmetry(tmp_path):
    rng = np.random.default_rng(8)
    y = _frames(rng)
    norm = KANormalizer.fit(y)
    np.testing.assert_allclose(norm.mean, y.mean(0))
    np.testing.assert_allclose(norm.max_abs, np.abs(y).max(0))      # of the raw, uncentred frames
    x = norm.normalize(y)
    np.testing.assert_allclose(x, (y - y.mean(0)) / (np.abs(y).max(0) + 1e-8))
    assert x[:, 3].max() == 0 and np.abs(x).max() > 0
    test = rng.normal(5.0, 20.0, size=(9, 6))
    back = norm.denormalize(norm.normalize(test))
    mu, mx = y.mean(0), np.abs(y).max(0)
    np.testing.assert_allclose(back, (test - mu) * (mx + 1e-15) / (mx + 1e-8) + mu, rtol=1e-13)
    live = [0, 1, 3, 4, 5]                                   # M > 0: identity up to ~1e-8/M
    np.testing.assert_allclose(back[:, live], test[:, live], rtol=1e-8)
    assert not np.allclose(back[:, live], test[:, live], rtol=1e-12, atol=0)   # yet not exact: 1e-8 vs 1e-15
    np.testing.assert_allclose(back[:, 2], test[:, 2] * 1e-7, rtol=1e-6)   # M = 0: ÷1e-8 then ×1e-15
    # dtype kept, numpy and jax (inside jit)
    y32 = y.astype(np.float32)
    assert norm.normalize(y32).dtype == np.float32
    jx = jax.jit(norm.normalize)(jnp.asarray(y32))
    np.testing.assert_allclose(np.asarray(jx), x, rtol=1e-5, atol=1e-5)
    # saved as plain arrays
    np.savez(tmp_path / "ka_norm.npz", **norm.to_dict())
    again = KANormalizer.from_dict(np.load(tmp_path / "ka_norm.npz"), source="ka_norm.npz")
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.max_abs, norm.max_abs)


def test_normalizer_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"stats\.npz: missing array\(s\) \['max_abs'\]"):
        KANormalizer.from_dict({"mean": np.zeros(3)}, source="stats.npz")
    with pytest.raises(ValueError, match="stats.npz: .*equal length"):
        KANormalizer.from_dict({"mean": np.zeros(3), "max_abs": np.ones(4)}, source="stats.npz")
    with pytest.raises(ValueError, match=r"\[N, F\]"):
        KANormalizer.fit(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        KANormalizer.fit(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="4 features"):
        KANormalizer.fit(np.ones((3, 2))).normalize(np.ones((1, 4)))


def test_global_noise_std():
    x = np.random.default_rng(9).normal(size=(30, 7)) * np.arange(1, 8)
    assert global_noise_std(x) == pytest.approx(0.05 * np.std(x))      # one std over all axes, not per dim
    assert global_noise_std(x, fraction=1.0) == pytest.approx(np.std(x))


# ---------------------------------------------------------------------------- training steps
def _adam_steps(loss, params, model_state, args, steps, lr, key):
    opt = optax.adam(lr)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, model_state, k):
        (l, ms), g = jax.value_and_grad(loss, has_aux=True)(params, model_state, *args, key=k)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, ms, l

    for i in range(steps):
        params, opt_state, model_state, _ = step(params, opt_state, model_state, jax.random.fold_in(key, i))
    return params, model_state


def test_few_adam_steps_lower_autoencoder_loss():
    rng = np.random.default_rng(10)
    ae = MotionAutoencoder(12, 5, rngs=nnx.Rngs(0))
    gd, params, ms = nnx.split(ae, nnx.Param, ...)
    frames = jnp.asarray(np.tanh(rng.normal(size=(64, 12))), jnp.float32)
    m = jnp.ones((12,), jnp.float32)
    ae_loss = functional_loss(gd, functools.partial(autoencoder_loss, noise_std=0.01, max_abs=m))
    eval_ae = jax.jit(lambda p: ae_loss(p, ms, frames, key=jax.random.key(0), deterministic=True)[0])
    start = eval_ae(params)
    params, _ = _adam_steps(ae_loss, params, ms, (frames,), 40, 1e-2, jax.random.key(1))
    assert float(eval_ae(params)) < 0.7 * float(start)


def test_few_adam_steps_lower_speech_loss_and_update_bn_state():
    rng = np.random.default_rng(11)
    se = SpeechEncoder(n_input=4, context=5, width=8, n_output=3, rngs=nnx.Rngs(0))
    gd, params, ms = nnx.split(se, nnx.Param, ...)
    x = jnp.asarray(rng.normal(size=(32, 5, 4)), jnp.float32)
    y = jnp.asarray(np.tanh(np.asarray(x).sum(axis=1)[:, :3]), jnp.float32)
    se_loss = functional_loss(gd, speech_model_loss)
    train_loss = jax.jit(lambda p, s: se_loss(p, s, x, y, key=jax.random.key(5))[0])   # fixed dropout masks
    start = float(train_loss(params, ms))
    params2, ms2 = _adam_steps(se_loss, params, ms, (x, y), 40, 1e-2, jax.random.key(2))
    assert float(train_loss(params2, ms2)) < 0.5 * start
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), ms2, ms)
    assert all(v > 0 for v in jax.tree_util.tree_leaves(moved))          # running stats updated
    assert jax.tree_util.tree_structure(ms2) == jax.tree_util.tree_structure(ms)


# ---------------------------------------------------------------------------- real data
def test_real_bvh_frames_through_normalizer_and_autoencoder():
    from gesture_jax.motion.bvh import read_bvh
    from gesture_jax.motion.kinematics import bvh_positions

    pos = bvh_positions(read_bvh(shared_file("beat/10_kieks_0_96_96_1.bvh")))[:200]     # [T, J, 3] cm
    vel = np.concatenate([np.zeros_like(pos[:1]), np.diff(pos, axis=0)])              # v_0 = 0 (spec §1)
    frames = np.concatenate([pos, vel], axis=-1).reshape(len(pos), -1)                # [T, J·6]
    norm = KANormalizer.fit(frames, source="beat/10_kieks_0_96_96_1.bvh")
    x = norm.normalize(frames.astype(np.float32))
    live = norm.max_abs > 1e-3
    np.testing.assert_allclose(norm.denormalize(x.astype(np.float64))[:, live], frames[:, live], rtol=1e-4, atol=1e-3)
    sigma = global_noise_std(x, fraction=1.0)
    assert 0 < sigma < 1
    ae = MotionAutoencoder(frames.shape[1], 16, rngs=nnx.Rngs(0))
    rec = np.asarray(ae(jnp.asarray(x), True))
    assert rec.shape == frames.shape and np.all(np.abs(rec) < 1)
    loss = autoencoder_loss(ae, jnp.asarray(x[:32]), jax.random.key(0), 0.05 * sigma, jnp.asarray(norm.max_abs, jnp.float32))
    assert np.isfinite(float(loss)) and float(loss) > 0
