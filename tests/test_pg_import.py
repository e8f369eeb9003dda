"""Importing Persona-Gestor's Lightning checkpoints (methods/persona_gestor/import_reference.py).

A crafted checkpoint laid out like Lightning's - state_dict plus pickled hyperparameters (a
functools.partial of an optimizer class, a config object), optimizer states, callbacks - is
written with torch.save from a small random model of ours, imported into a workdir with a tiny
WavLM-prepared dataset, and the run is used as generate uses it.
"""
import functools
import json
from collections import OrderedDict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import demo
from conftest import run_module
from data_prep import prepare, synthetic
from gesture_jax.methods.persona_gestor import reference as R
from gesture_jax.methods.persona_gestor.import_reference import ImportReferenceError, import_reference
from gesture_jax.models import diffusion
from test_pg_reference_map import randomized_model
from test_pg_reference_data import stand_ins  # noqa: F401 - the fixture
from wavlm_testlib import random_flax_model, tiny_config

torch = pytest.importorskip("torch")

MARKER_NAME = "EXECUTED.txt"


def _write_marker(path):
    Path(path).write_text("pickle code ran")
    return 0


class Executes:
    """Unpickling this would call _write_marker: an importer that executes anything leaves a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_write_marker, (self.path,))


class RunConfig:
    """Stands in for the reference's Hydra/OmegaConf config object in hyper_parameters."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def pg_config(wavlm_dir, root, out):
    """demo data, WavLM features at their own 50 Hz, and a small reference-structured model whose
    fuzzy extractor has the reference's geometry for 4 s windows: 199 frames -> 1 style token
    (kernel 100, dilation 2) and 199 -> 80 tokens (kernel 41, stride 2)."""
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out, cfg.data.num_workers = str(root), str(out), 1
        cfg.audio.feature, cfg.audio.wavlm_dir, cfg.audio.layer = "wavlm", str(wavlm_dir), 2
        if "native_rate" in cfg.audio:
            cfg.audio.native_rate = True
        m = cfg.model
        m.block, m.attn_mask, m.null_cond = "reference", "reference", False
        m.depth, m.dim, m.heads, m.time_embed_dim, m.max_len, m.dropout = 2, 32, 4, 16, 80, 0.1
        m.fuzzy.style_kernel, m.fuzzy.style_dilation, m.fuzzy.down_kernel, m.fuzzy.down_stride = 100, 2, 41, 2
        m.fuzzy.audio_fps = 50.0
        cfg.diffusion.num_steps = 40
        cfg.train.cond_dropout = 0.0
        cfg.sample.guidance = 1.0
    return cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from gesture_jax.audio.wavlm.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("pg_import")
    wcfg = tiny_config(num_hidden_layers=2)
    save_checkpoint(d / "wavlm", wcfg, nnx.to_pure_dict(nnx.state(random_flax_model(wcfg, seed=0))),
                    source={"kind": "test"})
    synthetic.generate_corpus(d / "src", num_train=2, num_test=1, duration_s=6.0, seed=5)
    cfg = pg_config(d / "wavlm", d / "src", d / "data")
    m = prepare.run_prepare(cfg, progress=False)
    return {"dir": d, "cfg": cfg, "F": int(m["motion"]["feature_dim"]), "A": int(m["audio"]["dim"])}


def _source_model(cfg, F, A, seed=0):
    """Our random model with the reference's exact step table: what the crafted file holds."""
    c = cfg.copy_and_resolve_references()
    with c.unlocked():
        c.model.step_table_rows = c.diffusion.num_steps
    model = randomized_model(c, F, A, 80, seed)
    model.time_embed.table[...] = jnp.asarray(R.reference_step_table(c.diffusion.num_steps, c.model.time_embed_dim))
    return model


def _state_dict(model, cfg, depth=2):
    flat = R.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))))
    sd = R.export_state_dict(dict(flat), depth, diffusion.make_schedule(cfg.diffusion), cfg.model.max_len)
    return OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in sd.items())


def lightning_checkpoint(path, state_dict, marker_dir):
    """A file laid out like a Lightning .ckpt, written by torch.save (pickled objects included)."""
    sd = OrderedDict(state_dict)
    sd["model.wavLMEncoder.model.encoder.layers.0.fc1.weight"] = torch.zeros(4, 2)  # the frozen WavLM
    torch.save({
        "epoch": 7, "global_step": 1234, "pytorch-lightning_version": "1.9.4",
        "state_dict": sd,
        "hyper_parameters": {
            "optimizer": functools.partial(torch.optim.AdamW, lr=2e-4, weight_decay=0.01),
            "scheduler": functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=None),
            "cfg": RunConfig(encoder_dim=32, block_depth=2, note="reference config object"),
            "hook": Executes(str(marker_dir / MARKER_NAME)),
        },
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(3)}},
                              "param_groups": [{"lr": 2e-4, "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 7, "_last_lr": [2e-4]}],
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.25)}},
    }, path)


def _inputs(F, A, seed=1):
    x = jax.random.normal(jax.random.key(seed), (2, 80, F))
    audio = jax.random.normal(jax.random.key(seed + 1), (2, 199, A))
    return x, jnp.array([0, 39]), audio


def _eps(model, x, t, audio):
    cond = model.condition(audio, frames=x.shape[1], deterministic=True) if _takes_frames(model) else \
        model.condition(audio, deterministic=True)
    return np.asarray(model.denoise(x, t, cond, deterministic=True))


def _takes_frames(model) -> bool:
    import inspect
    return "frames" in inspect.signature(model.condition).parameters


@pytest.fixture(scope="module")
def imported(prepared, tmp_path_factory):
    d = tmp_path_factory.mktemp("pg_run")
    cfg, F, A = prepared["cfg"], prepared["F"], prepared["A"]
    src = _source_model(cfg, F, A)
    ckpt = d / "persona_gestor.ckpt"
    lightning_checkpoint(ckpt, _state_dict(src, cfg), d)
    summary = import_reference(cfg, d / "run", ckpt=ckpt, data=cfg.data.out, log=lambda s: None)
    return {"dir": d, "run": d / "run", "src": src, "summary": summary, "ckpt": ckpt}


def test_import_executes_nothing_and_reports_what_it_skipped(imported):
    assert not (imported["dir"] / MARKER_NAME).exists()
    skipped = " ".join(imported["summary"]["skipped_objects"])
    assert "functools.partial" in skipped and "RunConfig" in skipped and "_write_marker" in skipped
    assert any("wavLMEncoder" in k for k in imported["summary"]["ignored_keys"])
    conv = json.loads((imported["run"] / "conversion.json").read_text())
    assert conv["sources"]["checkpoint"]["sha256"] and conv["step_table"]["rows"] == 40


def test_imported_run_equals_the_source_network(imported, prepared):
    from gesture_jax.training.inference import load_for_inference
    bundle = load_for_inference(imported["run"])
    assert bundle.config.model.null_cond is False and bundle.config.model.step_table_rows == 40
    x, t, audio = _inputs(prepared["F"], prepared["A"])
    np.testing.assert_array_equal(_eps(bundle.model, x, t, audio), _eps(imported["src"], x, t, audio))


def test_imported_step_table_is_the_reference_formula_by_torch(imported):
    """Exactly torch's DiffusionEmbedding table (not our numpy formula), stored with the run."""
    from gesture_jax.training.inference import load_for_inference
    table = np.asarray(load_for_inference(imported["run"]).model.time_embed.table[...])
    steps = torch.arange(40).unsqueeze(1)
    dims = torch.arange(8).unsqueeze(0)
    ref = steps * 10.0 ** (dims * 4.0 / 8)
    np.testing.assert_array_equal(table, torch.cat([torch.sin(ref), torch.cos(ref)], dim=1).numpy())


def test_generate_runs_on_the_imported_run(imported, prepared, tmp_path):
    wav = sorted((prepared["dir"] / "src").rglob("*test*.wav"))[0]
    run_module(["-m", "gesture_jax.generate", f"--workdir={imported['run']}", f"--audio={wav}",
                f"--out={tmp_path}", "--seed=0"])
    bvh = sorted(tmp_path.glob("*.bvh"))
    assert bvh and bvh[0].stat().st_size > 1000


# ----------------------------------------------------------------------------- clear errors
def test_file_without_state_dict_is_refused(tmp_path, prepared):
    p = tmp_path / "hparams_only.ckpt"
    torch.save({"epoch": 1, "hyper_parameters": {"lr": 1e-3}}, p)
    with pytest.raises(Exception, match=r"hparams_only\.ckpt.*state_dict"):
        import_reference(prepared["cfg"], tmp_path / "run", ckpt=p, data=prepared["cfg"].data.out)
    assert not (tmp_path / "run").exists()


def test_wrong_shape_names_the_key_and_both_shapes(tmp_path, prepared):
    cfg, F, A = prepared["cfg"], prepared["F"], prepared["A"]
    sd = _state_dict(_source_model(cfg, F, A, seed=2), cfg)
    sd["model.blocks.1.mlp.fc1.weight"] = torch.zeros(129, 32)
    p = tmp_path / "bad_shape.ckpt"
    lightning_checkpoint(p, sd, tmp_path)
    with pytest.raises(R.ReferenceMismatch, match=r"bad_shape\.ckpt: model\.blocks\.1\.mlp\.fc1\.weight has shape "
                                                   r"\(129, 32\).*expects \(128, 32\)"):
        import_reference(cfg, tmp_path / "run", ckpt=p, data=cfg.data.out)


def test_motion_width_must_match_the_data(tmp_path, prepared):
    cfg, F, A = prepared["cfg"], prepared["F"], prepared["A"]
    p = tmp_path / "trinity.ckpt"
    lightning_checkpoint(p, _state_dict(_source_model(cfg, F + 3, A), cfg), tmp_path)
    with pytest.raises(ImportReferenceError, match=rf"reads and writes {F + 3} motion features.*prepared with {F}"):
        import_reference(cfg, tmp_path / "run", ckpt=p, data=cfg.data.out)


def test_existing_run_is_not_overwritten(imported, prepared):
    before = (imported["run"] / "config.json").read_text()
    with pytest.raises(ImportReferenceError, match="already holds a run"):
        import_reference(prepared["cfg"], imported["run"], ckpt=imported["ckpt"], data=prepared["cfg"].data.out)
    assert (imported["run"] / "config.json").read_text() == before


def test_reference_call_signature_gives_the_networks_output(imported, prepared):
    """api.ReferenceNetwork: (noisy [B,T,F], step [B], WavLM [B,Ta,A] at 50 Hz) -> eps, as the
    reference's network; shapes the reference could not take are refused."""
    from gesture_jax.methods.persona_gestor.api import ReferenceCallError, ReferenceNetwork
    net = ReferenceNetwork.from_workdir(imported["run"])
    x, t, audio = _inputs(prepared["F"], prepared["A"], seed=4)
    assert net.audio_frames(80) == 199
    # jitted here, eager in _eps: XLA fuses differently (float32 rounding only)
    np.testing.assert_allclose(net(np.asarray(x), np.asarray(t), np.asarray(audio)),
                               _eps(imported["src"], x, t, audio), rtol=0, atol=2e-5)
    with pytest.raises(ReferenceCallError, match="makes 80 tokens from exactly 199"):
        net(np.asarray(x), np.asarray(t), np.asarray(audio)[:, :198])
    with pytest.raises(ReferenceCallError, match=r"step must lie in \[0, 40\)"):
        net(np.asarray(x), np.array([0, 40]), np.asarray(audio))


def test_reference_sampling_concatenates_windows_of_full_ddpm(imported, prepared):
    """--reference_sampling: DDPM over all steps, windows laid end to end (borders at k*W), the
    file's length kept; our options it does not have are refused before any audio work."""
    from gesture_jax import generate
    from gesture_jax.sampling.options import GenerateError, SamplingOptions
    from gesture_jax.audio.io import load_audio
    bundle = generate.load_bundle(imported["run"])
    wav = sorted((prepared["dir"] / "src").rglob("*test*.wav"))[0]
    wave = load_audio(wav, 16000)
    opts = SamplingOptions(reference_sampling=True, seed=3)
    r = generate.resolve_options(bundle, opts)
    assert (r["sampler"], r["steps"], r["overlap"]) == ("ddpm", 40, 0)
    bvhs, borders = generate.generate_motion(bundle, wave, opts, return_borders=True)
    n = int(wave.shape[0] * 20 // 16000)
    assert bvhs[0][0].frames.shape[0] == n and list(borders[0][0]) == list(range(80, n, 80))
    again = generate.generate_motion(bundle, wave, opts)
    np.testing.assert_array_equal(again[0][0].frames, bvhs[0][0].frames)
    for bad, what in (({"sampler": "ddim"}, "--sampler=ddim"), ({"overlap_s": 1.0}, "--overlap_s=1.0"),
                      ({"steps": 10}, "--steps=10")):
        with pytest.raises(GenerateError, match=what):
            generate.resolve_options(bundle, SamplingOptions(reference_sampling=True, **bad))


def test_command_line_reports_bad_files_in_one_line(tmp_path):
    import subprocess
    import sys
    p = tmp_path / "hparams_only.ckpt"
    torch.save({"epoch": 1, "hyper_parameters": {"lr": 1e-3}}, p)
    r = subprocess.run([sys.executable, "-m", "gesture_jax.methods.persona_gestor.import_reference",
                        "--config=configs/beat.py", f"--ckpt={p}", f"--workdir={tmp_path / 'run'}"],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().startswith("error:") and "hparams_only.ckpt" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_import_with_the_reference_pipeline_files_writes_its_skeleton(stand_ins, prepared, tmp_path):
    """--scalers: the reference's pickled pipeline and scaler (read as numbers) become the run's
    motion description; generated motion comes out in the reference's skeleton and feature order."""
    from gesture_jax import generate
    from gesture_jax.audio.io import load_audio
    from gesture_jax.methods.persona_gestor import reference_data as rd
    from test_pg_reference_data import SELECTION, make_motion, make_test_skeleton, write_reference

    import joblib
    from sklearn.preprocessing import StandardScaler

    sk = make_test_skeleton()
    made = write_reference(stand_ins, tmp_path / "ref", make_motion(sk, seed=1), SELECTION)
    # the reference's waveform scaler: one mean and scale per sample of a 4 s window (64,000)
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(3, 64000)) * np.linspace(0.02, 0.2, 64000) + 0.01
    wave_scaler = StandardScaler().fit(windows)
    joblib.dump(wave_scaler, made.dir / "input_scaler.sav")
    ref_pipe = rd.load_reference_motion_pipeline(*rd.find_reference_files(made.dir))
    cfg, A = prepared["cfg"], prepared["A"]
    F = len(ref_pipe.feature_names)
    ckpt = tmp_path / "pg.ckpt"
    lightning_checkpoint(ckpt, _state_dict(_source_model(cfg, F, A, seed=5), cfg), tmp_path)
    summary = import_reference(cfg, tmp_path / "run", ckpt=ckpt, scalers=made.dir, log=lambda s: None)
    assert "data_pipe_20fps.sav" in summary["motion_description"]
    bundle = generate.load_bundle(tmp_path / "run")
    assert bundle.pipeline.feature_names == ref_pipe.feature_names
    wav = sorted((prepared["dir"] / "src").rglob("*test*.wav"))[0]
    bvh = generate.generate_motion(bundle, load_audio(wav, 16000), seed=0, sampler="ddim", steps=5)[0][0]
    assert bvh.skeleton.names == sk.names and bvh.skeleton.channels == sk.channels
    assert np.isfinite(bvh.frames).all()
    with pytest.raises(Exception, match="motion features, but the model has"):
        import_reference(cfg, tmp_path / "run2", ckpt=_wide_ckpt(cfg, F + 1, A, tmp_path), scalers=made.dir)

    # --reference_sampling: each 4 s window scaled sample by sample and encoded on its own
    from gesture_jax.audio.features import make_extractor
    from gesture_jax.methods.persona_gestor import reference_sampling as rs
    mean, scale = rs.input_scaler(bundle)
    np.testing.assert_array_equal(scale, wave_scaler.scale_.astype(np.float32))
    wave = load_audio(wav, 16000)                                   # 6 s: windows [0, 4) s and [4, 8) s
    ext = make_extractor(bundle.config.audio, 20.0)
    feats, n = rs.window_features(bundle, wave, ext, (mean, scale))
    assert n == 120 and feats.shape[0] == 400
    for k in range(2):
        seg = np.pad(wave[k * 64000:(k + 1) * 64000], (0, max(0, (k + 1) * 64000 - wave.shape[0])))
        np.testing.assert_allclose(feats[200 * k:200 * k + 199], ext.native((seg - mean) / scale)[:199],
                                   rtol=0, atol=1e-5)
    assert not np.allclose(feats[:199], ext.native(wave[:64000])[:199], atol=1e-3)   # the scaler matters
    out = generate.generate_motion(bundle, wave, reference_sampling=True, seed=0)[0][0]
    from gesture_jax.sampling.options import SamplingOptions
    direct = rs.sample(bundle, [feats], SamplingOptions(reference_sampling=True, seed=0), progress=False)[0][0]
    assert out.frames.shape[0] == 120 and np.isfinite(out.frames).all()
    np.testing.assert_allclose(out.frames, bundle.pipeline.inverse(direct[:120]).frames, atol=1e-6)


def _wide_ckpt(cfg, F, A, d):
    p = d / f"wide{F}.ckpt"
    lightning_checkpoint(p, _state_dict(_source_model(cfg, F, A, seed=6), cfg), d)
    return p


def test_data_with_resampled_audio_is_refused(prepared, imported, tmp_path):
    """The reference reads WavLM's 50 Hz frames: a dataset prepared at the motion rate would feed
    the imported network resampled features, so it is refused with the setting to change."""
    m = json.loads((Path(prepared["cfg"].data.out) / "manifest.json").read_text())
    assert m["audio"]["rate"] == 50.0
    m["audio"]["rate"] = 20.0
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ImportReferenceError, match="at 20 frames/s.*native_rate=True"):
        import_reference(prepared["cfg"], tmp_path / "run", ckpt=imported["ckpt"], data=tmp_path / "data")


def test_evaluate_scores_the_imported_run(imported, prepared, tmp_path):
    """evaluate treats the imported run like one trained here (held-out file, FGD/BC/...)."""
    from gesture_jax import evaluate
    cfg = prepared["cfg"].copy_and_resolve_references()
    with cfg.unlocked():
        cfg.eval.fgd_ae_steps, cfg.eval.fgd_ae_hidden, cfg.eval.fgd_ae_latent = 20, 8, 4
        cfg.eval.bc_mask_frames = 20
    ae_dir = evaluate.train_fgd_ae(cfg, None, str(tmp_path / "fgd_ae"))
    r = evaluate.evaluate_run(str(imported["run"]), tmp_path / "eval", fgd_ae=str(ae_dir), sampler="ddim", steps=2,
                              eval_cfg=cfg.eval)
    assert r["checkpoint_step"] == 0 and len(r["files"]) == 1
    assert np.isfinite(r["fgd"]) and r["summary"]["model"]["fgd_raw"] > 0


def test_a_motion_description_must_be_chosen(prepared, imported, tmp_path):
    """No silent default to the config's prepared data: its feature order is ours, not the authors'."""
    with pytest.raises(ImportReferenceError, match="no motion description: give --scalers"):
        import_reference(prepared["cfg"], tmp_path / "run", ckpt=imported["ckpt"])
    assert not (tmp_path / "run").exists()


def test_prepared_data_is_announced_as_our_feature_order(imported):
    assert any("not the reference's PyMO columns" in n for n in imported["summary"]["notes"])


def test_tensor_of_the_wrong_rank_is_named(tmp_path, prepared):
    cfg, F, A = prepared["cfg"], prepared["F"], prepared["A"]
    sd = _state_dict(_source_model(cfg, F, A, seed=2), cfg)
    sd["model.down_sampler.1.weight"] = sd["model.down_sampler.1.weight"][:, :, 0]
    with pytest.raises(R.ReferenceMismatch, match=r"down_sampler\.1\.weight has shape \(32, 32\), expected a 3-d"):
        R.read_reference(OrderedDict((k, v.numpy()) for k, v in sd.items()), "rank.ckpt")


def test_stream_and_reference_sampling_together_is_one_line(imported, tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "gesture_jax.generate", f"--workdir={imported['run']}",
                        "--audio=x.wav", f"--out={tmp_path}", "--stream", "--reference_sampling"],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2 and "choose one" in r.stderr and "Traceback" not in r.stderr


def test_training_continues_from_an_imported_run(imported, tmp_path):
    """The imported checkpoint holds weights only (no optimizer state: 2x the weights at the 934M
    shape); train resumes from it with a fresh optimizer and starts from the imported weights."""
    import shutil

    from gesture_jax.training import inference, loop
    run = tmp_path / "run"
    shutil.copytree(imported["run"], run)
    items = {p.name for p in (run / "checkpoints" / "0").iterdir() if p.is_dir()}
    assert {"params", "model_state", "meta"} <= items and "opt_state" not in items
    cfg = inference.load_config(run)
    with cfg.unlocked():
        cfg.train.num_steps, cfg.train.checkpoint_every, cfg.train.batch_size = 1, 1, 2
        cfg.train.eval_every, cfg.train.log_every = 0, 1
    loop.train(cfg, run, progress=False)
    after = inference.load_for_inference(run)
    before = inference.load_for_inference(imported["run"])
    assert after.step == 1
    w0 = np.asarray(before.model.final.out.kernel[...])
    w1 = np.asarray(after.model.final.out.kernel[...])
    assert 0 < np.abs(w1 - w0).max() < 0.05       # one AdamW step away from the imported weights
