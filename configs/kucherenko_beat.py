"""Kucherenko et al. 2019 on BEAT (English v0.2.1): positions of the reference's BEAT joint set, MFCC.

    python -m data_prep.prepare --config=configs/kucherenko_beat.py --config.data.root=SRC
    python -m gesture_jax.train --config=configs/kucherenko_beat.py --workdir=runs/ka_beat --config.train.stage=autoencoder
    python -m gesture_jax.train --config=configs/kucherenko_beat.py --workdir=runs/ka_beat --config.train.stage=speech
    python -m gesture_jax.generate --workdir=runs/ka_beat --audio=talk.wav --out=out/

Steps follow the reference's epochs for ~16 h of training speech (1.15 M frames at 20 fps):
AE 20 epochs at 128 frames = 180k steps; SpeechE 100 epochs at 2,056 contexts = 56k steps.
Scale them with your split (train/model_info.json reports train_windows).
"""
from configs import base, beat, kucherenko


def get_config():
    c = base.get_base_config()
    c.name = "kucherenko_beat"
    c.data.dataset = "beat"
    c.data.root = "datasets/beat_english_v0.2.1"
    c.data.out = "data/beat_ka"
    c.data.joints = beat.BEAT_JOINTS
    c.data.holdout = []  # one file per speaker: chosen by data_prep.datasets
    # 20 s windows (400 frames, 340 contexts each): 8 windows -> 2,720 contexts -> 2,056 drawn
    kucherenko.apply(c, ae_steps=180_000, speech_steps=56_000, ae_windows=1, speech_windows=8)
    return base.finalize(c)
