"""Denoiser building blocks and the demo-size model: shapes, masks, attention scaling, BatchNorm, DiT, CFG."""
import math

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from configs import demo
from gesture_jax.models import build_denoiser
from gesture_jax.models.attention import (MultiHeadSelfAttention, RelativeMultiHeadAttention, attention_mask,
                                         relative_shift)
from gesture_jax.models.blocks import DiTBlock
from gesture_jax.models.conformer import ConformerConvModule
from gesture_jax.models.embeddings import diffwave_step_features
import gesture_jax.models.fuzzy as fuzzy_module
from gesture_jax.models.fuzzy import FuzzyFeatureExtractor, _conv, conv_plus_constant, resampled_frame_count

F, A, T, B = 12, 16, 80, 2


def _demo_model(seq_len=T, **overrides):
    cfg = demo.get_config()
    with cfg.unlocked():
        for k, v in overrides.items():
            cfg.model[k] = v
    return build_denoiser(cfg.model, F, A, seq_len, nnx.Rngs(0))


def _inputs(seed=0, seq_len=T):
    k = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k[0], (B, seq_len, F)), jnp.array([0, 57], jnp.int32),
            jax.random.normal(k[1], (B, seq_len, A)))


def test_reference_mask_rows():
    m = attention_mask("reference", 5)
    assert m[0].all()  # frame 0 hides everything -> uniform attention
    for i in range(1, 5):
        assert not m[i, :i].any() and m[i, i:].all()  # sees strictly the past
    c = attention_mask("causal", 5)
    assert (c == np.triu(np.ones((5, 5), bool), 1)).all()
    assert attention_mask("none", 5) is None
    with pytest.raises(ValueError, match="attn_mask"):
        attention_mask("diagonal", 5)


def test_relative_shift_maps_distance_to_position():
    t = 6
    p = jnp.arange(t * t, dtype=jnp.float32).reshape(1, 1, t, t)
    out = np.asarray(relative_shift(p))[0, 0]
    for i in range(t):
        for j in range(i + 1):  # visible part: relative distance i-j reads position column T-1-(i-j)
            assert out[i, j] == p[0, 0, i, t - 1 - i + j]
        if i + 1 < t:
            assert out[i, i + 1] == 0.0


def test_relative_attention_scaled_by_sqrt_model_dim_and_frame0_uniform():
    dim, heads, t = 32, 4, 7
    att = RelativeMultiHeadAttention(dim, heads, 16, 0.0, rngs=nnx.Rngs(1))
    # Remove the position path and biases: scores reduce to q.k / sqrt(D).
    att.pos.kernel[...] = jnp.zeros_like(att.pos.kernel[...])
    att.u_bias[...] = jnp.zeros_like(att.u_bias[...])
    att.v_bias[...] = jnp.zeros_like(att.v_bias[...])
    x = jax.random.normal(jax.random.key(0), (1, t, dim))
    mask = attention_mask("reference", t)
    got = att(x, mask, deterministic=True)

    def manual(scale):
        q = att.query(x).reshape(1, t, heads, -1)
        k = att.key(x).reshape(1, t, heads, -1)
        v = att.value(x).reshape(1, t, heads, -1)
        s = jnp.einsum("bihd,bjhd->bhij", q, k) / scale
        s = jnp.where(mask, -1e9, s)
        a = jax.nn.softmax(s, -1)
        assert np.allclose(a[0, :, 0], 1.0 / t)  # frame 0: uniform over all frames
        return att.out(jnp.einsum("bhij,bjhd->bihd", a, v).reshape(1, t, dim))

    np.testing.assert_allclose(got, manual(math.sqrt(dim)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, manual(math.sqrt(dim // heads)), atol=1e-4)


def test_batchnorm_updates_in_train_and_is_used_in_eval():
    mod = ConformerConvModule(8, 3, 0.0, rngs=nnx.Rngs(0))
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (4, 10, 8))
    bn = mod.batch_norm
    mean0, var0 = np.array(bn.mean[...]), np.array(bn.var[...])
    y_eval = mod(x, deterministic=True)
    np.testing.assert_array_equal(bn.mean[...], mean0)  # eval: no update
    mod(x, deterministic=False)
    assert not np.allclose(bn.mean[...], mean0) and not np.allclose(bn.var[...], var0)  # train: updated
    # Eval mode normalizes with the running statistics: set them and check the formula.
    bn.mean[...] = jnp.full((8,), 0.5)
    bn.var[...] = jnp.full((8,), 4.0)
    h = mod.pointwise_in(mod.norm(x))
    a, g = jnp.split(h, 2, -1)
    d = mod.depthwise(a * jax.nn.sigmoid(g))
    expect = mod.pointwise_out(jax.nn.silu((d - 0.5) / jnp.sqrt(4.0 + 1e-5) * bn.scale[...] + bn.bias[...]))
    np.testing.assert_allclose(mod(x, deterministic=True), expect, rtol=1e-5, atol=1e-5)
    assert not np.allclose(y_eval, expect, atol=1e-4)


def test_fuzzy_reference_geometry_and_demo_padding():
    assert resampled_frame_count(400, 20.0, 50.0) == 999  # WavLM frames of 20 s
    ext = FuzzyFeatureExtractor(4, 6, style_kernel=500, style_dilation=2, down_kernel=201, down_stride=2,
                                audio_fps=50.0, fps=20.0, dropout=0.1, rngs=nnx.Rngs(0))
    assert ext.input_frames(400) == 999
    y = ext(jnp.ones((1, 400, 4)), deterministic=True)
    assert y.shape == (1, 400, 6)
    small = FuzzyFeatureExtractor(4, 6, style_kernel=40, style_dilation=2, down_kernel=9, down_stride=1,
                                  audio_fps=20.0, fps=20.0, dropout=0.0, rngs=nnx.Rngs(0))
    assert small(jnp.ones((2, 80, 4)), deterministic=True).shape == (2, 80, 6)


def test_fuzzy_style_shortcut_equals_conv_of_sum_with_exact_gradients(monkeypatch):
    ext = FuzzyFeatureExtractor(4, 6, style_kernel=5, style_dilation=2, down_kernel=5, down_stride=2,
                                audio_fps=20.0, fps=20.0, dropout=0.0, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (2, ext.input_frames(10), 4))
    np.testing.assert_allclose(ext._style_conv(x), ext.style_conv(x), rtol=1e-5, atol=1e-5)  # einsum == lax conv
    style = ext.style_token(x)
    w = ext.down_conv.kernel[...]
    direct = lambda x, s, w: jnp.sum(jnp.sin(_conv(x + s, w, 2)))
    short = lambda x, s, w: jnp.sum(jnp.sin(conv_plus_constant(x, s, w, 2)))
    np.testing.assert_allclose(short(x, style, w), direct(x, style, w), rtol=1e-5)
    for limit in (2 ** 27, 0):  # im2col and convolution forms of the weight gradient
        monkeypatch.setattr(fuzzy_module, "_IM2COL_MAX_ELEMENTS", limit)
        for g1, g2 in zip(jax.grad(short, argnums=(0, 1, 2))(x, style, w), jax.grad(direct, argnums=(0, 1, 2))(x, style, w)):
            np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-5)


def test_diffwave_features_match_reference_table():
    t = jnp.array([0, 1, 999])
    feats = np.asarray(diffwave_step_features(t, 8))
    k = np.arange(4)
    table = np.array([0, 1, 999])[:, None] * 10.0 ** (k * 4.0 / 4)
    np.testing.assert_allclose(feats, np.concatenate([np.sin(table), np.cos(table)], 1), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("block,mask", [("reference", "reference"), ("reference", "none"), ("dit", "causal")])
def test_denoiser_shapes_condition_reuse_and_cfg(block, mask):
    t_len = 24  # shorter than the demo window: the fuzzy extractor pads to its receptive field
    model = _demo_model(seq_len=t_len, block=block, attn_mask=mask, depth=1)
    x, t, audio = _inputs(seq_len=t_len)
    out = model(x, t, audio, deterministic=True)
    assert out.shape == (B, t_len, F) and out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())
    cond = model.condition(audio, deterministic=True)
    assert cond.shape == (B, t_len, 64)
    np.testing.assert_allclose(model.denoise(x, t, cond, deterministic=True), out, rtol=1e-5, atol=1e-5)
    drop = model.condition(audio, deterministic=True, cond_drop=jnp.array([True, False]))
    np.testing.assert_allclose(drop[0], np.broadcast_to(model.null_cond[...], (t_len, 64)))
    np.testing.assert_allclose(drop[1], cond[1])
    if block == "dit":  # adaLN-Zero: the output layer starts at zero
        np.testing.assert_array_equal(out, 0.0)


def test_demo_forward_and_grad_finite_in_train_mode():
    model = _demo_model(dropout=0.1)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x, t, audio = _inputs(1)

    @jax.jit
    def loss_fn(params, rest):
        m = nnx.merge(graphdef, params, rest)
        out = m(x, t, audio, deterministic=False, cond_drop=jnp.array([False, True]))
        return jnp.mean((out - x) ** 2), nnx.state(m, nnx.BatchStat)

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
    assert np.isfinite(float(loss))
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
    assert len(jax.tree.leaves(stats)) == 2 * 2  # mean/var per block


def test_bad_config_values_raise_clearly():
    with pytest.raises(ValueError, match="model.block"):
        _demo_model(block="unet")
    with pytest.raises(ValueError, match="divisible"):
        _demo_model(heads=5)
    model = _demo_model(null_cond=False)
    x, t, audio = _inputs()
    with pytest.raises(ValueError, match="null_cond"):
        model(x, t, audio, deterministic=True, cond_drop=jnp.array([True, False]))


# ------------------------------------------------------- values, not shapes: masks, DiT, batching

def _randomize(module: nnx.Module, seed: int, scale: float = 0.3) -> nnx.Module:
    """Draw every parameter of ``module`` from N(0, scale^2), in place (numpy: no per-shape compiles).

    DiT's adaLN-Zero layers start at zero (each block is the identity, the output layer gives 0),
    so a test of what a block computes, or of which frames/examples it mixes, is vacuous at init.
    """
    rng = np.random.default_rng(seed)
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    nnx.update(module, jax.tree.unflatten(treedef, [jnp.asarray(scale * rng.normal(size=v.shape), v.dtype)
                                                    for v in leaves]))
    return module


_DIM, _HEADS, _LEN = 16, 2, 6
_NO_MASK = np.zeros((_LEN, _LEN), bool)  # hides nothing: the same scores as mask=None


def _influence_fn(kind: str, seed: int = 0):
    """(influence, module) for an attention module or DiT block with random non-zero weights.

    influence(mask [T,T] bool) -> [T, T, n]: entry (i, j, s) is the norm of d out[0, i] / d in_s[0, j]
    for the module's sequence inputs (x; for DiT also its per-token condition c) at fixed random
    values. Jitted once per module with the mask and the parameters as arguments (parameters
    edited later are seen without recompiling): far cheaper than running the Jacobian op by op.
    """
    rngs = nnx.Rngs(seed)
    if kind == "relative":
        module = RelativeMultiHeadAttention(_DIM, _HEADS, 16, 0.0, rngs=rngs)
        call = lambda m, xc, mask: m(xc, mask, deterministic=True)  # noqa: E731
        n_in = 1
    else:
        module = DiTBlock(_DIM, _HEADS, 2.0, 0.0, rngs=rngs)
        call = lambda m, xc, mask: m(xc[..., :_DIM], xc[..., _DIM:], mask, deterministic=True)  # noqa: E731
        n_in = 2
    _randomize(module, seed)
    graphdef = nnx.graphdef(module)
    xc = jnp.asarray(np.random.default_rng(seed + 7).normal(size=(1, _LEN, n_in * _DIM)), jnp.float32)

    @jax.jit
    def jac(state, mask):  # -> [T, D, T, n*D]
        m = nnx.merge(graphdef, state)
        return jax.jacfwd(lambda xc: call(m, xc, mask)[0])(xc)[:, :, 0]

    def influence(mask: np.ndarray) -> np.ndarray:
        j = np.asarray(jac(nnx.state(module), jnp.asarray(mask))).reshape(_LEN, _DIM, _LEN, n_in, _DIM)
        return np.sqrt((j ** 2).sum(axis=(1, 4)))      # [T, T, n]

    return influence, module


@pytest.mark.parametrize("kind", ["relative", "dit"])
def test_causal_mask_output_at_frame_i_ignores_later_frames(kind):
    """With random non-zero weights, output frame i depends on input frames j <= i and on no later one
    (the Jacobian is block lower-triangular, diagonal included); without a mask it sees them all.
    For DiT this holds for x and for the per-token adaLN condition c alike."""
    influence, _ = _influence_fn(kind)
    upper, lower = np.triu_indices(_LEN, 1), np.tril_indices(_LEN)
    causal, full = influence(attention_mask("causal", _LEN)), influence(_NO_MASK)
    for s in range(causal.shape[-1]):                 # x, then c (DiT)
        c, f = causal[..., s], full[..., s]
        assert c[upper].max() <= 1e-6 * c.max(), c
        assert c[lower].min() > 1e-5 * c.max(), c     # every earlier frame is used
        assert f[upper].min() > 1e-5 * f.max(), f     # the check can see the future


def test_reference_mask_hides_self_and_future_and_frame0_sees_all():
    """The reference's mask on its relative attention, random weights: frames i >= 1 ignore later
    frames; frame 0, with nothing visible, attends uniformly to every frame. With the query path
    zeroed (scores constant: attention averages the visible values), frame i >= 1 also ignores
    itself, where the causal mask keeps it."""
    influence, att = _influence_fn("relative")
    ref = influence(attention_mask("reference", _LEN))[..., 0]
    rows = np.arange(1, _LEN)
    assert all(ref[i, i + 1:].max(initial=0.0) <= 1e-6 * ref.max() for i in rows), ref
    assert ref[0].min() > 1e-3 * ref.max(), ref                      # frame 0: every frame
    for p in (att.query.kernel, att.query.bias, att.u_bias, att.v_bias):
        p[...] = jnp.zeros_like(p[...])
    ref0 = influence(attention_mask("reference", _LEN))[..., 0]
    causal0 = influence(attention_mask("causal", _LEN))[..., 0]
    assert ref0[rows, rows].max() <= 1e-6 * ref0.max(), ref0         # frame i does not see itself
    assert causal0[rows, rows].min() > 1e-3 * causal0.max(), causal0
    assert ref0[np.tril_indices(_LEN, -1)].min() > 1e-3 * ref0.max()  # but sees every earlier frame


@pytest.mark.parametrize("block,mask", [("reference", "reference"), ("dit", "causal")])
def test_denoiser_batch_elements_are_independent(block, mask):
    """Eval mode: example b's output values do not depend on the other example of the batch
    (replaced or swapped), and its own inputs and conditioning dropout change its output only.
    DiT is zero-initialized (output 0 for every input), so its blocks and output layer get random
    weights first. Same shapes as test_denoiser_shapes_condition_reuse_and_cfg, whose op-by-op
    compilations this reuses."""
    t_len = 24
    model = _demo_model(seq_len=t_len, block=block, attn_mask=mask, depth=1)
    if block == "dit":
        for blk in model.blocks:
            _randomize(blk, 1, 0.1)
        _randomize(model.final, 2, 0.1)
    x, t, audio = _inputs(seq_len=t_len)                   # [B,T,F], [B] = [0, 57], [B,T,A]; B = 2
    run = lambda x, a, drop=None: np.asarray(model(x, t, a, deterministic=True, cond_drop=drop))  # noqa: E731
    out = run(x, audio)                                    # [B,T,F]
    assert out.std() > 0.05 and np.abs(out[0] - out[1]).max() > 0.05  # not vacuous
    close = dict(rtol=1e-4, atol=1e-5)
    swapped = np.asarray(model(x[::-1], t[::-1], audio[::-1], deterministic=True))
    np.testing.assert_allclose(swapped, out[::-1], **close)
    # example 1's inputs replaced: example 0's output is unchanged, example 1's is not
    out2 = run(x.at[1].set(-x[1]), audio.at[1].set(-audio[1]))
    np.testing.assert_allclose(out2[0], out[0], **close)
    assert np.abs(out2[1] - out[1]).max() > 0.05
    dropped = run(x, audio, jnp.array([False, True]))
    np.testing.assert_allclose(dropped[0], out[0], **close)
    assert np.abs(dropped[1] - out[1]).max() > 0.01
