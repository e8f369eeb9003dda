"""The FGD autoencoder trains, its Orbax checkpoint round-trips, and its features give a sane FGD."""
import json

import numpy as np
import pytest

from gesture_jax.eval import fgd
from gesture_jax.eval.fgd_ae import (FGDAutoencoderError, load_fgd_autoencoder, save_fgd_autoencoder,
                                     train_fgd_autoencoder)


def _clips(seed, n=3, frames=90, joints=5):
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None, None] / 20.0
    return [np.sin(2 * np.pi * rng.uniform(0.3, 1.5, size=(1, joints, 3)) * t + rng.uniform(0, 6, size=(1, joints, 3)))
            * 10 + rng.normal(size=(1, joints, 3)) for _ in range(n)]


def test_fgd_autoencoder_trains_and_round_trips(tmp_path):
    clips = _clips(0)
    kw = dict(fps=20.0, joint_names=[f"j{i}" for i in range(5)], mean_speed=np.ones(5), window=8,
              hidden=8, latent=4, batch_size=8, lr=3e-3, seed=0, log=None, log_every=5)
    ae = train_fgd_autoencoder(clips, steps=30, **kw)
    hist = ae.meta["loss_history"]
    assert hist[-1][1] < hist[0][1]                      # it learns
    assert ae.meta["window"] == 8 and ae.meta["stride"] == 4
    d = save_fgd_autoencoder(tmp_path / "ae", ae)
    meta = json.loads((d / "meta.json").read_text())
    assert (meta["window"], meta["stride"], meta["latent"]) == (8, 4, 4)
    back = load_fgd_autoencoder(d)
    f1, f2 = ae.features(clips), back.features(clips)
    assert f1.shape == (3 * 21, 4)                       # (90-8)//4+1 = 21 windows per clip
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(back.mean_pose, ae.mean_pose)
    assert abs(fgd.fgd_from_features(f1, f2)) <= 1e-6
    # same seed, same weights
    again = train_fgd_autoencoder(clips, steps=30, **kw)
    np.testing.assert_array_equal(again.features(clips), f1)
    with pytest.raises(FGDAutoencoderError, match="joints"):
        back.features([np.zeros((20, 6, 3))])


def test_missing_autoencoder_dir_says_how_to_train(tmp_path):
    with pytest.raises(FGDAutoencoderError, match="--train_fgd_ae"):
        load_fgd_autoencoder(tmp_path / "nothing")
