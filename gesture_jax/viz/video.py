"""Stick-figure MP4 (front and side view side by side) of joint positions, with the speech muxed in.

Why draw lines into numpy frames instead of matplotlib: a 70 s clip at 20 fps is 1400
frames, and a matplotlib figure per frame costs tens of milliseconds; rasterizing ~75
bones as dotted segments with a few vectorized numpy writes costs well under a millisecond,
so the encoder (ffmpeg's libx264 from imageio-ffmpeg, fed raw RGB through a pipe) sets the
pace. The audio is muxed in the same ffmpeg call.

    python -m gesture_jax.viz.video motion.bvh --audio=speech.wav --out=motion.mp4
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from gesture_jax import storage
from gesture_jax.errors import UserError

BACKGROUND = np.array([250, 250, 248], np.uint8)
CENTER_COLOR = np.array([40, 40, 40], np.uint8)
LEFT_COLOR = np.array([30, 110, 200], np.uint8)  # joints named Left*/L_*: blue
RIGHT_COLOR = np.array([210, 60, 40], np.uint8)  # Right*/R_*: red
FLOOR_COLOR = np.array([200, 200, 200], np.uint8)


class VideoError(UserError, RuntimeError):
    """Rendering or encoding failed (message names the output file)."""


def _side_of(name: str) -> int:
    n = name.lower()
    if n.startswith(("left", "l_", "lft")) or "left" in n:
        return 1
    if n.startswith(("right", "r_", "rgt")) or "right" in n:
        return 2
    return 0


def _facing_axes(positions: np.ndarray, sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal unit vectors (lateral = toward the figure's left, forward) for the whole clip.

    From the mean offset of left-named to right-named joints when both exist, so the "front"
    panel really looks at the figure's front whichever way the dataset faces; else X and Z.
    """
    left, right = sides == 1, sides == 2
    lateral = np.array([1.0, 0.0, 0.0])
    if left.any() and right.any():
        d = (positions[:, left].mean(axis=(0, 1)) - positions[:, right].mean(axis=(0, 1)))
        d[1] = 0.0
        if np.linalg.norm(d) > 1e-6:
            lateral = d / np.linalg.norm(d)
    forward = np.cross(lateral, np.array([0.0, 1.0, 0.0]))  # left x up = forward (Y up, right-handed)
    return lateral, forward


def _project(positions: np.ndarray, view: str, lateral: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """[N, J, 3] (Y up) -> [N, J, 2] image-plane coordinates (u right, v up).

    front: seen from ahead, the figure's left on the image's right; side: seen from the
    figure's right, facing direction to the image's right.
    """
    if view == "front":
        return np.stack([positions @ lateral, positions[..., 1]], axis=-1)
    if view == "side":
        return np.stack([positions @ forward, positions[..., 1]], axis=-1)
    raise ValueError(f"unknown view {view!r}")


def _fit(uv: np.ndarray, height: int, width: int, margin: float = 0.08) -> tuple[np.ndarray, float]:
    """Scale/offset mapping the clip's robust extent into a panel (same scale for both axes)."""
    flat = uv.reshape(-1, 2)
    lo = np.percentile(flat, 0.5, axis=0)
    hi = np.percentile(flat, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-6)
    scale = float(min((1 - 2 * margin) * width / span[0], (1 - 2 * margin) * height / span[1]))
    center = (lo + hi) / 2.0
    return center, scale


def _to_pixels(uv: np.ndarray, center: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    px = (uv[..., 0] - center[0]) * scale + width / 2.0
    py = height / 2.0 - (uv[..., 1] - center[1]) * scale
    return np.stack([px, py], axis=-1)


def _draw_segments(canvas: np.ndarray, width: int, p0: np.ndarray, p1: np.ndarray, labels: np.ndarray,
                   offsets: np.ndarray, x_lo: int = 0, x_hi: int | None = None) -> None:
    """Rasterizes segments p0[i] -> p1[i] (pixel coords [B, 2]) into a flat label canvas in place.

    canvas: uint8 [H*W, 3] RGB; labels [B, 3]: RGB color per segment;
    offsets [K, 2]: the pen's pixel footprint (thickness); pixels outside columns
    [x_lo, x_hi) are dropped (panel clipping). One fancy-indexed write per call.
    """
    height = canvas.shape[0] // width
    length = np.abs(p1 - p0).max(axis=-1)
    k = int(max(2, np.ceil(length.max(initial=1.0)) + 1))
    s = np.linspace(0.0, 1.0, k)[None, :, None]
    pts = np.rint(p0[:, None, :] + (p1 - p0)[:, None, :] * s).astype(np.int64)  # [B, k, 2]
    x = pts[..., 0, None] + offsets[:, 0]  # [B, k, K]
    y = pts[..., 1, None] + offsets[:, 1]
    x_hi = width if x_hi is None else x_hi
    ok = (x >= x_lo) & (x < x_hi) & (y >= 0) & (y < height)
    seg = np.broadcast_to(np.arange(len(labels))[:, None, None], x.shape)
    canvas[(y * width + x)[ok]] = labels[seg[ok]]


def render_frames(positions: np.ndarray, parents: Sequence[int], *, names: Sequence[str] | None = None,
                  height: int = 360, panel_width: int = 320, thickness: int = 3) -> Iterator[np.ndarray]:
    """Yields uint8 RGB frames [height, 2*panel_width, 3]: front view left, side view right.

    positions: [N, J, 3] world joint positions (any unit), Y up; parents[j] = -1 for a root.
    Both views use one fixed framing for the whole clip, so root motion stays visible.
    """
    positions = np.asarray(positions, np.float64)
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise ValueError(f"positions must be [N, J, 3], got {positions.shape}")
    n, j, _ = positions.shape
    parents = np.asarray(parents, np.int64)
    if parents.shape != (j,):
        raise ValueError(f"{len(parents)} parents for {j} joints")
    child = np.nonzero(parents >= 0)[0]
    par = parents[child]
    sides = np.array([_side_of(nm) for nm in names]) if names is not None else np.zeros(j, int)
    h, w = height - height % 2, panel_width - panel_width % 2
    panels, floor_rows = [], []
    floor_y = float(positions[..., 1].min())
    lateral, forward = _facing_axes(positions, sides)
    for view in ("front", "side"):
        uv = _project(positions, view, lateral, forward)
        center, scale = _fit(uv, h, w)
        panels.append(_to_pixels(uv, center, scale, h, w))  # [N, J, 2] pixels
        floor = _to_pixels(np.array([0.0, floor_y]), center, scale, h, w)[1]
        floor_rows.append(int(np.clip(np.round(floor), 0, h - 1)))
    # Palette: 0 background, 1 divider/floor, 2.. bone colors (center, left, right).
    lut = np.stack([BACKGROUND, FLOOR_COLOR, CENTER_COLOR, LEFT_COLOR, RIGHT_COLOR])
    labels = lut[2 + sides[child]]  # [B, 3] bone colors
    r = np.arange(thickness) - thickness // 2
    pen = np.stack(np.meshgrid(r, r), -1).reshape(-1, 2)
    base = np.zeros((h, 2 * w), np.uint8)
    base[:, w - 1:w + 1] = 1  # divider
    for k, row in enumerate(floor_rows):
        base[row, k * w:(k + 1) * w] = 1
    base = lut.take(base.ravel(), axis=0)  # [H*W, 3] background, divider, floor
    shift = [np.array([k * w, 0.0]) for k in range(len(panels))]
    for f in range(n):
        canvas = base.copy()
        for k, pix in enumerate(panels):
            _draw_segments(canvas, 2 * w, pix[f, par] + shift[k], pix[f, child] + shift[k], labels, pen,
                           x_lo=k * w, x_hi=(k + 1) * w)
        yield canvas.reshape(h, 2 * w, 3)


def _write_temp_wav(wave: np.ndarray, sr: int, folder: Path) -> Path:
    import soundfile as sf
    p = folder / "audio.wav"
    sf.write(str(p), np.asarray(wave, np.float32), int(sr))
    return p


def write_video(path: str | Path, positions: np.ndarray, parents: Sequence[int], fps: float, *,
                audio: str | Path | np.ndarray | None = None, audio_sr: int = 16000,
                names: Sequence[str] | None = None, height: int = 360, panel_width: int = 320,
                progress: bool = True, crf: int = 23) -> Path:
    """Renders the clip to an H.264 MP4 at `fps`, with `audio` (a file or a mono wave) as AAC.

    The video is as long as the motion; audio longer than that is kept (players stop at the
    end of the longer stream), so a motion of floor(duration * fps) frames loses nothing.
    """
    path = storage.path(path)
    with storage.local_output(path) as local:   # ffmpeg writes a local file; a bucket gets it after
        _encode(local, os.fspath(path), positions, parents, fps, audio, audio_sr, names, height, panel_width,
                progress, crf)
    return path


def _encode(local: Path, label: str, positions, parents, fps, audio, audio_sr, names, height, panel_width,
            progress, crf) -> None:
    import imageio_ffmpeg
    from tqdm import tqdm

    positions = np.asarray(positions)
    n = positions.shape[0]
    h, w2 = height - height % 2, 2 * (panel_width - panel_width % 2)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w2}x{h}", "-r", f"{fps}", "-i", "-"]
        if audio is not None:
            apath = (stack.enter_context(storage.local_copy(audio)) if isinstance(audio, (str, os.PathLike))
                     else _write_temp_wav(audio, audio_sr, Path(tmp)))
            cmd += ["-i", str(apath), "-c:a", "aac", "-b:a", "128k"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", str(local)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            frames = render_frames(positions, parents, names=names, height=height, panel_width=panel_width)
            for img in tqdm(frames, total=n, desc=f"video {os.path.basename(label)}", unit="frame", disable=not progress):
                proc.stdin.write(img.tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace")
        rc = proc.wait()
    if rc != 0:
        raise VideoError(f"ffmpeg failed writing {label} (exit {rc}): {err.strip()[-2000:]}")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from gesture_jax.motion.bvh import read_bvh
    from gesture_jax.motion.kinematics import bvh_positions

    ap = argparse.ArgumentParser(description="Stick-figure MP4 of a BVH file, optionally with audio.")
    ap.add_argument("bvh")
    ap.add_argument("--audio", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    bvh = read_bvh(a.bvh)
    write_video(a.out, bvh_positions(bvh), bvh.skeleton.parents, bvh.fps, audio=a.audio,
                names=bvh.skeleton.names)
    print(a.out)


if __name__ == "__main__":
    main()
