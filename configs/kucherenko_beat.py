"""Kucherenko et al. 2019 on BEAT (English v0.2.1): positions of the reference's BEAT joint set, MFCC.

    python -m data_prep.prepare --config=configs/kucherenko_beat.py --config.data.root=SRC
    python -m gesture_jax.train --config=configs/kucherenko_beat.py --workdir=runs/ka_beat --config.train.stage=autoencoder
    python -m gesture_jax.train --config=configs/kucherenko_beat.py --workdir=runs/ka_beat --config.train.stage=speech
    python -m gesture_jax.generate --workdir=runs/ka_beat --audio=talk.wav --out=out/

Steps follow the reference's epochs for an example 16 h of training speech (1.15 M frames at 20 fps):
AE 20 epochs at 128 frames = 180k steps; SpeechE 100 epochs at 2,056 contexts = 56k steps.
Scale them with your split (WORKDIR/stages/*/model_info.json reports train_windows).
"""
from configs import base, beat, kucherenko


def get_config():
    c = beat.get_config()   # the dataset section (files, joints, held-out files) as Persona-Gestor's
    c.unlock()
    c.name = "kucherenko_beat"
    c.data.out = "data/beat_ka"   # positions + MFCC: its own shards
    # 20 s windows (400 frames, 340 contexts each): 8 windows -> 2,720 contexts -> 2,056 drawn
    kucherenko.apply(c, ae_steps=180_000, speech_steps=56_000, ae_windows=1, speech_windows=8)
    return base.finalize(c)
