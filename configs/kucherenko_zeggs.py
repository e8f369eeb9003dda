"""Kucherenko et al. 2019 on ZEGGS: positions of the Persona-Gestor ZEGGS joint set, MFCC.

    python -m data_prep.prepare --config=configs/kucherenko_zeggs.py --config.data.root=SRC
    python -m gesture_jax.train --config=configs/kucherenko_zeggs.py --workdir=runs/ka_zeggs --config.train.stage=autoencoder
    python -m gesture_jax.train --config=configs/kucherenko_zeggs.py --workdir=runs/ka_zeggs --config.train.stage=speech

Steps follow the reference's epochs for ZEGGS's ~2 h of speech (135k frames at 20 fps):
AE 20 epochs at 128 frames = 21k steps; SpeechE 100 epochs at 2,056 contexts = 6.6k steps.
"""
from configs import base, kucherenko, zeggs


def get_config():
    c = zeggs.get_config()   # the dataset section (files, joints, held-out files) as Persona-Gestor's
    c.unlock()
    c.name = "kucherenko_zeggs"
    c.data.out = "data/zeggs_ka"   # positions + MFCC: its own shards
    # 20 s windows (400 frames, 340 contexts each): 8 windows -> 2,720 contexts -> 2,056 drawn
    kucherenko.apply(c, ae_steps=21_000, speech_steps=6_600, ae_windows=1, speech_windows=8)
    return base.finalize(c)
