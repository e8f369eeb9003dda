"""Streaming generation: audio chunks in as they arrive (a microphone), motion frames out with a fixed look-ahead.

    for block in stream(bundle, chunks, lookahead_s=0.5):   # gesture_jax.generate.stream
        ...                                                # block: [n, F] motion features, in order

Timing contract. Motion frame k covers [k/fps, (k+1)/fps); it is emitted as soon as the audio
up to (k+1)/fps + lookahead has arrived, i.e. after a stream of S samples exactly
floor((S/16000 - lookahead) * fps) frames are out (never more, and no frame waits for a later
chunk). At the end of the stream the rest is flushed, so the total is floor(duration * fps)
frames, as generate_motion gives for the whole file. Emitted frames never change.

Each time frames become due, one model window of T frames (the training window) is sampled:

    [ emitted context (fixed) | new frames (emitted now) | look-ahead (audio known, not emitted) ]

ending at the newest audio frame (left-aligned and padded with silence while fewer than T
frames of audio exist, as generate.audio_features pads short clips). A chunk that makes more
frames due than fit one window (T minus a quarter-window of context minus the look-ahead) is
served by several windows in a row.

Audio features come from the buffered audio, as generate.audio_features computes them. Mel:
a frame whose STFT window has fully arrived (audio to k/fps + 64 ms at 20 fps) is final and
cached, and equals the offline feature of the whole file (tests/test_streaming.py); the rest
are recomputed for each window from a few frames earlier on, so the extractor's edge padding
never reaches a kept frame. The newest frames' features still change as audio arrives, but
they are look-ahead frames, resampled before they are emitted. WavLM (attention over its whole
input): recomputed for every window from 1 s before it, without the whole-file GroupNorm
statistics of offline generation, so they differ slightly from offline features. WavLM at its
own 50 Hz (audio.native_rate): the same, from a waveform cut on WavLM's 320-sample hop grid, so
the window at motion frame w0 gets the encoder frames from floor(w0 * 50 / fps) of the whole
stream, as training records and offline generation cut them (gesture_jax.audio.frames).

How a window continues the emitted motion (`impose`, default "x0_fade"): at every solver step
the model's clean-motion estimate x0 is fused with what is known before the update, as
long_audio.fused_x0_fn fuses overlapping windows:
  * context frames (emitted): x0 := the emitted motion (weight 1), so the solver's x_t there
    is the emitted motion noised along the solver's own trajectory, and the last step returns
    it exactly (the model sees the past it must continue);
  * the new frames the previous window already sampled (its look-ahead: same audio, continuous
    with what it emitted): x0 := cross-fade from that estimate into the new one, with the
    raised-cosine ramp of long_audio.crossfade_weights (weights summing to 1);
  * the rest: the model's estimate.
Other modes, kept for comparison: "x0" (context only, no cross-fade), "xt" (replacement, as
RePaint: the context's x_t overwritten at each step with the emitted motion noised afresh to
that level), "none" (every window on its own).

Why "x0_fade": `python bench/stream.py --compare_impose` on runs/demo/run (DPM-Solver++-10,
look-ahead 0.5 s, 4 held-out clips x 2 seeds, no smoothing): p99 joint speed at the borders
between emitted blocks / elsewhere (the long-audio seam measure of tests/test_generate_trained.py)

    impose        0.5 s chunks   0.1 s chunks
    none              6.34           5.99
    xt                1.41           1.14
    x0                1.42           1.11
    x0_fade           1.02           1.00      (CI's 800-step fixture model: x0 2.70 / 1.30, x0_fade 1.00 / 0.99)

Replacing x_t and fusing x0 over the context alone are equivalent here: the model sees the
emitted motion, but its estimate of the first new frame is still one fresh draw that need not
meet the last emitted frame (the inpainting seam). The previous window had already sampled
those frames, continuously with what it emitted; fading its estimate into the new one at
every step is the long-audio fusion with one side frozen, and the border becomes like any
other frame. x0 fusion rather than x_t replacement: the same seam figure, but the context stays
on the solver's own trajectory with no extra noise draws, and the cross-fade needs x0 anyway.
Cost: conditioning on the emitted past makes the demo model move less than offline (mean joint
speed per frame 0.224 streamed at 0.5 s chunks vs 0.260 offline DPM-Solver++-10, -14%; "x0"
-10%; 1.0 s look-ahead -8%); the 800-step fixture model moves as offline (+1%). The fade also
carries the previous estimate into the window, which alone (context not imposed) already hides
the border; tests/test_streaming.py checks the context separately.

The run's smoothing post-filter (sample.smooth_sigma; demo 0.75 frames) runs over the emitted
history and the window (the unsmoothed samples are what later windows are given as context).
Unlike generate_motion, a stream may be of any length (a stream shorter than a window is padded
with silence, like a short clip).

Sampler: DPM-Solver++ (2M, eta from the run's config; 1 on the demo) with STREAM_STEPS = 10
steps unless the options say otherwise (opts.sampler/opts.steps): on the 2-core CPU at the
demo shape a window costs ~13 ms at 10 steps (10 of them the network), so 0.1 s chunks (one
window each) stream at RTF 6-8 (4.7-5.1 while other jobs load the two cores); 20 steps give
RTF 3.7 there, 5 steps RTF 9.6 but border ratio 1.11 at 0.5 s chunks (bench/stream.py --steps). The
window's whole solver loop is one jitted call with one compiled shape, reused for every window.

Only methods whose model denoises fixed windows (``condition``, ``denoise``, ``motion_dim``:
the windowed sampler's contract, Persona-Gestor) can stream; others (Kucherenko 2019) get a
one-line GenerateError.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from gesture_jax.sampling.options import GenerateError, SamplingOptions

SAMPLE_RATE = 16000
STREAM_SAMPLER = "dpm-solver++"
STREAM_STEPS = 10
DEFAULT_LOOKAHEAD_S = 0.5
IMPOSE_MODES = ("x0_fade", "x0", "xt", "none")
FEATURE_MARGIN_S = 1.0  # audio before the window fed to an extractor of unknown reach (WavLM)
MIN_CONTEXT_FRAC = 0.25  # a window always keeps at least this fraction of T as emitted context (when there is some)


_EXTRACTORS: dict[int, tuple[Any, Any]] = {}  # id(bundle) -> (bundle, its feature extractor)


class StreamError(GenerateError):
    """A chunk or a streaming request that cannot be served (one line, names the problem)."""


@dataclass
class BlockInfo:
    """One emitted block: frames [start, stop), how many samples had arrived, when it was emitted."""
    start: int
    stop: int
    samples_seen: int
    emitted_at: float
    final: bool = False


def supports_streaming(bundle) -> bool:
    """Whether the bundle's model has the window-denoiser contract streaming needs."""
    m = getattr(bundle, "model", None)
    return all(hasattr(m, a) for a in ("condition", "denoise", "motion_dim"))


def stream_options(opts: SamplingOptions | None, student: bool = False) -> SamplingOptions:
    """The options streaming samples with: DPM-Solver++ with STREAM_STEPS steps unless set (a
    student bundle: its own sampler and step count)."""
    opts = opts or SamplingOptions()
    if opts.sampler is None and not student:
        opts = replace(opts, sampler=STREAM_SAMPLER, steps=STREAM_STEPS if opts.steps is None else opts.steps)
    return opts


def _check_chunk(chunk: Any, index: int, sample_rate: int) -> np.ndarray:
    sr = sample_rate
    if isinstance(chunk, tuple) and len(chunk) == 2 and np.isscalar(chunk[1]):
        chunk, sr = chunk
    if int(sr) != SAMPLE_RATE:
        raise StreamError(f"audio chunk {index}: sample rate {sr} Hz; streaming takes {SAMPLE_RATE} Hz mono "
                          f"(resample first, e.g. soxr.ResampleStream)")
    try:
        a = np.asarray(chunk)
        if a.dtype.kind in "iub":
            raise StreamError(f"audio chunk {index}: {a.dtype} samples; streaming takes float samples in [-1, 1] "
                              f"(e.g. int16 PCM / 32768)")
        a = a.astype(np.float32, copy=False)
    except (TypeError, ValueError) as e:
        raise StreamError(f"audio chunk {index}: not an array of samples ({type(e).__name__}: {e})") from None
    if a.ndim != 1:
        raise StreamError(f"audio chunk {index}: expected a mono [S] array at {SAMPLE_RATE} Hz, got shape "
                          f"{a.shape} (downmix channels first)")
    if not np.all(np.isfinite(a)):
        raise StreamError(f"audio chunk {index}: contains NaN or infinite samples")
    return a


class MotionStreamer:
    """Push-based streaming sampler: push(chunk) -> emitted blocks; flush() at the end of the audio.

    `stream` wraps it as an iterator; use this class directly when the audio arrives by callback.
    records: a BlockInfo per emitted block.
    """

    def __init__(self, bundle, *, lookahead_s: float = DEFAULT_LOOKAHEAD_S, opts: SamplingOptions | None = None,
                 impose: str = "x0_fade", sample_rate: int = SAMPLE_RATE):
        from gesture_jax.audio.features import make_extractor
        from gesture_jax.generate import _check_extractor, method_of

        if not supports_streaming(bundle):
            name = getattr(method_of(bundle), "name", "?")
            raise StreamError(f"method {name!r} cannot stream: streaming needs a window denoiser "
                              f"(a diffusion method's denoiser); generate this run offline (without --stream)")
        if impose not in IMPOSE_MODES:
            raise StreamError(f"unknown impose mode {impose!r}; choose one of {', '.join(IMPOSE_MODES)}")
        opts = stream_options(opts, bool(getattr(bundle, "student", False)))
        for name in ("overlap_s", "snap_s", "batch_windows"):
            if getattr(opts, name) is not None:
                raise StreamError(f"{name} does not apply to streaming (one window at a time, continuing the "
                                  f"emitted motion); leave it unset")
        if int(opts.num_samples) != 1:
            raise StreamError(f"streaming produces one sample; got num_samples={opts.num_samples}")
        self.r = method_of(bundle).resolve_options(bundle, opts)
        self.bundle, self.opts, self.impose, self.sample_rate = bundle, opts, impose, int(sample_rate)
        cfg = bundle.config
        self.fps = float(cfg.data.fps)
        self.T = int(self.r["window"])
        L = float(lookahead_s)
        if not (math.isfinite(L) and L >= 0):
            raise StreamError(f"lookahead_s must be >= 0 seconds, got {lookahead_s}")
        self.lookahead_s = L
        self.la_frames = int(math.ceil(L * self.fps - 1e-9))
        self.min_ctx = max(1, int(round(MIN_CONTEXT_FRAC * self.T)))
        if self.la_frames + self.min_ctx >= self.T:
            raise StreamError(f"lookahead_s={L} leaves no room in the {self.T / self.fps:g} s model window "
                              f"(at most {(self.T - self.min_ctx - 1) / self.fps:g} s)")
        hit = _EXTRACTORS.get(id(bundle))
        self.extractor = hit[1] if hit is not None and hit[0] is bundle else make_extractor(cfg.audio, self.fps)
        _check_extractor(bundle, self.extractor)
        _EXTRACTORS[id(bundle)] = (bundle, self.extractor)  # WavLM loads once per bundle, not once per stream
        while len(_EXTRACTORS) > 2:
            _EXTRACTORS.pop(next(iter(_EXTRACTORS)))
        from gesture_jax.audio.features import feature_rate

        self.rate = feature_rate(self.extractor)  # audio frames/s of the features (fps unless native WavLM)
        self.audio_T = int(self.r.get("audio_window", self.T))  # audio frames of one window
        if self.rate != self.fps:
            hop = SAMPLE_RATE / self.rate
            if hop != int(hop):
                raise StreamError(f"audio features at {self.rate:g} frames/s: streaming needs a whole number of "
                                  f"samples per audio frame at {SAMPLE_RATE} Hz")
            self._hop = int(hop)
        spf = Fraction(SAMPLE_RATE) / Fraction(self.fps).limit_denominator(1000)  # samples per frame = p / q
        self._p, self._q = spf.numerator, spf.denominator  # frame k starts at sample k * p / q (exact when q | k)
        self._reach = _extractor_reach(self.extractor)  # samples right of a frame's time it reads, or None
        if self._reach is None:
            self.margin = int(math.ceil(FEATURE_MARGIN_S * self.fps))
        else:  # left reach = right reach for a centred window; + 2 frames of slack
            self.margin = int(math.ceil(self._reach * self._q / self._p)) + 2
        self._fcache = np.zeros((0, int(self.extractor.dim)), np.float32)  # final features of frames [_fc0, ...)
        self._fc0 = 0
        self._fn, self._state = _window_fn(bundle, self.r, impose)
        import jax
        self._key = jax.random.key(int(opts.seed))
        self._wave = np.zeros(0, np.float32)  # buffered audio, global samples [_wave0, samples)
        self._wave0 = 0
        self.samples = 0
        self.emitted = 0
        self.windows = 0
        self._raw = np.zeros((0, int(bundle.model.motion_dim)), np.float32)  # raw motion of frames [_raw0, emitted)
        self._raw0 = 0
        self._prev = np.zeros((0, self._raw.shape[1]), np.float32)  # last window's estimate of frames [emitted, ...)
        self._chunks = 0
        self._done = False
        self.records: list[BlockInfo] = []

    # ------------------------------------------------------------------ public
    def due(self, final: bool = False) -> int:
        """Frames that may be out after the audio pushed so far (all of them once the stream ended)."""
        avail = int(math.floor(self.samples * self.fps / SAMPLE_RATE + 1e-9))
        if final:
            return avail
        return max(0, min(avail, int(math.floor((self.samples / SAMPLE_RATE - self.lookahead_s) * self.fps + 1e-9))))

    def push(self, chunk) -> list[np.ndarray]:
        """Adds one chunk of audio; returns the blocks of motion frames that became due (maybe none)."""
        if self._done:
            raise StreamError("push() after flush(): the stream has ended")
        a = _check_chunk(chunk, self._chunks, self.sample_rate)
        self._chunks += 1
        if a.size:
            self._wave = np.concatenate([self._wave, a])
            self.samples += int(a.size)
        return self._advance(final=False)

    def flush(self) -> list[np.ndarray]:
        """End of the audio: returns the remaining frames (total floor(duration * fps))."""
        if self._done:
            return []
        out = self._advance(final=True)
        self._done = True
        return out

    def warmup(self) -> float:
        """Compiles the window sampler (one call on zeros) so the first block is not delayed by
        compilation; returns the seconds it took. Changes no state."""
        t = time.perf_counter()
        F = self._raw.shape[1]
        np.asarray(self._fn(self._state, np.zeros((1, self.audio_T, int(self.extractor.dim)), np.float32),
                            np.zeros((self.T, F), np.float32), np.zeros((self.T,), np.float32), self._key,
                            np.int32(0)))
        return time.perf_counter() - t

    # ------------------------------------------------------------------ internals
    def _advance(self, final: bool) -> list[np.ndarray]:
        due = self.due(final)
        blocks = []
        while self.emitted < due:
            blocks.append(self._window(due, final))
        self._trim()
        return blocks

    def _window(self, due: int, final: bool) -> np.ndarray:
        T, e = self.T, self.emitted
        avail = self.due(final=True)  # frames with audio
        total_end = max(avail, T)
        end = min(total_end, e + T - min(e, self.min_ctx))
        w0 = end - T
        target = min(due, end - self.la_frames) if end < total_end else min(due, end)
        assert target > e, (e, target, end, due)
        audio_w = self._features(w0, end, final)
        F = self._raw.shape[1]
        known = np.zeros((T, F), np.float32)
        wts = np.zeros((T,), np.float32)
        if e > w0:  # emitted context
            known[:e - w0] = self._raw[w0 - self._raw0:e - self._raw0]
            wts[:e - w0] = 1.0
        if self.impose == "none":
            wts[:] = 0.0
        elif self.impose == "x0_fade" and self._prev.shape[0] > 0:
            R = min(self._prev.shape[0], end - e)
            ramp = _fade_ramp(R)  # weight of the previous estimate, 1 -> 0 over R frames
            known[e - w0:e - w0 + R] = self._prev[:R]
            wts[e - w0:e - w0 + R] = ramp
        x = np.asarray(self._fn(self._state, audio_w[None], known, wts, self._key, np.int32(self.windows)))
        self.windows += 1
        new_raw = x[e - w0:]  # frames [e, end)
        out = self._smooth(new_raw)[:target - e]
        self._raw = np.concatenate([self._raw, new_raw[:target - e]])
        self._prev = new_raw[target - e:min(end, avail) - e]  # estimates of frames with audio, not yet emitted
        self.emitted = target
        self.records.append(BlockInfo(e, target, self.samples, time.perf_counter(), final))
        return out

    def _smooth(self, new_raw: np.ndarray) -> np.ndarray:
        """The run's smooth_sigma post-filter, applied across the emitted history and the window."""
        sigma = float(self.r["smooth"])
        if sigma <= 0:
            return new_raw
        from scipy.ndimage import gaussian_filter1d

        pad = int(math.ceil(4 * sigma)) + 1
        left = self._raw[max(0, self._raw.shape[0] - pad):]
        seq = np.concatenate([left, new_raw]).astype(np.float64)
        sm = gaussian_filter1d(seq, sigma, axis=0, mode="nearest").astype(np.float32)
        return sm[left.shape[0]:]

    def _extract(self, fa: int, end: int) -> np.ndarray:
        """Features of frames [fa, end) (fa a multiple of q) from the buffered audio starting at frame fa;
        frames past the audio see digital silence (a stream shorter than one window)."""
        s_a = fa * self._p // self._q
        seg = self._wave[s_a - self._wave0:]
        need = int(math.ceil((end - fa) * self._p / self._q)) + 1
        if seg.shape[0] < need:
            seg = np.concatenate([seg, np.zeros(need - seg.shape[0], np.float32)])
        feats = np.asarray(self.extractor(seg), np.float32)
        if feats.shape[0] < end - fa:
            raise StreamError(f"audio extractor {self.extractor.name!r} returned {feats.shape[0]} frames for "
                              f"{seg.shape[0]} samples; the window needs {end - fa}")
        return feats[:end - fa]

    def _align(self, f: int) -> int:
        f = max(0, f)
        return f - f % self._q

    def _native_features(self, w0: int) -> np.ndarray:
        """Audio features at their own rate [Ta, A] of the window at motion frame w0: encoder frames
        [floor(w0*rate/fps), + Ta) of the stream, computed from `margin` motion frames earlier on
        (a waveform cut on the encoder's hop grid, so the frames are the stream's own)."""
        from gesture_jax.audio.frames import audio_start

        a0, n = audio_start(w0, self.fps, self.rate), self.audio_T
        af = max(0, a0 - int(math.ceil(self.margin * self.rate / self.fps)), -(-self._wave0 // self._hop))
        seg = self._wave[af * self._hop - self._wave0:]
        need = (a0 - af + n + 1) * self._hop  # >= (frames - 1) * hop + the encoder's window (< 2 hops)
        if seg.shape[0] < need:
            seg = np.concatenate([seg, np.zeros(need - seg.shape[0], np.float32)])
        feats = np.asarray(self.extractor(seg[:need]), np.float32)
        if feats.shape[0] < a0 - af + n:
            raise StreamError(f"audio extractor {self.extractor.name!r} returned {feats.shape[0]} frames for "
                              f"{need} samples; the window needs {a0 - af + n}")
        return feats[a0 - af:a0 - af + n]

    def _features(self, w0: int, end: int, final: bool) -> np.ndarray:
        """Audio features [T, A] of window frames [w0, end) ([Ta, A] at the features' own rate).

        With an extractor of known reach (mel: its STFT window), frames whose whole analysis
        window has arrived are final and cached; only the rest is computed, from `margin` frames
        earlier so the extractor's edge padding never reaches a kept frame (the same numbers as
        offline features: tests/test_streaming.py). Otherwise everything is recomputed from the
        buffered audio, `margin` frames before the window on."""
        if self.rate != self.fps:
            return self._native_features(w0)
        if self._reach is None:
            fa = self._align(w0 - self.margin)
            return self._extract(fa, end)[w0 - fa:]
        c1 = self._fc0 + self._fcache.shape[0]
        if not (self._fc0 <= w0 <= c1):  # cache does not reach the window (first window): restart it at w0
            self._fc0, self._fcache, c1 = w0, self._fcache[:0], w0
        fa = self._align(c1 - self.margin)
        new = self._extract(fa, end)[c1 - fa:]  # frames [c1, end)
        out = np.concatenate([self._fcache[w0 - self._fc0:], new])
        # final: frames k whose analysis window has arrived, k * samples_per_frame + reach <= samples
        final_end = int(math.floor((self.samples - self._reach) * self._q / self._p)) + 1
        final_end = min(final_end, self.due(final=True))
        if not final and final_end > c1:
            self._fcache = np.concatenate([self._fcache, new[:final_end - c1]])
        drop = max(0, self.emitted - self.T - self._fc0)
        if drop > self.T:
            self._fcache, self._fc0 = self._fcache[drop:], self._fc0 + drop
        return out

    def _trim(self) -> None:
        """Drops audio and motion no later window can reach."""
        keep_f = max(0, self.emitted - self.T - self.margin - self._q)
        keep_f -= keep_f % self._q
        s = keep_f * self._p // self._q
        if s > self._wave0 + SAMPLE_RATE:  # trim in steps of >= 1 s
            self._wave = self._wave[s - self._wave0:]
            self._wave0 = s
        r0 = max(0, self.emitted - self.T)
        if r0 > self._raw0 + self.T:
            self._raw = self._raw[r0 - self._raw0:]
            self._raw0 = r0


def _extractor_reach(extractor) -> int | None:
    """Samples after a frame's time that its feature reads (mel: half the STFT window, + one
    10 ms hop when interpolated); None when unknown (WavLM: attention sees the whole input)."""
    from gesture_jax.audio.mel import MelExtractor

    if isinstance(extractor, MelExtractor):
        return extractor.n_fft - extractor.n_fft // 2 + (0 if extractor.exact_hop else extractor.hop)
    return None


def _fade_ramp(R: int) -> np.ndarray:
    """Weight of the previous window's estimate over R frames: 1 - the rising raised-cosine ramp
    of long_audio.crossfade_weights (so old + new weights sum to 1, smooth at both ends)."""
    from gesture_jax.sampling.long_audio import crossfade_weights

    if R <= 0:
        return np.zeros(0, np.float32)
    up = crossfade_weights(2 * R + 1, R)[:R]
    return (1.0 - up).astype(np.float32)


_COMPILED: dict[tuple, Any] = {}


def _window_fn(bundle, r: dict, impose: str):
    """jitted fn(state, audio_w [1,Ta,A], known [T,F], w [T], key, index) -> sampled window [T, F]
    (noise from fold_in(key, index): one stream per window)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gesture_jax.models.diffusion import make_schedule
    from gesture_jax.sampling import samplers

    cfg = bundle.config
    model = bundle.model
    ab = np.asarray(make_schedule(cfg.diffusion).alphas_cumprod, np.float64)
    coeffs = samplers.sampler_coefficients(ab, r["sampler"], r["steps"], eta=r["eta"], ts=r.get("grid"))
    graphdef, state = nnx.split(model)
    mode = "xt" if impose == "xt" else "x0"
    traced = {k: v for k, v in r.items() if k not in ("smooth", "snap", "snap_steps", "batch_windows", "overlap")}
    key_ = (id(model), mode, tuple(sorted(traced.items())), coeffs.ts.tobytes(), coeffs.a.tobytes(),
            coeffs.b.tobytes(), coeffs.c.tobytes(), coeffs.s.tobytes())
    fn = _COMPILED.get(key_)
    if fn is not None:
        return fn, state
    guided = r["guidance"] != 1.0
    gw = r["guidance"]
    T = int(r["window"])
    F = int(model.motion_dim)
    sab = jnp.asarray(np.sqrt(ab), jnp.float32)
    s1ab = jnp.asarray(np.sqrt(1.0 - ab), jnp.float32)

    def run(state, audio_w, known, w, key, index):
        key = jax.random.fold_in(key, index)
        m = nnx.merge(graphdef, state)
        cond = m.condition(audio_w, deterministic=True, frames=T)  # [1, T, D]
        null = m.null_condition(1, T) if guided else None

        def net(x_t, t):
            return samplers.guided_denoise(m, x_t, jnp.full((x_t.shape[0],), t, jnp.int32), cond, null, gw)

        window_x0 = samplers.model_x0_fn(net, ab, r["prediction"], clip=r["clip_x0"] or None)
        k_init, k_loop, k_rep = jax.random.split(key, 3)
        wk = w[None, :, None]
        kn = known[None]
        if mode == "xt":  # replacement: the context's x_t is the known motion noised afresh to level t
            def x0_fn(x, t):
                z = jax.random.normal(jax.random.fold_in(k_rep, t), x.shape, x.dtype)
                xk = sab[t] * kn + s1ab[t] * z
                return window_x0(wk * xk + (1.0 - wk) * x, t)
        else:  # x0 fusion with the known frames (weights 1 on the context, a ramp over the cross-fade)
            def x0_fn(x, t):
                return wk * kn + (1.0 - wk) * window_x0(x, t)
        x_T = jax.random.normal(k_init, (1, T, F), jnp.float32)
        return samplers.sample_loop(x0_fn, coeffs, x_T, k_loop)[0]

    fn = _COMPILED[key_] = jax.jit(run)
    if len(_COMPILED) > 8:
        _COMPILED.pop(next(iter(_COMPILED)))
    return fn, state


def stream(bundle, chunks: Iterable[Any], *, lookahead_s: float = DEFAULT_LOOKAHEAD_S,
           opts: SamplingOptions | None = None, impose: str = "x0_fade", sample_rate: int = SAMPLE_RATE,
           streamer_out: list | None = None) -> Iterator[np.ndarray]:
    """Motion blocks [n, F] (the run's motion features, for bundle.pipeline.inverse) from audio chunks.

    chunks: 16 kHz mono float arrays of any sizes (or (array, rate) pairs); a block is yielded as
    soon as the audio up to its last frame's end + lookahead_s has been consumed, and the rest at
    the end, floor(duration * fps) frames in all. streamer_out: a list that receives the
    MotionStreamer (its .records say when each block came out).
    """
    s = MotionStreamer(bundle, lookahead_s=lookahead_s, opts=opts, impose=impose, sample_rate=sample_rate)
    if streamer_out is not None:
        streamer_out.append(s)

    def blocks() -> Iterator[np.ndarray]:  # options are checked above, before the first chunk is read
        for chunk in chunks:
            yield from s.push(chunk)
        yield from s.flush()

    return blocks()


# ---------------------------------------------------------------------- measurement (CLI and bench)

@dataclass
class StreamReport:
    """Latency and speed of one stream. Latency of frame k: emission time minus the arrival of
    the chunk that completed the audio up to (k+1)/fps + lookahead (the end of the audio for
    frames flushed at the end)."""
    audio_s: float
    frames: int
    compute_s: float
    wall_s: float
    chunks: int
    blocks: list[tuple[int, int]] = field(default_factory=list)
    latency_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def rtf(self) -> float:
        return self.audio_s / max(self.compute_s, 1e-9)

    def summary(self) -> dict[str, Any]:
        lat = self.latency_s
        q = (lambda p: round(float(np.percentile(lat, p)) * 1000, 1)) if lat.size else (lambda p: None)
        return {"audio_s": round(self.audio_s, 3), "frames": self.frames, "blocks": len(self.blocks),
                "chunks": self.chunks, "compute_s": round(self.compute_s, 3), "wall_s": round(self.wall_s, 3),
                "rtf": round(self.rtf, 2),
                "latency_first_frame_ms": round(float(lat[0]) * 1000, 1) if lat.size else None,
                "latency_p50_ms": q(50), "latency_p99_ms": q(99), "latency_max_ms": q(100)}


def run_stream(bundle, chunks: Iterable[np.ndarray], *, lookahead_s: float = DEFAULT_LOOKAHEAD_S,
               opts: SamplingOptions | None = None, impose: str = "x0_fade", realtime: bool = False,
               on_block: Callable[[int, np.ndarray], None] | None = None) -> tuple[np.ndarray, StreamReport]:
    """Streams `chunks` (16 kHz mono arrays) and measures it: (motion [N, F], StreamReport).

    realtime: hand each chunk over only once wall time reaches its end in the audio (as a
    microphone delivers it); otherwise chunks arrive as fast as they are asked for. compute_s
    is the wall time minus the time spent waiting for audio; RTF = audio seconds / compute_s.
    on_block(start_frame, block) runs for each block as it comes out (e.g. a BVH writer; its time counts).
    """
    arrivals: list[tuple[int, float]] = []  # (samples after the chunk, arrival time)
    waited = [0.0]
    state = {"samples": 0, "t0": None}

    def feed():
        for c in chunks:
            a = np.asarray(c[0] if isinstance(c, tuple) else c)
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            n = state["samples"] + (a.shape[0] if a.ndim >= 1 else 0)
            if realtime:
                due_at = state["t0"] + n / SAMPLE_RATE
                now = time.perf_counter()
                if due_at > now:
                    time.sleep(due_at - now)
                    waited[0] += time.perf_counter() - now
                arrival = max(due_at, state["t0"])
            else:
                arrival = time.perf_counter()
            state["samples"] = n
            arrivals.append((n, arrival))
            yield c

    holder: list = []
    blocks, emit_times, spans = [], [], []
    t_start = time.perf_counter()
    for b in stream(bundle, feed(), lookahead_s=lookahead_s, opts=opts, impose=impose, streamer_out=holder):
        t = time.perf_counter()
        start = sum(x.shape[0] for x in blocks)
        blocks.append(b)
        emit_times.append(t)
        spans.append((start, start + b.shape[0]))
        if on_block is not None:
            on_block(start, b)
    wall = time.perf_counter() - t_start
    s = holder[0]
    fps = s.fps
    total = state["samples"]
    motion = np.concatenate(blocks) if blocks else np.zeros((0, int(bundle.model.motion_dim)), np.float32)
    if arrivals:
        cum = np.asarray([n for n, _ in arrivals])
        at = np.asarray([t for _, t in arrivals])
        lat = []
        for (a, b), t in zip(spans, emit_times):
            k = np.arange(a, b)
            need = np.minimum(np.ceil(((k + 1) / fps + lookahead_s) * SAMPLE_RATE - 1e-6), total)
            idx = np.minimum(np.searchsorted(cum, need, side="left"), len(cum) - 1)
            lat.append(t - at[idx])
        latency = np.concatenate(lat) if lat else np.zeros(0)
    else:
        latency = np.zeros(0)
    rep = StreamReport(audio_s=total / SAMPLE_RATE, frames=int(motion.shape[0]), compute_s=wall - waited[0],
                       wall_s=wall, chunks=len(arrivals), blocks=spans, latency_s=latency)
    return motion, rep


def chunked(wave: np.ndarray, chunk_s: float) -> Iterator[np.ndarray]:
    """A wave cut into consecutive chunks of chunk_s seconds (the last one shorter)."""
    n = max(1, int(round(chunk_s * SAMPLE_RATE)))
    for i in range(0, wave.shape[0], n):
        yield wave[i:i + n]
