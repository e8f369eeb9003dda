"""Preparation with WavLM features (a tiny random checkpoint): manifest, shapes, layer check."""
import json

import numpy as np
import pytest

from configs import demo
from data_prep import prepare, synthetic
from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import pipeline
from wavlm_testlib import random_flax_model, tiny_config


@pytest.fixture(scope="module")
def wavlm_ckpt(tmp_path_factory):
    from flax import nnx

    from gesture_jax.audio.wavlm.checkpoint import save_checkpoint
    cfg = tiny_config(num_hidden_layers=2)
    model = random_flax_model(cfg, seed=0)
    d = tmp_path_factory.mktemp("wavlm_tiny")
    save_checkpoint(d, cfg, nnx.to_pure_dict(nnx.state(model)), source={"kind": "test"})
    return d


def test_prepare_with_wavlm_features(wavlm_ckpt, tmp_path):
    root = tmp_path / "src"
    synthetic.generate_corpus(root, num_train=2, num_test=1, duration_s=6.0, seed=2)
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out, cfg.data.num_workers = str(root), str(tmp_path / "out"), 1
        cfg.audio.feature, cfg.audio.wavlm_dir, cfg.audio.layer = "wavlm", str(wavlm_ckpt), 2
        cfg.data.mirror = True  # the reference's mirrored windows (the demo config has none)
    m = prepare.run_prepare(cfg, progress=False)
    # audio.native_rate (base config): WavLM's own 50 Hz frames, 199 per 4 s window (80 motion frames)
    assert m["audio"] == {"feature": "wavlm", "dim": 32, "sample_rate": 16000, "layer": 2, "rate": 50.0}
    assert m["counts"] == {"train": 2 * 2 * 2, "test": 1}   # 6 s: windows at 0 and 2 s, mirrored
    b = next(pipeline.make_iterator(cfg, "train", batch_size=4, seed=0, process_index=0, process_count=1))
    assert b["motion"].shape[:2] == (4, 80) and b["audio"].shape == (4, 199, 32) and np.isfinite(b["audio"]).all() and b["audio"].std() > 0
    with cfg.unlocked():
        cfg.audio.layer = 1
    with pytest.raises(manifest_lib.ManifestError, match="WavLM layer"):
        pipeline.make_iterator(cfg, "train", batch_size=4, seed=0, process_index=0, process_count=1)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["audio"]["layer"] == 2
