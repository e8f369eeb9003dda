"""Persona-Gestor's reference parameter layout <-> our denoiser (methods/persona_gestor/reference.py).

The reference-shape checks are abstract (jax.eval_shape: no memory); the round trips run a small
model of the same structure for each dataset's motion width (Trinity 75, BEAT 156, ZEGGS 166).
"""
import functools
import hashlib
from collections import OrderedDict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import base
from gesture_jax.methods.persona_gestor import reference as R
from gesture_jax.models import build_denoiser, diffusion

TSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "persona_gestor_state_dict.tsv"
# sha256 of the TSV's 440 "name\tshape" rows in order (F = 75), recorded so that the exact layout
# check runs without ../shared; test_layout_fingerprint_is_the_tsvs ties it to the file when present.
TSV_LAYOUT_SHA256 = "bd61306b08b8914f39a71630f9ed615af78a120beafecc7c864a8f9baa19ef4c"


def _reference_cfg():
    cfg = base.get_base_config()
    cfg.model.null_cond = False
    return cfg


def _flat_params(model):
    return R.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))))


def _tsv_layout():
    if not TSV.exists():
        pytest.skip(f"{TSV} is absent (../shared is not beside this checkout)")
    rows = []
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")
        rows.append((name, tuple(int(x) for x in shape.strip("()").split(",") if x.strip())))
    return rows


def _fingerprint(rows) -> str:
    return hashlib.sha256("\n".join(f"{n}\t{s}" for n, s in rows).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _abstract_export(F: int):
    cfg = _reference_cfg()
    model = nnx.eval_shape(lambda: build_denoiser(cfg.model, F, 768, 400, nnx.Rngs(0)))
    sched = diffusion.make_schedule(cfg.diffusion)
    out = jax.eval_shape(lambda a: R.export_state_dict(a, 12, sched, 400), dict(_flat_params(model)))
    return tuple((k, tuple(v.shape)) for k, v in out.items())


def test_export_is_the_reference_layout_exactly():
    """Our reference-shape model exported to the reference's names: the TSV's names, shapes and
    order (F = 75, Trinity); 934,105,419 parameters once the shared decoder is counted once."""
    got = _abstract_export(75)
    assert len(got) == 440 and _fingerprint(got) == TSV_LAYOUT_SHA256
    n = sum(int(np.prod(s)) for k, s in got if k.startswith("model.") and not k.startswith("model.motion_decoder")
            and not k.endswith((".pe", "num_batches_tracked", "running_mean", "running_var")))
    assert n == 934_105_419


def test_layout_fingerprint_is_the_tsvs():
    rows = _tsv_layout()
    assert _fingerprint(rows) == TSV_LAYOUT_SHA256
    assert list(_abstract_export(75)) == rows


@pytest.mark.parametrize("F", [156, 166])
def test_other_datasets_differ_only_in_the_motion_convolutions(F):
    tsv = dict(_abstract_export(75))   # == the TSV (test above)
    got = dict(_abstract_export(F))
    assert set(got) == set(tsv)
    differ = sorted(k for k in got if got[k] != tsv[k])
    assert differ == sorted(["model.motion_encoder.net.0.sequential.1.weight", "model.motion_decoder.net.1.weight",
                             "model.motion_decoder.net.1.bias", "model.final_layer.output.net.1.weight",
                             "model.final_layer.output.net.1.bias"])


# ----------------------------------------------------------------------------- small round trips
def small_cfg():
    cfg = _reference_cfg()
    m = cfg.model
    m.depth, m.dim, m.heads, m.time_embed_dim, m.max_len = 2, 32, 4, 16, 24
    m.fuzzy.style_kernel, m.fuzzy.style_dilation, m.fuzzy.down_kernel, m.fuzzy.down_stride = 5, 2, 7, 2
    m.dropout = 0.1
    cfg.diffusion.num_steps = 50
    return cfg


def randomized_model(cfg, F: int, A: int, T: int, seed: int):
    """A small model with every parameter and BatchNorm statistic random (no zero or one left that
    would hide a swapped or untransposed tensor)."""
    model = build_denoiser(cfg.model, F, A, T, nnx.Rngs(seed))
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    keys = iter(jax.random.split(jax.random.key(seed + 100), 1000))
    state = jax.tree_util.tree_map(
        lambda v: jax.random.uniform(next(keys), v.shape, v.dtype, 0.5, 1.5) if v.ndim == 1 and v.size > 0
        else v + 0.05 * jax.random.normal(next(keys), v.shape, v.dtype), state)
    nnx.update(model, state)
    return model


def _outputs(model, F, A, T, Ta):
    x = jax.random.normal(jax.random.key(1), (2, T, F))
    audio = jax.random.normal(jax.random.key(2), (2, Ta, A))
    t = jnp.array([0, 37])
    return np.asarray(model(x, t, audio, deterministic=True))


@pytest.mark.parametrize("F", [75, 156, 166])
def test_round_trip_through_reference_names_gives_identical_outputs(F):
    cfg = small_cfg()
    A, T = 12, 24
    cfg.model.step_table_rows = cfg.diffusion.num_steps
    src = randomized_model(cfg, F, A, T, seed=0)
    table = R.reference_step_table(cfg.diffusion.num_steps, cfg.model.time_embed_dim)
    src.time_embed.table[...] = jnp.asarray(table)
    sched = diffusion.make_schedule(cfg.diffusion)
    sd = R.export_state_dict(dict(_flat_params(src)), 2, sched, cfg.model.max_len)
    sd = OrderedDict((k, np.asarray(v)) for k, v in sd.items())

    imp = R.read_reference(sd, "crafted.ckpt")
    assert (imp.depth, imp.motion_dim, imp.audio_dim, imp.dim) == (2, F, A, 32)
    assert R.check_buffers(sd, "model.", 2, sched, cfg.model.max_len, 32, "crafted.ckpt")
    dst = build_denoiser(cfg.model, F, A, T, nnx.Rngs(7))   # other random weights, overwritten
    from gesture_jax.methods.persona_gestor.import_reference import fill_model
    fill_model(dst, imp.arrays, table)
    Ta = T
    np.testing.assert_array_equal(_outputs(dst, F, A, T, Ta), _outputs(src, F, A, T, Ta))


def test_every_tensor_lands_where_it_belongs():
    """Each reference tensor changes exactly its own parameter: perturbing one key in the state
    dict changes one of our arrays (a swapped pair of names would move the change)."""
    cfg = small_cfg()
    src = randomized_model(cfg, 9, 12, 24, seed=3)
    sched = diffusion.make_schedule(cfg.diffusion)
    flat = dict(_flat_params(src))
    sd = OrderedDict((k, np.asarray(v)) for k, v in R.export_state_dict(flat, 2, sched, cfg.model.max_len).items())
    base_imp = R.read_reference(sd, "x")
    for e in R.parameter_map(2):
        key = "model." + e.ref
        bumped = OrderedDict(sd)
        bumped[key] = sd[key] + 1.0
        if e.ref.startswith("final_layer.output"):      # the shared decoder is stored twice
            bumped[key.replace("final_layer.output", "motion_decoder")] = bumped[key]
        imp = R.read_reference(bumped, "x")
        changed = [p for p in imp.arrays if not np.array_equal(imp.arrays[p], base_imp.arrays[p])]
        assert changed == [e.ours], (key, changed)
        np.testing.assert_array_equal(imp.arrays[e.ours], base_imp.arrays[e.ours] + 1.0)
        np.testing.assert_array_equal(base_imp.arrays[e.ours], np.asarray(flat[e.ours]))


# ----------------------------------------------------------------------------- clear errors
@pytest.fixture(scope="module")
def small_sd():
    cfg = small_cfg()
    src = randomized_model(cfg, 9, 12, 24, seed=4)
    sched = diffusion.make_schedule(cfg.diffusion)
    sd = R.export_state_dict(dict(_flat_params(src)), 2, sched, cfg.model.max_len)
    return OrderedDict((k, np.asarray(v)) for k, v in sd.items()), sched, cfg


def test_missing_key_is_named(small_sd):
    sd, _, _ = small_sd
    bad = OrderedDict(sd)
    del bad["model.blocks.1.mlp.fc2.bias"]
    with pytest.raises(R.ReferenceMismatch, match=r"f\.ckpt: missing 1 .*blocks\.1\.mlp\.fc2\.bias"):
        R.read_reference(bad, "f.ckpt")


def test_extra_key_is_named(small_sd):
    sd, _, _ = small_sd
    bad = OrderedDict(sd)
    bad["model.blocks.0.extra_gate.weight"] = np.zeros(3, np.float32)
    with pytest.raises(R.ReferenceMismatch, match=r"unexpected key.*blocks\.0\.extra_gate\.weight"):
        R.read_reference(bad, "f.ckpt")


def test_not_a_persona_gestor_state_dict():
    with pytest.raises(R.ReferenceMismatch, match="not a Persona-Gestor network"):
        R.read_reference({"encoder.weight": np.zeros((2, 2), np.float32)}, "other.ckpt")


def test_diverging_shared_decoder_is_refused(small_sd):
    sd, _, _ = small_sd
    bad = OrderedDict(sd)
    bad["model.motion_decoder.net.1.bias"] = sd["model.motion_decoder.net.1.bias"] + 1
    with pytest.raises(R.ReferenceMismatch, match="motion_decoder.net.1.bias .* differs from .*final_layer"):
        R.read_reference(bad, "f.ckpt")


def test_schedule_buffers_are_checked_not_loaded(small_sd):
    sd, sched, cfg = small_sd
    cfg2 = small_cfg()
    cfg2.diffusion.beta_end = 0.02
    other = diffusion.make_schedule(cfg2.diffusion)
    with pytest.raises(R.ReferenceMismatch, match=r"f\.ckpt: betas\[\d+\] = .* our schedule"):
        R.check_buffers(sd, "model.", 2, other, cfg.model.max_len, 32, "f.ckpt")
    bad = OrderedDict(sd)
    bad["model.blocks.1.attn.0.module.positional_encoding.pe"] = sd[
        "model.blocks.1.attn.0.module.positional_encoding.pe"][:, ::-1]
    with pytest.raises(R.ReferenceMismatch, match="blocks.1.attn.0.module.positional_encoding.pe differs"):
        R.check_buffers(bad, "model.", 2, sched, cfg.model.max_len, 32, "f.ckpt")


def test_reference_step_table_is_torchs_not_our_formula():
    """The stored table is torch's float32 evaluation; ours differs in the last unit of some
    frequencies (the reason the importer stores it)."""
    torch = pytest.importorskip("torch")
    from gesture_jax.models.embeddings import diffwave_step_features
    table = R.reference_step_table(1000, 2560)
    steps = torch.arange(1000).unsqueeze(1)
    dims = torch.arange(1280).unsqueeze(0)
    t = steps * 10.0 ** (dims * 4.0 / 1280)
    np.testing.assert_array_equal(table, torch.cat([torch.sin(t), torch.cos(t)], dim=1).numpy())
    ours = np.asarray(diffwave_step_features(jnp.arange(1000), 2560))
    assert np.abs(ours[0] - table[0]).max() == 0.0
    assert np.abs(ours[999] - table[999]).max() > 0.1   # large t: the one-ulp frequencies show


def test_imported_weights_give_the_reference_networks_output():
    """Parity with a PyTorch forward that reads the reference's names in PyTorch's layouts
    (tests/pg_torch_reference.py): the map is right tensor by tensor, transposes included."""
    torch = pytest.importorskip("torch")
    from pg_torch_reference import reference_forward

    from gesture_jax.methods.persona_gestor.import_reference import fill_model
    cfg = small_cfg()
    cfg.model.fuzzy.style_kernel, cfg.model.fuzzy.down_kernel = 30, 13   # 59 frames -> 1 style token, 24 tokens
    cfg.model.step_table_rows = cfg.diffusion.num_steps
    F, A, T, Ta = 75, 12, 24, 59
    src = randomized_model(cfg, F, A, T, seed=11)
    sched = diffusion.make_schedule(cfg.diffusion)
    sd = R.export_state_dict(dict(_flat_params(src)), 2, sched, cfg.model.max_len)
    table = R.reference_step_table(cfg.diffusion.num_steps, cfg.model.time_embed_dim)
    ours = build_denoiser(cfg.model, F, A, T, nnx.Rngs(0), audio_rate=50.0)
    fill_model(ours, R.read_reference(sd, "x").arrays, table)
    x = np.asarray(jax.random.normal(jax.random.key(5), (2, T, F)))
    wav = np.asarray(jax.random.normal(jax.random.key(6), (2, Ta, A)))
    t = np.array([3, 49])
    got = np.asarray(ours(jnp.asarray(x), jnp.asarray(t), jnp.asarray(wav), deterministic=True))
    tsd = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    with torch.no_grad():
        want = reference_forward(tsd, torch.from_numpy(x.copy()), torch.from_numpy(t).long(), torch.from_numpy(wav.copy()),
                                 torch.from_numpy(table), heads=cfg.model.heads).numpy()
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4 * np.abs(want).max())
