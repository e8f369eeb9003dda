"""Shared by the training/parallel/checkpoint tests: a tiny config and a tiny prepared dataset.

The dataset is written with the same helpers data_prep.prepare uses (records, shards,
manifest) but holds synthetic windows whose motion is a smooth function of the audio, so a
model can learn something in a few steps. Shapes are tiny (T=16 frames, F=6, A=5) so every
compile and step takes well under a second on a shared 2-core CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

T, F, A = 16, 6, 5  # window frames (0.8 s at 20 fps), motion features, audio features


def tiny_config(data_out: Path | str = "", **train):
    """configs/demo.py shrunk to a ~20k-parameter reference-block model on 16-frame windows."""
    from configs import demo
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.out = str(data_out)
        cfg.data.window_s = T / 20.0
        cfg.data.stride_s = T / 40.0
        cfg.data.test_stride_s = T / 20.0
        cfg.audio.n_mels = A
        m = cfg.model
        m.depth, m.dim, m.heads, m.max_len, m.time_embed_dim = 1, 16, 2, T, 16
        m.dropout = 0.1  # exercise the dropout RNG streams (resume must reproduce them)
        m.fuzzy.style_kernel, m.fuzzy.style_dilation, m.fuzzy.down_kernel = 5, 2, 3
        cfg.diffusion.num_steps = 50
        t = cfg.train
        t.batch_size, t.num_steps, t.lr, t.warmup_steps = 8, 6, 1e-3, 2
        t.log_every, t.checkpoint_every, t.eval_every, t.eval_batches = 1, 3, 0, 1
        t.keep_checkpoints = 5
        # Adam's first steps are ~lr*sign(grad): elements whose true gradient is 0 (e.g. the
        # attention key bias, which softmax ignores) flip with round-off. A larger epsilon
        # keeps such round-off from being amplified into lr-sized parameter differences, so
        # sharded and unsharded runs can be compared at 1e-5.
        t.adam_eps = 1e-4
        for k, v in train.items():
            t[k] = v
        cfg.mesh.shape = "data:-1"
        cfg.mesh.min_shard_size = 0  # shard even tiny arrays so the tests exercise sharding
    return cfg


def synthetic_batch(rng: np.random.Generator, b: int) -> dict[str, np.ndarray]:
    """Audio: random smooth curves; motion: a fixed linear map of the audio (learnable)."""
    tt = np.linspace(0, 2 * np.pi, T, dtype=np.float32)[None, :, None]
    freq = rng.uniform(0.5, 2.0, (b, 1, A)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (b, 1, A)).astype(np.float32)
    audio = np.sin(freq * tt + phase).astype(np.float32)                     # [b,T,A]
    w = np.linspace(-1, 1, A * F, dtype=np.float32).reshape(A, F)
    motion = (audio @ w).astype(np.float32)                                   # [b,T,F]
    return {"motion": motion, "audio": audio}


def make_prepared(out: Path, n_train: int = 40, n_test: int = 8, seed: int = 0):
    """A prepared data folder (manifest + shards + empty motion_pipeline/) and its tiny config."""
    from gesture_jax.data import manifest as manifest_lib
    from gesture_jax.data import records, shards

    cfg = tiny_config(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / manifest_lib.PIPELINE_DIR).mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        b = synthetic_batch(rng, n)
        recs = [records.encode_window({"motion": b["motion"][i], "audio": b["audio"][i],
                                       "file_id": f"{split}{i}", "start_frame": 0, "mirrored": False})
                for i in range(n)]
        info = shards.write_split_shards(out, split, recs, 16)
        splits[split] = {"num_windows": n, "shards": info, "files": []}
    m = manifest_lib.new_manifest(cfg, feature_names=[f"f{i}" for i in range(F)], audio_feature="mel",
                                  audio_dim=A, splits=splits, skipped=[], source_root="synthetic")
    manifest_lib.save_manifest(out, m)
    return cfg


def tiny_model_fn(cfg):
    from gesture_jax.models import build_denoiser
    return lambda rngs: build_denoiser(cfg.model, F, A, T, rngs, fps=float(cfg.data.fps))
