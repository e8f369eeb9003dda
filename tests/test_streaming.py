"""Streaming generation (gesture_jax.generate.stream, sampling/streaming.py): when blocks come out,
how many frames, what the features are, bad chunks, and no seams at the borders between blocks.

Timing, frame-count, feature and bad-input tests use the demo-shaped denoiser with random
weights (as tests/test_generate.py); the seam and CLI tests use the trained fixture model
`demo_run` of tests/conftest.py (the demo config trained for 800 steps on a small synthetic
corpus, once per session; GESTURE_JAX_DEMO_RUN=runs/demo/run uses the full demo model instead).
Latency and real-time factor are measured by bench/stream.py, not here.
"""
import math
import types

import numpy as np
import pytest

from gesture_jax import generate as G
from gesture_jax.errors import UserError, is_user_error, one_line
from gesture_jax.sampling import streaming as S
from gesture_jax.eval.kinematic import border_vs_elsewhere
from test_generate import bundle  # noqa: F401  (fixture)
from test_generate_trained import _positions

FPS = 20
SR = 16000


@pytest.fixture(scope="module")
def rbundle(bundle):
    """Demo-shaped Persona-Gestor denoiser with random weights (1 block, 20 diffusion steps):
    tests/test_generate.py's bundle."""
    return bundle


def _wave(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


class Recorder:
    """Chunk iterator that records how much audio the stream had consumed when each block came out,
    and how many frames were out whenever the stream asked for the next chunk."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.consumed = 0
        self.exhausted = False
        self.out = 0  # frames the consumer has received
        self.on_pull: list[tuple[int, int]] = []  # (samples consumed so far, frames out) at each pull

    def __iter__(self):
        for c in self.chunks:
            self.on_pull.append((self.consumed, self.out))
            self.consumed += len(c)
            yield c
        self.on_pull.append((self.consumed, self.out))
        self.exhausted = True


def _irregular(wave, seed):
    """Chunks of random sizes between 1 ms and 1.3 s (a jittery microphone driver)."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < wave.shape[0]:
        n = int(rng.integers(16, int(1.3 * SR)))
        out.append(wave[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("seconds,chunk_s,lookahead_s", [
    (5.37, 0.1, 0.5), (5.37, 0.37, 0.3), (5.37, 1.0, 0.0), (9.05, 3.0, 1.0),  # chunk longer than the look-ahead
    (2.3, 0.5, 0.5), (5.37, None, 0.25)])  # shorter than one model window; irregular chunk sizes
def test_blocks_come_out_exactly_when_their_audio_and_lookahead_are_in(rbundle, seconds, chunk_s, lookahead_s):
    wave = _wave(seconds, seed=1)
    chunks = _irregular(wave, 3) if chunk_s is None else list(S.chunked(wave, chunk_s))
    rec = Recorder(chunks)
    blocks = []
    for b in G.stream(rbundle, rec, lookahead_s=lookahead_s, sampler="dpm-solver++", steps=2):
        start = rec.out
        stop = start + b.shape[0]
        assert b.ndim == 2 and b.shape[0] >= 1 and b.shape[1] == rbundle.model.motion_dim
        if not rec.exhausted:  # frame k (ending at (k+1)/fps) waits for audio to its end + look-ahead
            assert stop / FPS + lookahead_s <= rec.consumed / SR + 1e-9, (start, stop, rec.consumed)
        rec.out = stop
        blocks.append(b)
    # ... and nothing waits longer: whenever the stream asks for more audio, every due frame is out
    for consumed, out in rec.on_pull[1:]:
        due = max(0, math.floor((consumed / SR - lookahead_s) * FPS + 1e-9))
        assert out == min(due, math.floor(consumed * FPS / SR)), (consumed, out, due)
    motion = np.concatenate(blocks)
    assert motion.shape == (math.floor(seconds * FPS + 1e-9), rbundle.model.motion_dim)
    assert np.isfinite(motion).all()
    bvh = rbundle.pipeline.inverse(motion)  # the caller's BVH, as generate_motion makes it
    assert bvh.num_frames == motion.shape[0] and bvh.fps == pytest.approx(FPS)


def test_stream_is_reproducible_and_the_seed_matters(rbundle):
    wave = _wave(5.0, seed=2)

    def run(seed):
        return np.concatenate(list(G.stream(rbundle, S.chunked(wave, 0.4), steps=2, sampler="ddim", seed=seed)))

    a, b = run(0), run(0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, run(1))


def test_window_features_equal_offline_features_once_final(rbundle):
    """Streaming recomputes mel features over the buffered audio and caches the final ones;
    every frame whose STFT window has fully arrived must equal generate.audio_features of the
    whole clip (and at the end of the stream, every frame)."""
    wave = _wave(9.3, seed=4)
    offline, n = G.audio_features(rbundle, wave)
    st = S.MotionStreamer(rbundle, lookahead_s=0.3, opts=G.SamplingOptions(sampler="dpm-solver++", steps=1))
    seen = []
    orig = st._features

    def spy(w0, end, final):
        a = orig(w0, end, final)
        seen.append((w0, end, a, st.samples, final))
        return a

    st._features = spy
    for c in _irregular(wave, 5):
        st.push(c)
    st.flush()
    reach = S._extractor_reach(st.extractor)
    checked = 0
    for w0, end, a, samples, final in seen:
        last = n if final else min(end, (samples - reach) // (SR // FPS) + 1)
        k = np.arange(w0, min(last, n))
        np.testing.assert_allclose(a[k - w0], offline[k], atol=1e-4, rtol=0)
        checked += k.size
    assert checked > n


def test_bad_chunks_and_requests_are_one_line_user_errors(rbundle):
    def first_error(chunks, **kw):
        with pytest.raises(UserError) as ei:
            for _ in G.stream(rbundle, chunks, steps=2, **kw):
                pass
        assert is_user_error(ei.value) and "\n" not in one_line(ei.value)
        return str(ei.value)

    ok = _wave(1.0)
    bad = ok.copy()
    bad[100] = np.nan
    assert "chunk 2" in first_error([ok, ok, bad]) and "NaN" in first_error([bad])
    assert "mono" in first_error([np.stack([ok, ok], axis=1)])  # stereo [S, 2]
    assert "mono" in first_error([np.stack([ok, ok])])  # stereo [2, S]
    assert "16000 Hz" in first_error([(ok, 44100)])
    assert "int16" in first_error([(ok * 32767).astype(np.int16)])
    with pytest.raises(UserError, match="16000 Hz"):
        list(S.stream(rbundle, [ok], opts=G.SamplingOptions(steps=2), sample_rate=44100))
    for kw, msg in ((dict(lookahead_s=3.5), "lookahead"), (dict(lookahead_s=-1.0), "lookahead"),
                    (dict(num_samples=2), "one sample"), (dict(overlap_s=1.0), "overlap_s"),
                    (dict(guidance=2.0), "guidance"), (dict(impose="sideways"), "impose")):
        with pytest.raises(UserError, match=msg):
            G.stream(rbundle, [ok], steps=2, **kw)  # options fail at the call, before any audio is read


def test_a_method_without_a_window_denoiser_is_a_clear_error(rbundle):
    cfg = rbundle.config.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.method = "kucherenko"
    ka = types.SimpleNamespace(config=cfg, model=types.SimpleNamespace(speech=None), pipeline=None, manifest={})
    with pytest.raises(UserError, match="'kucherenko' cannot stream") as ei:
        G.stream(ka, [_wave(1.0)])
    assert "\n" not in one_line(ei.value)


def test_streaming_bvh_writer_matches_the_offline_bvh(rbundle, tmp_path):
    from gesture_jax.motion.bvh import format_bvh, read_bvh

    rng = np.random.default_rng(0)
    motion = rng.standard_normal((57, rbundle.model.motion_dim)).astype(np.float32)
    motion[:, :6] = 40.0 * np.abs(motion[:, :6])  # root channels first: walk and turn far, so the anchor matters
    w = G._StreamingBVHWriter(tmp_path / "s.bvh", rbundle.pipeline)
    w.ANCHOR_EVERY = 5  # re-anchor often: the root must continue across every anchor
    for a, b in ((0, 3), (3, 4), (4, 30), (30, 31), (31, 40), (40, 57)):
        w.add(a, motion[a:b])
    w.close()
    got = read_bvh(tmp_path / "s.bvh")
    want = rbundle.pipeline.inverse(motion)
    assert got.num_frames == 57 and got.frame_time == want.frame_time
    np.testing.assert_allclose(got.frames, want.frames, atol=2e-6, rtol=0)  # written with 6 decimals
    assert np.ptp(want.frames[:, [0, 2]], axis=0).max() > 10.0 and np.ptp(want.frames[:, 3:6]) > 30.0  # moved, turned
    head = format_bvh(want).split("MOTION")[0]
    assert (tmp_path / "s.bvh").read_text().startswith(head + "MOTION\nFrames: 57   ")


# ------------------------------------------------------------------ trained model: seams, CLI

@pytest.fixture(scope="module")
def tbundle(demo_run):
    return G.load_bundle(demo_run["workdir"])


SEAM_SEEDS = (0, 1, 2)


def _stream_seams(bundle, waves, chunk_s, impose, lookahead_s=0.5):
    pos, borders = [], []
    for seed in SEAM_SEEDS:
        for w in waves:
            rec = []
            blocks = list(S.stream(bundle, S.chunked(w, chunk_s), lookahead_s=lookahead_s, impose=impose,
                                   opts=G.SamplingOptions(seed=seed, smooth_sigma=0.0), streamer_out=rec))
            motion = np.concatenate(blocks)
            assert motion.shape[0] == math.floor(w.shape[0] * FPS / SR)
            pos.append(_positions(bundle.pipeline.inverse(motion)))
            borders.append(np.asarray([r.start for r in rec[0].records[1:]]))
    return pos, borders


def test_no_seams_between_emitted_blocks(tbundle, demo_run):
    """The long-audio seam criterion on the borders between emitted blocks (2 held-out clips x 3
    seeds, DPM-Solver++-10, look-ahead 0.5 s, no smoothing): p99 joint speed at block borders /
    elsewhere <= 1.1 for 0.5 s chunks and 0.1 s chunks (blocks of 2 frames: "elsewhere" is the
    transition inside each block). Without imposing the emitted motion ("none": every window
    sampled on its own) the same measure sees the jumps."""
    from gesture_jax.audio.io import load_audio

    waves = [load_audio(p) for p in sorted(demo_run["src"].glob("demo_test_*.wav"))[:2]]
    res = {}
    for name, chunk_s, impose, guard in (("0.5 s", 0.5, "x0_fade", 2), ("0.1 s", 0.1, "x0_fade", 0),
                                          ("0.5 s, none", 0.5, "none", 2)):
        pos, borders = _stream_seams(tbundle, waves, chunk_s, impose)
        pb, pe, rank = border_vs_elsewhere(pos, borders, guard=guard)
        res[name] = pb / pe
        print(f"chunks {name}: p99 step at block borders / elsewhere {pb:.3f} / {pe:.3f} = {pb / pe:.3f} "
              f"(rank {rank:.2f})")
    assert res["0.5 s, none"] > 1.5  # the measure sees seams
    assert res["0.5 s"] <= 1.1 and res["0.1 s"] <= 1.1


def test_cli_stream_writes_the_bvh_and_reports_latency(demo_run, tmp_path, capsys):
    import json

    import librosa
    import soundfile as sf

    from gesture_jax.motion.bvh import read_bvh

    good = sorted(demo_run["src"].glob("demo_test_*.wav"))[0]
    wave, sr = sf.read(str(good), dtype="float32")
    d = tmp_path / "in"
    d.mkdir()
    stereo = np.stack([wave[: 3 * sr], wave[: 3 * sr]], axis=1)
    sf.write(str(d / "stereo44k.wav"), librosa.resample(stereo.T, orig_sr=sr, target_sr=44100).T, 44100)
    sf.write(str(d / "short.wav"), wave[: int(0.3 * sr)], sr)
    nan = wave[: 2 * sr].copy()
    nan[sr + 5] = np.nan
    sf.write(str(d / "nan.wav"), nan, sr, subtype="FLOAT")
    sf.write(str(d / "clip.wav"), wave[: int(5.52 * sr)], sr)
    out = tmp_path / "out"
    rc = G.main(["--stream", "--workdir", str(demo_run["workdir"]), "--audio", str(d), "--out", str(out),
                 "--chunk_s", "0.3", "--lookahead_s", "0.25"])
    cap = capsys.readouterr()
    assert rc == 1 and "short.wav" in cap.err and "too short" in cap.err  # the others are still written
    assert "nan.wav" in cap.err and "NaN" in cap.err
    assert sorted(p.name for p in out.iterdir()) == ["clip.bvh", "stereo44k.bvh"]
    assert read_bvh(out / "stereo44k.bvh").num_frames == 60  # as offline generation (test_generate_trained)
    assert read_bvh(out / "clip.bvh").num_frames == math.floor(5.52 * FPS)
    rep = json.loads(cap.out)["stream"]
    r = rep[str(d / "clip.wav")]
    assert r["frames"] == 110 and r["rtf"] > 0 and r["latency_p50_ms"] is not None and "RTF" in cap.err


def test_every_window_ends_on_the_emitted_motion_it_was_given(rbundle):
    """The emitted frames inside a window are imposed at every solver step (x0 fused with them,
    weight 1), so each window's sample ends exactly on the motion already emitted: the new frames
    are sampled as its continuation."""
    wave = _wave(7.0, seed=6)
    st = S.MotionStreamer(rbundle, lookahead_s=0.4, opts=G.SamplingOptions(sampler="dpm-solver++", steps=3,
                                                                           smooth_sigma=0.0))
    calls = []
    fn = st._fn

    def spy(state, audio_w, known, w, key, index):
        out = fn(state, audio_w, known, w, key, index)
        calls.append((np.asarray(known), np.asarray(w), np.asarray(out)))
        return out

    st._fn = spy
    motion = np.concatenate([b for c in S.chunked(wave, 0.3) for b in st.push(c)] + st.flush())
    with_context = 0
    for (known, w, out), rec in zip(calls, st.records):
        ctx = w == 1.0  # the emitted frames of this window
        if ctx.any():
            with_context += 1
            w0 = rec.start - int(ctx.sum())
            np.testing.assert_allclose(out[ctx], motion[w0:rec.start], atol=1e-5)
    assert with_context == len(calls) - 1  # every window but the first continues emitted motion
