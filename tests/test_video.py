"""Stick-figure MP4 with muxed audio (gesture_jax/viz/video.py)."""
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from gesture_jax.viz import video


def _figure(n=30):
    """A 6-joint stick figure waving its arms, [N, 6, 3] in cm, Y up."""
    t = np.arange(n) / 20.0
    base = np.array([[0, 100, 0], [0, 150, 0], [-20, 140, 0], [20, 140, 0], [0, 50, 0], [0, 0, 0]], float)
    pos = np.repeat(base[None], n, axis=0)
    pos[:, 2, 1] += 20 * np.sin(2 * np.pi * t)
    pos[:, 3, 2] += 20 * np.cos(2 * np.pi * t)
    pos[:, :, 0] += 5 * t[:, None]
    return pos, [-1, 0, 1, 1, 0, 4], ["Hips", "Neck", "LeftHand", "RightHand", "Leg", "Foot"]


def test_frames_show_the_figure_in_both_views():
    pos, parents, names = _figure(3)
    frames = list(video.render_frames(pos, parents, names=names, height=120, panel_width=100))
    assert len(frames) == 3 and frames[0].shape == (120, 200, 3) and frames[0].dtype == np.uint8
    f = frames[0]
    for panel in (f[:, :99], f[:, 101:]):
        assert (np.abs(panel.astype(int) - video.BACKGROUND).sum(-1) > 100).sum() > 50  # bones drawn
    assert (f == video.LEFT_COLOR).all(-1).any() and (f == video.RIGHT_COLOR).all(-1).any()


def test_mp4_has_video_and_audio(tmp_path):
    pos, parents, names = _figure(30)
    sr = 16000
    wave = 0.2 * np.sin(2 * np.pi * 220 * np.arange(int(1.5 * sr)) / sr).astype(np.float32)
    out = video.write_video(tmp_path / "a.mp4", pos, parents, 20, audio=wave, audio_sr=sr, names=names,
                            height=120, panel_width=100, progress=False)
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(out)], capture_output=True, text=True).stderr
    assert re.search(r"Video: h264", info) and re.search(r"Audio: aac", info), info
    nframes, _ = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert nframes == 30


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(ValueError, match=r"\[N, J, 3\]"):
        list(video.render_frames(np.zeros((3, 4)), [-1, 0, 1, 2]))
    pos, parents, _ = _figure(3)
    with pytest.raises(video.VideoError, match="b.mp4"):
        video.write_video(tmp_path / "b.mp4", pos, parents, 20, audio=tmp_path / "missing.wav", progress=False)
