"""WavLM features at their native 50 Hz (audio.native_rate): prepare -> records -> the model's
conditioning, unresampled; the windowing that keeps audio and motion on the same seconds; record
and manifest shapes; and the motion-rate path (mel) unchanged.

A tiny random-weight WavLM (real conv geometry: 400-sample frames, 320 hop) encodes a synthetic
corpus; the demo window (4 s = 80 motion frames at 20 fps) then holds 199 WavLM frames, and a
fuzzy extractor shaped like the reference's (down-sampler stride 2, kernel 41: (80-1)*2 + 41 = 199,
as (400-1)*2 + 201 = 999) reads exactly those.
"""
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from flax import nnx

from configs import demo
from data_prep import prepare, synthetic
from gesture_jax.audio.frames import audio_frames_for, audio_start, audio_window, motion_frames_covered
from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import pipeline, records, shards
from gesture_jax.models import fuzzy as fuzzy_lib
from gesture_jax.models.denoiser import build_denoiser
from wavlm_testlib import random_flax_model, tiny_config

FPS, RATE, T = 20.0, 50.0, 80   # demo window: 80 motion frames <-> 199 WavLM frames
TA = 199


@pytest.fixture(scope="module")
def wavlm_ckpt(tmp_path_factory):
    from gesture_jax.audio.wavlm.checkpoint import save_checkpoint
    cfg = tiny_config(num_hidden_layers=2)
    d = tmp_path_factory.mktemp("wavlm_tiny")
    save_checkpoint(d, cfg, nnx.to_pure_dict(nnx.state(random_flax_model(cfg, seed=0))), source={"kind": "test"})
    return d


def _native_config(root: Path, out: Path, ckpt: Path):
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out, cfg.data.num_workers = str(root), str(out), 1
        cfg.audio.feature, cfg.audio.wavlm_dir, cfg.audio.layer = "wavlm", str(ckpt), 2
        cfg.audio.native_rate = True
        cfg.data.stride_s = 1.05  # 21 frames: records also start at odd motion frames (21 * 2.5 = 52.5)
        cfg.model.fuzzy.audio_fps, cfg.model.fuzzy.down_kernel, cfg.model.fuzzy.down_stride = RATE, 41, 2
    return cfg


@pytest.fixture(scope="module")
def native_data(wavlm_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("native")
    synthetic.generate_corpus(tmp / "src", num_train=2, num_test=1, duration_s=6.0, seed=3)
    cfg = _native_config(tmp / "src", tmp / "out", wavlm_ckpt)
    return cfg, prepare.run_prepare(cfg, progress=False)


def _split_records(cfg, m, split: str) -> list[dict]:
    return [records.decode_window(r) for s in m["splits"][split]["shards"]
            for r in shards.read_records(Path(cfg.data.out) / s["path"])]


def _file_features(cfg, file_id: str) -> np.ndarray:
    """The extractor's native frames of a whole source file (what prepare cut the records from)."""
    from gesture_jax.audio.features import make_extractor
    from gesture_jax.audio.io import load_audio
    ext = make_extractor(cfg.audio, cfg.data.fps)
    assert ext.rate == RATE
    return np.asarray(ext(load_audio(Path(cfg.data.root) / f"{file_id}.wav", sr=16000)), np.float32)


# ------------------------------------------------------------------ prepare -> records
def test_records_hold_distinct_50hz_frames_of_the_window_span(native_data):
    cfg, m = native_data
    assert m["audio"]["rate"] == RATE and m["record_schema_version"] == records.SCHEMA_VERSION == 2
    assert manifest_lib.record_shapes(m) == ((T, m["motion"]["feature_dim"]), (TA, m["audio"]["dim"]))
    recs = _split_records(cfg, m, "train")
    assert sorted({r["start_frame"] for r in recs}) == [0, 21]  # 6 s = 120 frames: windows at 0 and 21
    feats = {fid: _file_features(cfg, fid) for fid in {r["file_id"] for r in recs}}
    for r in recs:
        a0 = int(np.floor(r["start_frame"] * RATE / FPS))  # 0 -> 0, 21 -> 52 (52.5 floored)
        assert r["audio"].shape == (TA, m["audio"]["dim"]) and r["motion"].shape[0] == T
        np.testing.assert_array_equal(r["audio"], feats[r["file_id"]][a0:a0 + TA].astype(np.float16))
        assert np.unique(r["audio"], axis=0).shape[0] == TA  # every 50 Hz frame distinct


# ------------------------------------------------------------------ records -> conditioning
def test_every_50hz_frame_reaches_the_down_sampler_unresampled(native_data, monkeypatch):
    cfg, m = native_data
    info = pipeline.dataset_info(cfg)
    assert (info["audio_fps"], info["audio_frames"], info["window_frames"]) == (RATE, TA, T)
    batch = next(pipeline.make_iterator(cfg, "train", batch_size=2, seed=0, process_index=0, process_count=1,
                                        shuffle=False))
    recs = _split_records(cfg, m, "train")[:2]
    np.testing.assert_array_equal(batch["audio"], np.stack([r["audio"].astype(np.float32) for r in recs]))
    audio = jnp.asarray(batch["audio"])  # [2, 199, A]
    model = build_denoiser(cfg.model, info["motion_dim"], info["audio_dim"], T, nnx.Rngs(0), fps=FPS,
                           audio_rate=info["audio_fps"])
    w = jax.random.normal(jax.random.key(1), (2, T, int(cfg.model.dim)))
    grad = jax.grad(lambda a: jnp.sum(model.condition(a, deterministic=True, frames=T) * w))(audio)
    assert bool((jnp.abs(grad).sum(-1) > 0).all()), "some 50 Hz frame does not reach the conditioning"

    seen = []
    real = fuzzy_lib.conv_plus_constant
    monkeypatch.setattr(fuzzy_lib, "conv_plus_constant", lambda x, *a: (seen.append(np.asarray(x)), real(x, *a))[1])
    cond = model.condition(audio, deterministic=True, frames=T)
    assert cond.shape == (2, T, int(cfg.model.dim))
    np.testing.assert_array_equal(seen[0], batch["audio"])  # the down-sampler reads the records' frames as they are
    # the training call (x_t's frames) and a model not told the rate (inferred from 199 = N(80)) agree
    inferred = build_denoiser(cfg.model, info["motion_dim"], info["audio_dim"], T, nnx.Rngs(0), fps=FPS)
    np.testing.assert_array_equal(inferred.condition(audio, deterministic=True), cond)
    np.testing.assert_array_equal(seen[1], batch["audio"])


def test_motion_rate_path_gives_the_old_numbers(monkeypatch):
    """Mel (motion-rate input) under a 50 Hz extractor: resampled to N(T) frames at j/50, exactly what
    feeding those frames at 50 Hz gives; with audio_fps == fps (demo) the input is read as it is."""
    kw = dict(style_kernel=40, style_dilation=2, down_kernel=41, down_stride=2, dropout=0.0, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).standard_normal((2, T, 8)).astype(np.float32)
    pos = np.arange(TA) * FPS / RATE                                    # source frame of 50 Hz frame j
    ref = np.stack([np.stack([np.interp(pos, np.arange(T), x[b, :, c]) for c in range(8)], -1) for b in range(2)])
    for input_fps in (None, FPS):  # not told the rate (motion rate found from the length), or told it
        fz = fuzzy_lib.FuzzyFeatureExtractor(8, 16, audio_fps=RATE, fps=FPS, input_fps=input_fps, **dict(kw, rngs=nnx.Rngs(0)))
        native = fuzzy_lib.FuzzyFeatureExtractor(8, 16, audio_fps=RATE, fps=FPS, input_fps=RATE, **dict(kw, rngs=nnx.Rngs(0)))
        np.testing.assert_allclose(fz(jnp.asarray(x), deterministic=True),
                                   native(jnp.asarray(ref, jnp.float32), deterministic=True, frames=T),
                                   rtol=1e-5, atol=1e-5)
    seen = []
    real = fuzzy_lib.conv_plus_constant
    monkeypatch.setattr(fuzzy_lib, "conv_plus_constant", lambda z, *a: (seen.append(np.asarray(z)), real(z, *a))[1])
    demo_fz = fuzzy_lib.FuzzyFeatureExtractor(8, 16, style_kernel=40, style_dilation=2, down_kernel=9, down_stride=1,
                                              audio_fps=FPS, fps=FPS, dropout=0.0, rngs=nnx.Rngs(0))
    demo_fz(jnp.asarray(x), deterministic=True)
    np.testing.assert_array_equal(seen[0][:, 4:-4], x)  # centred in T-1+9 frames, edges repeated, not resampled
    unknown = fuzzy_lib.FuzzyFeatureExtractor(8, 16, audio_fps=RATE, fps=FPS, **kw)
    with pytest.raises(ValueError, match=r"expected 80 \(at 20 frames/s\) or 199 \(at 50 frames/s\)"):
        unknown(jnp.asarray(x[:, :79]), deterministic=True, frames=T)  # neither the motion rate nor 50 Hz


# ------------------------------------------------------------------ windowing
def test_audio_window_covers_the_motion_window_seconds():
    assert audio_window(0, 400, FPS, RATE) == (0, 999)  # the reference's 20 s window
    assert audio_window(21, 80, FPS, FPS) == (21, 80)   # motion rate: the motion window itself
    for s in range(0, 90):
        for n in (1, 2, 7, 40, 80, 400):
            a0, na = audio_window(s, n, FPS, RATE)
            assert na == audio_frames_for(n, FPS, RATE) == int(np.floor(n * 2.5 - 1.25)) + 1
            assert a0 / RATE <= s / FPS < (a0 + 1) / RATE            # starts within one 20 ms hop of the window
            assert (a0 + na - 1) / RATE + 0.025 <= (s + n) / FPS + 1e-9  # its last frame's 25 ms ends inside it
            # inside the audio of any span holding it (records, files): crops never read past their audio
            for s0 in range(max(0, s - 3), s + 1):
                assert a0 - audio_start(s0, FPS, RATE) + na <= audio_frames_for(s + n - s0, FPS, RATE) + 1
            assert a0 + na <= audio_frames_for(s + n, FPS, RATE)
        assert motion_frames_covered(audio_frames_for(s + 1, FPS, RATE), FPS, RATE) == s + 1


def test_windows_are_cut_alike_by_prepare_sampling_and_crops(native_data):
    from gesture_jax.sampling import long_audio
    cfg, m = native_data
    rec = [r for r in _split_records(cfg, m, "train") if r["start_frame"] == 0][0]
    feats = _file_features(cfg, rec["file_id"])                      # [299, A]: 6 s at 50 Hz
    n_motion = motion_frames_covered(feats.shape[0], FPS, RATE)
    assert n_motion == 120
    plan = long_audio.plan_windows([n_motion], T, 41)                 # starts 0, 39 (odd), 40 (end-aligned)
    assert list(plan.local_starts) == [0, 39, 40]
    got = long_audio.gather_windows([feats], plan, TA, RATE / FPS)
    for k, s in enumerate(plan.local_starts):
        a0 = audio_start(int(s), FPS, RATE)                           # 0, 97, 100
        np.testing.assert_array_equal(got[k], feats[a0:a0 + TA])
    np.testing.assert_array_equal(got[0].astype(np.float16), rec["audio"])  # sampling window 0 == record
    crop = pipeline.RandomCrop(40, FPS, RATE)
    x = {"motion": np.asarray(rec["motion"]), "audio": np.asarray(rec["audio"], np.float32)}
    for seed in range(6):
        c = int(np.random.default_rng(seed).integers(0, T - 40 + 1))
        out = crop.random_map(x, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["motion"], x["motion"][c:c + 40])
        a0 = audio_start(c, FPS, RATE)
        assert out["audio"].shape[0] == audio_frames_for(40, FPS, RATE) == 99
        np.testing.assert_array_equal(out["audio"], feats[a0:a0 + 99].astype(np.float16).astype(np.float32))


def test_generate_features_at_the_native_rate(native_data):
    from gesture_jax import generate as G
    from gesture_jax.audio.features import make_extractor
    cfg, m = native_data
    bundle = SimpleNamespace(config=cfg, manifest=m)
    ext = make_extractor(cfg.audio, FPS)
    G._check_extractor(bundle, ext)
    wave = np.random.default_rng(0).standard_normal(6 * 16000).astype(np.float32) * 0.1
    feats, n = G.audio_features(bundle, wave, ext)
    assert n == 120 and feats.shape[0] == audio_frames_for(120, FPS, RATE) == 299
    np.testing.assert_array_equal(feats, ext(wave)[:299])
    short, n = G.audio_features(bundle, wave[:3 * 16000], ext)     # shorter than a window: padded to 80 frames
    assert n == 60 and short.shape[0] == TA
    with pytest.raises(G.GenerateError, match="at 20 frames/s but the run's config builds them at 50"):
        G._check_extractor(SimpleNamespace(config=cfg, manifest={**m, "audio": {**m["audio"], "rate": FPS}}), ext)


# ------------------------------------------------------------------ records / manifest validation
def test_record_shapes_are_validated_at_the_audio_rate(tmp_path):
    A, F = 4, 3
    w = {"motion": np.zeros((T, F)), "audio": np.zeros((TA, A)), "file_id": "f", "start_frame": 21, "mirrored": False}
    d = records.decode_window(records.encode_window(w, audio_frames=TA))
    assert d["audio"].shape == (TA, A) and d["start_frame"] == 21
    with pytest.raises(records.RecordError, match="must have 199"):
        records.encode_window({**w, "audio": np.zeros((TA - 1, A))}, audio_frames=TA)
    with pytest.raises(records.RecordError, match="must have 80"):
        records.encode_window(w)  # no audio_frames: the motion rate, one audio frame per motion frame
    old = msgpack.packb({"v": 1, "motion": records._pack_array(np.zeros((T, F), np.float32)),
                         "audio": records._pack_array(np.zeros((T, A), np.float16)), "file_id": "f",
                         "start_frame": 0, "mirrored": False}, use_bin_type=True)
    assert records.decode_window(old)["audio"].shape == (T, A)  # records written before the change still read

    cfg = _native_config(tmp_path / "src", tmp_path / "out", tmp_path / "ckpt")
    kw = dict(feature_names=[f"c{i}" for i in range(F)], audio_feature="wavlm", audio_dim=A, splits={},
              skipped=[], source_root=str(tmp_path))
    native = manifest_lib.new_manifest(cfg, audio_rate=RATE, **kw)
    assert native["audio"]["rate"] == RATE
    assert manifest_lib.record_shapes(native) == ((T, F), (TA, A))
    manifest_lib.validate_against_config(native, cfg, tmp_path)
    motion_rate = manifest_lib.new_manifest(cfg, **kw)
    assert manifest_lib.record_shapes(motion_rate) == ((T, F), (T, A))
    with pytest.raises(manifest_lib.ManifestError, match="audio rate"):
        manifest_lib.validate_against_config(motion_rate, cfg, tmp_path)  # config asks for 50 Hz, data is at 20
    with cfg.unlocked():
        cfg.audio.native_rate = False
    manifest_lib.validate_against_config(motion_rate, cfg, tmp_path)
    with pytest.raises(manifest_lib.ManifestError, match="audio rate"):
        manifest_lib.validate_against_config(native, cfg, tmp_path)
    raw = records.encode_window({**w, "audio": np.zeros((T, A))})   # a motion-rate record under a 50 Hz manifest
    with pytest.raises(shards.ShardError, match=r"\(199, 4\)"):
        manifest_lib.checked_window(raw, shard=tmp_path / "x", record=0,
                                    shapes=manifest_lib.record_shapes(native), fix="")
    # a manifest written before audio.rate existed (record schema 1) loads as motion-rate data
    legacy = {k: v for k, v in motion_rate.items()}
    legacy["audio"] = {k: v for k, v in motion_rate["audio"].items() if k != "rate"}
    legacy["record_schema_version"] = 1
    manifest_lib.save_manifest(tmp_path, legacy)
    back = manifest_lib.read_manifest(tmp_path)
    assert manifest_lib.audio_rate(back) == FPS and manifest_lib.record_shapes(back) == ((T, F), (T, A))


def test_fingerprint_changes_with_the_audio_rate(tmp_path):
    cfg = _native_config(tmp_path / "src", tmp_path / "out", tmp_path / "ckpt")
    fp = prepare.fingerprint(cfg, {"train": []})
    assert fp["record_schema_version"] == 2 and fp["audio"]["native_rate"] is True
    with cfg.unlocked():
        cfg.audio.native_rate = False
    assert prepare.fingerprint(cfg, {"train": []}) != fp


def test_motion_rate_methods_refuse_native_audio(tmp_path):
    from configs import kucherenko_demo
    from gesture_jax.methods import MethodError, get_method
    cfg = kucherenko_demo.get_config()
    assert cfg.audio.native_rate is False
    man = {"fps": FPS, "window_frames": 160, "motion": {"representation": "positions"}, "audio": {"rate": RATE}}
    with pytest.raises(MethodError, match="50 frames/s"):
        get_method("kucherenko").check_data(cfg, man)
    get_method("kucherenko").check_data(cfg, {**man, "audio": {"rate": FPS}})


# ------------------------------------------------------------------ sampling and streaming
class FrameStats:
    """A native-rate 'encoder' without context: frame j = statistics of samples [320j, 320j + 400),
    WavLM's frame grid, so any cut of the waveform on that grid gives the whole file's frames."""
    name, dim, fps, rate = "wavlm", 4, FPS, RATE

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        n = (wave.shape[0] - 400) // 320 + 1
        w = np.asarray(wave, np.float32)[np.arange(n)[:, None] * 320 + np.arange(400)[None, :]]
        return np.stack([w.mean(1), w.std(1), w.max(1), w.min(1)], 1).astype(np.float32)


def test_sampling_and_streaming_read_the_native_frames_of_each_window(native_data):
    from gesture_jax import generate as G
    from gesture_jax.motion.representations import load_pipeline
    from gesture_jax.sampling import streaming as S
    from gesture_jax.sampling import windowed
    cfg, m = native_data
    cfg = type(cfg)(cfg.to_dict())
    with cfg.unlocked():
        cfg.model.depth, cfg.model.dim, cfg.model.heads, cfg.diffusion.num_steps = 1, 32, 2, 20
    pipe = load_pipeline(Path(cfg.data.out) / "motion_pipeline")
    model = build_denoiser(cfg.model, pipe.feature_dim, FrameStats.dim, T, nnx.Rngs(0), fps=FPS)  # rate inferred
    bundle = SimpleNamespace(config=cfg, model=model, pipeline=pipe, step=0,
                             manifest={**m, "audio": {**m["audio"], "dim": FrameStats.dim}})
    ext = FrameStats()
    wave = (0.1 * np.random.default_rng(5).standard_normal(int(7.3 * 16000))).astype(np.float32)
    offline = ext(wave)                                                   # 364 frames = N(146)
    feats, n = G.audio_features(bundle, wave, ext)
    assert n == 146 and feats.shape[0] == audio_frames_for(146, FPS, RATE) == 364
    out, plan = windowed.sample_timelines(bundle, [feats], G.SamplingOptions(sampler="ddim", steps=2), progress=False)
    assert out.shape == (146, pipe.feature_dim) and np.isfinite(out).all()

    S._EXTRACTORS[id(bundle)] = (bundle, ext)
    st = S.MotionStreamer(bundle, lookahead_s=0.3, opts=G.SamplingOptions(sampler="ddim", steps=1))
    seen, orig = [], st._features
    st._features = lambda w0, end, final: seen.append((w0, st.samples, orig(w0, end, final))) or seen[-1][2]
    frames = sum(b.shape[0] for c in S.chunked(wave, 0.65) for b in st.push(c)) + sum(b.shape[0] for b in st.flush())
    assert frames == 146 and len(seen) > 2 and any(w0 % 2 for w0, _, _ in seen)  # odd starts: 10 ms off the grid
    for w0, samples, a in seen:
        a0 = audio_start(w0, FPS, RATE)
        arrived = min(TA, max(0, (samples - 400) // 320 + 1 - a0))  # frames whose 400 samples were in
        assert a.shape == (TA, FrameStats.dim) and arrived > 0
        np.testing.assert_array_equal(a[:arrived], offline[a0:a0 + arrived])
