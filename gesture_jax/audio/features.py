"""Audio features the gesture model conditions on: WavLM hidden states, log-mel or MFCC.

    make_extractor(cfg.audio, fps) -> extractor with .name, .dim, .fps, .rate and
        __call__(wave float32 [S] at 16 kHz) -> float32 [frames, dim] at .rate frames/s:
        rate == fps (mel, MFCC, WavLM with audio.native_rate=False): floor(S*fps/16000) frames,
        frame k <-> time k/fps (CONTRACTS.md);
        WavLM with audio.native_rate=True (the reference): the encoder's own frames,
        rate 50 Hz, frame j <-> time j/50 (20 ms hop, 25 ms window: 999 frames for 20 s).
    feature_rate(extractor) -> .rate (frames/s of what __call__ returns).

WavLM features are one hidden state (cfg.audio.layer; reference 12) of a converted
checkpoint (`python -m data_prep.convert_wavlm`). Long files are encoded in overlapping
chunks of equal length (one compiled shape, batched through one jitted call) and blended
without seams (`frames.py`); the first conv's GroupNorm statistics (Base+) are taken over
the whole file, so chunking changes nothing but the transformer's context. Only the
layers up to the requested one are run.

MFCC features (`mfcc.py`) are Kucherenko et al. 2019's: 26 coefficients of 20 ms windows
every 10 ms, averaged to the model rate, optionally followed by 4 prosodic features
(`prosody.py`, needs praat-parselmouth); `context.py` builds that method's +-30-frame windows.

Command line (writes float32 [frames, channels]):

    python -m gesture_jax.audio.features --audio=IN.wav --out=OUT.npy --wavlm=CKPT_DIR --layer=12
    python -m gesture_jax.audio.features --audio=IN.wav --out=OUT.npy --mel
    python -m gesture_jax.audio.features --audio=IN.wav --out=OUT.npy --mfcc [--prosody]
    python -m gesture_jax.audio.features --audio=IN.wav --out=OUT.npy --wavlm=CKPT_DIR --native_rate
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from typing import Any, Protocol

import numpy as np

from gesture_jax.audio.frames import blend_weights, plan_chunks, resample_frames
from gesture_jax.audio.mel import MelExtractor
from gesture_jax.audio.mfcc import NUMCEP, MFCCExtractor
from gesture_jax import storage
from gesture_jax.storage import Path

SAMPLE_RATE = 16000
NORMALIZE_EPS = 1e-5  # unilm/fairseq trained WavLM Large on F.layer_norm(wave, wave.shape), eps 1e-5


class Extractor(Protocol):
    name: str
    dim: int
    fps: float   # the motion frame rate it was built for
    rate: float  # frames/s of its output (== fps except for WavLM at its native rate)

    def __call__(self, wave: np.ndarray) -> np.ndarray: ...


def normalize_waveform(wave: np.ndarray) -> np.ndarray:
    """Whole-clip zero mean, unit variance (what WavLM Large was trained on)."""
    w = wave.astype(np.float64)
    return ((w - w.mean()) / math.sqrt(w.var() + NORMALIZE_EPS)).astype(np.float32)


def feature_rate(extractor: Any) -> float:
    """Frames per second of the features `extractor` returns (its .rate; .fps when it has none)."""
    return float(getattr(extractor, "rate", extractor.fps))


class WavLMExtractor:
    """One WavLM hidden state of a 16 kHz waveform, at `fps` (or, native_rate=True, its own 50 Hz)."""

    name = "wavlm"

    def __init__(self, model: Any, *, layer: int = 12, fps: float = 20.0, normalize: bool | None = None,
                 chunk_s: float = 30.0, overlap_s: float = 5.0, batch_chunks: int = 4, length_bucket_s: float = 5.0,
                 progress: bool = False, native_rate: bool = False):
        """
        Args:
            model: a `WavLM` module with weights (see `load_checkpoint`).
            layer: index into the hidden-state list (0 = transformer input, i = output of layer i).
            fps: the motion frame rate; __call__ resamples to it unless native_rate.
            native_rate: __call__ returns the encoder's own frames (`native`, .rate = 50 Hz),
                what the reference's fuzzy extractor reads (audio.native_rate).
            normalize: whole-clip waveform normalization; None = what the checkpoint was trained
                with (WavLM Large: on); True forces it on.
            chunk_s / overlap_s: chunk length and overlap for long files (chunk_s <= 0: never chunk).
            batch_chunks: chunks encoded per jitted call.
            length_bucket_s: clips shorter than a chunk are zero-padded to a multiple of this
                and the padding masked (exactly as if unpadded), so a dataset of varied clip
                lengths compiles a handful of shapes instead of one per clip.
        """
        from gesture_jax.audio.wavlm.model import jitted_hidden_state

        cfg = model.config
        if not 0 <= layer <= cfg.num_hidden_layers:
            raise ValueError(f"layer must be in [0, {cfg.num_hidden_layers}] for this checkpoint, got {layer}")
        self.cfg, self.layer, self.fps = cfg, int(layer), float(fps)
        self.dim = cfg.hidden_size
        self.normalize = bool(cfg.normalize_waveform or normalize)
        self.hop, self.receptive_field = cfg.hop, cfg.receptive_field
        self.native_fps = SAMPLE_RATE / self.hop
        self.native_rate = bool(native_rate)
        self.rate = self.native_fps if self.native_rate else self.fps
        if chunk_s > 0:
            self.chunk_frames = max(1, int(round(chunk_s * self.native_fps)))
            self.overlap_frames = int(round(overlap_s * self.native_fps))
            if not 0 < 2 * self.overlap_frames <= self.chunk_frames:
                raise ValueError(f"chunk overlap ({overlap_s} s) must be positive and at most half the "
                                 f"chunk ({chunk_s} s)")
        else:
            self.chunk_frames, self.overlap_frames = None, 0
        self.batch_chunks = max(1, int(batch_chunks))
        self.bucket_frames = max(1, int(round(length_bucket_s * self.native_fps)))
        self.progress = progress
        self.group_mode = cfg.feat_extract_norm == "group"
        self._first_kernel = np.asarray(model.feature_extractor.conv_layers[0].kernel[...])  # [K, 1, C]
        first = model.feature_extractor.conv_layers[0]
        self._first_bias = None if first.bias is None else np.asarray(first.bias[...])
        self._encode = jitted_hidden_state(model, self.layer)

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str | Path, **kwargs: Any) -> "WavLMExtractor":
        from gesture_jax.audio.wavlm.checkpoint import load_checkpoint

        return cls(load_checkpoint(ckpt_dir), **kwargs)

    # ---- whole-file GroupNorm statistics ----------------------------------------------------
    def _group_stats(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (biased) variance over time of the first conv's output, per channel [C].

        Exactly what the model's GroupNorm computes on the whole file; evaluated in numpy
        blocks (the first conv is a [frames, K] @ [K, C] product) and merged in float64.
        """
        k = self._first_kernel.shape[0]
        s = self.cfg.conv_stride[0]
        w = self._first_kernel[:, 0, :]                      # [K, C]
        n = (wave.shape[0] - k) // s + 1
        c = w.shape[1]
        total, mean, m2 = 0, np.zeros(c, np.float64), np.zeros(c, np.float64)
        block = 1 << 17
        for a in range(0, n, block):
            b = min(n, a + block)
            idx = (np.arange(a, b) * s)[:, None] + np.arange(k)[None, :]
            y = (wave[idx] @ w).astype(np.float64)            # [b-a, C]
            if self._first_bias is not None:
                y += self._first_bias
            cnt = b - a
            bm = y.mean(axis=0)
            bm2 = ((y - bm) ** 2).sum(axis=0)
            delta = bm - mean
            new_total = total + cnt
            mean = mean + delta * cnt / new_total
            m2 = m2 + bm2 + delta ** 2 * total * cnt / new_total
            total = new_total
        return mean.astype(np.float32), (m2 / total).astype(np.float32)

    # ---- encoding -----------------------------------------------------------------------------
    def native(self, wave: np.ndarray) -> np.ndarray:
        """Hidden state `layer` at the encoder's own rate: float32 [L, dim], L = encoder frames."""
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono [S] waveform at 16 kHz, got shape {wave.shape}")
        total = self.cfg.num_frames(wave.shape[0])
        if total < 1:
            raise ValueError(f"waveform of {wave.shape[0]} samples is shorter than one WavLM frame "
                             f"({self.receptive_field} samples)")
        if self.normalize:
            wave = normalize_waveform(wave)
        mean = var = None
        if self.group_mode:
            mean, var = self._group_stats(wave)

        chunk = total if self.chunk_frames is None else min(total, self.chunk_frames)
        starts = plan_chunks(total, chunk, self.overlap_frames)
        chunk_samples = (chunk - 1) * self.hop + self.receptive_field
        if len(starts) == 1:  # the whole file at once, padded to a bucket length and masked
            frames = -(-total // self.bucket_frames) * self.bucket_frames
            if self.chunk_frames is not None:
                frames = max(total, min(frames, self.chunk_frames))
            n = (frames - 1) * self.hop + self.receptive_field
            waves = np.zeros((1, n), np.float32)
            waves[0, :min(n, wave.shape[0])] = wave[:n]
            return self._run(waves, mean, var, valid=total)[0, :total].astype(np.float32)
        weights = blend_weights(starts, chunk, total, margin=self.overlap_frames // 4)
        acc = np.zeros((total, self.dim), np.float32)  # float32: an hour of Base+ frames is 0.55 GB
        norm = np.zeros(total, np.float32)
        # Files of fewer chunks than batch_chunks run as one smaller batch (no wasted padding
        # chunks; at most batch_chunks compiled shapes); the last batch is padded to size.
        bsz = min(self.batch_chunks, len(starts))
        batches = [starts[i:i + bsz] for i in range(0, len(starts), bsz)]
        it = batches
        if self.progress:
            from tqdm import tqdm

            it = tqdm(batches, desc=f"WavLM layer {self.layer}", unit="batch", leave=False)
        done = 0
        for group in it:
            padded = group + [group[-1]] * (bsz - len(group))
            waves = np.stack([wave[a * self.hop: a * self.hop + chunk_samples] for a in padded])
            out = self._run(waves, mean, var, valid=chunk)
            for j, a in enumerate(group):
                w = weights[done + j].astype(np.float32)
                acc[a:a + chunk] += out[j] * w[:, None]
                norm[a:a + chunk] += w
            done += len(group)
        acc /= norm[:, None]
        return acc

    def _run(self, waves: np.ndarray, mean: np.ndarray | None, var: np.ndarray | None, valid: int) -> np.ndarray:
        """Hidden state `layer` of equal-length chunks [B, samples] -> [B, frames, dim]; frames
        from `valid` on are padding (masked)."""
        import jax.numpy as jnp

        stats = None
        if self.group_mode:
            b = waves.shape[0]
            stats = (jnp.broadcast_to(jnp.asarray(mean)[None], (b, mean.shape[0])),
                     jnp.broadcast_to(jnp.asarray(var)[None], (b, var.shape[0])))
        num_valid = np.full((waves.shape[0],), valid, np.int32)
        return np.asarray(self._encode(waves, stats, num_valid))

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """float32 [floor(S*fps/16000), dim], frame k <-> time k/fps; with native_rate the
        encoder's frames (`native`), frame j <-> time j/rate."""
        wave = np.asarray(wave, np.float32)
        feats = self.native(wave)
        if self.native_rate:
            return feats
        return resample_frames(feats, wave.shape[0], self.fps, hop=self.hop,
                               receptive_field=self.receptive_field, sr=SAMPLE_RATE)


def native_rate(audio_cfg: Any) -> bool:
    """Whether `cfg.audio` asks for features at the encoder's own rate: audio.native_rate with
    WavLM (mel and MFCC have no other rate than the motion's). Configs without the key (runs
    and preparations from before it existed) mean the motion rate."""
    return str(audio_cfg.feature) == "wavlm" and bool(getattr(audio_cfg, "native_rate", False))


def make_extractor(audio_cfg: Any, fps: float, *, progress: bool = False) -> Extractor:
    """The extractor `cfg.audio` describes.

    "wavlm" loads cfg.audio.wavlm_dir (at its native 50 Hz when cfg.audio.native_rate, else
    resampled to fps); "mel" needs nothing (cfg.audio.n_mels bands); "mfcc"
    needs nothing (cfg.audio.mfcc_numcep coefficients, + 4 prosodic features when
    cfg.audio.prosody, which needs praat-parselmouth).
    """
    feature = str(audio_cfg.feature)
    sr = int(getattr(audio_cfg, "sample_rate", SAMPLE_RATE))
    if sr != SAMPLE_RATE:
        raise ValueError(f"audio.sample_rate must be {SAMPLE_RATE} (WavLM and the loaders assume 16 kHz), got {sr}")
    if feature == "mel":
        return MelExtractor(n_mels=int(audio_cfg.n_mels), fps=float(fps), sr=sr)
    if feature == "mfcc":
        return MFCCExtractor(fps=float(fps), numcep=int(getattr(audio_cfg, "mfcc_numcep", NUMCEP)),
                             prosody=bool(getattr(audio_cfg, "prosody", False)), sr=sr)
    if feature == "wavlm":
        if not str(audio_cfg.wavlm_dir):
            raise ValueError("audio.feature='wavlm' needs audio.wavlm_dir (a checkpoint converted with "
                             "`python -m data_prep.convert_wavlm --source=... --out=DIR`)")
        return WavLMExtractor.from_checkpoint(
            audio_cfg.wavlm_dir, layer=int(audio_cfg.layer), fps=float(fps),
            normalize=bool(audio_cfg.normalize_waveform), chunk_s=float(audio_cfg.chunk_s),
            overlap_s=float(audio_cfg.chunk_overlap_s),
            batch_chunks=int(getattr(audio_cfg, "batch_chunks", 4)), progress=progress,
            native_rate=native_rate(audio_cfg))
    raise ValueError(f"unknown audio.feature {feature!r} (expected 'wavlm', 'mel' or 'mfcc')")


# ---- command line -----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m gesture_jax.audio.features",
        description="Write speech features of one audio file as a float32 .npy array [frames, channels]. "
                    "Any format librosa reads is accepted (downmixed to mono, resampled to 16 kHz). "
                    "Frames are at --fps (frame k <-> time k/fps, floor(duration*fps) frames) unless "
                    "--native_rate is given.",
        epilog="Examples:\n"
               "  python -m gesture_jax.audio.features --audio=talk.wav --out=talk.npy --wavlm=ckpt/wavlm-base-plus --layer=12\n"
               "  python -m gesture_jax.audio.features --audio=talk.mp3 --out=talk_mel.npy --mel\n"
               "  python -m gesture_jax.audio.features --audio=talk.wav --out=talk_mfcc.npy --mfcc --prosody\n"
               "Convert WavLM weights first: python -m data_prep.convert_wavlm --source=microsoft/wavlm-base-plus "
               "--out=ckpt/wavlm-base-plus",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", required=True, help="input audio file (WAV, FLAC, MP3, ...)")
    ap.add_argument("--out", required=True, help="output .npy file")
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--wavlm", metavar="CKPT_DIR", help="converted WavLM checkpoint directory")
    kind.add_argument("--mel", action="store_true", help="log-mel features (no weights needed; the default)")
    kind.add_argument("--mfcc", action="store_true",
                      help="MFCCs of Kucherenko et al. 2019 (20 ms window, 10 ms hop, averaged to --fps; no weights)")
    ap.add_argument("--layer", type=int, default=12, help="WavLM hidden-state index (0 = transformer input; "
                    "reference: 12)")
    ap.add_argument("--native_rate", action="store_true",
                    help="WavLM only: write the encoder's own 50 Hz frames unaltered instead of --fps frames")
    ap.add_argument("--fps", type=float, default=20.0, help="output frame rate (default 20, the model rate)")
    ap.add_argument("--n_mels", type=int, default=80, help="mel bands (default 80)")
    ap.add_argument("--numcep", type=int, default=NUMCEP, help=f"MFCC coefficients (default and reference {NUMCEP})")
    ap.add_argument("--prosody", action="store_true",
                    help="MFCC only: append [energy, d energy, pitch, d pitch] from Praat (needs praat-parselmouth; "
                         "the reference's MFCC+Pros, 4 more channels)")
    ap.add_argument("--normalize", action="store_true",
                    help="force whole-clip waveform normalization (on anyway for checkpoints trained with it, "
                         "e.g. WavLM Large)")
    ap.add_argument("--chunk_s", type=float, default=30.0, help="chunk length for long files (<= 0: no chunking)")
    ap.add_argument("--overlap_s", type=float, default=5.0, help="overlap between chunks")
    ap.add_argument("--batch_chunks", type=int, default=4, help="chunks per jitted call")
    ap.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gesture_jax.audio.io import AudioError, load_audio

    try:
        if args.fps <= 0:
            raise ValueError(f"--fps must be positive, got {args.fps}")
        out = storage.path(args.out)
        if out.suffix != ".npy":
            raise ValueError(f"--out must end in .npy, got {out}")
        if args.native_rate and not args.wavlm:
            raise ValueError("--native_rate applies to WavLM features only (give --wavlm=CKPT_DIR)")
        if args.prosody and not args.mfcc:
            raise ValueError("--prosody applies to MFCC features only (give --mfcc)")
        wave = load_audio(args.audio, sr=SAMPLE_RATE)
        if args.wavlm:
            from gesture_jax.audio.wavlm.checkpoint import CheckpointError

            try:
                ext = WavLMExtractor.from_checkpoint(
                    args.wavlm, layer=args.layer, fps=args.fps, normalize=args.normalize or None,
                    chunk_s=args.chunk_s, overlap_s=args.overlap_s, batch_chunks=args.batch_chunks,
                    progress=not args.no_progress)
            except CheckpointError as e:
                raise ValueError(str(e)) from e
            feats = ext.native(wave) if args.native_rate else ext(wave)
            rate = ext.native_fps if args.native_rate else args.fps
            what = f"WavLM layer {args.layer}"
        elif args.mfcc:
            ext = MFCCExtractor(fps=args.fps, numcep=args.numcep, prosody=args.prosody)
            feats, rate = ext(wave), args.fps
            what = f"MFCC ({args.numcep} coefficients{' + 4 prosodic' if args.prosody else ''})"
        else:
            feats = MelExtractor(n_mels=args.n_mels, fps=args.fps)(wave)
            rate, what = args.fps, f"log-mel ({args.n_mels} bands)"
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(feats, np.float32))
        storage.write_atomic(out, buf.getvalue())
    except (AudioError, ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {what}, float32 {list(feats.shape)} at {rate:g} frames/s "
          f"({wave.shape[0] / SAMPLE_RATE:.2f} s of audio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
