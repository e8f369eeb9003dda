"""Kucherenko et al. 2019 on Trinity Speech-Gesture (GENEA 2020): positions of 23 joints, MFCC.

    python -m data_prep.prepare --config=configs/kucherenko_trinity.py --config.data.root=SRC
    python -m gesture_jax.train --config=configs/kucherenko_trinity.py --workdir=runs/ka_trinity --config.train.stage=autoencoder
    python -m gesture_jax.train --config=configs/kucherenko_trinity.py --workdir=runs/ka_trinity --config.train.stage=speech

The authors' own Trinity setup (branch GENEA_2020: exp-map output, code 40) is a different
model; this is the IVA 2019 recipe on Trinity's joints. Steps for ~4 h of training speech
(290k frames): AE 20 epochs at 128 frames = 45k steps; SpeechE 100 epochs = 14k steps.
"""
from configs import base, kucherenko, trinity


def get_config():
    c = trinity.get_config()   # the dataset section (files, joints, held-out files) as Persona-Gestor's
    c.unlock()
    c.name = "kucherenko_trinity"
    c.data.out = "data/trinity_ka"   # positions + MFCC: its own shards
    # 20 s windows (400 frames, 340 contexts each): 8 windows -> 2,720 contexts -> 2,056 drawn
    kucherenko.apply(c, ae_steps=45_000, speech_steps=14_000, ae_windows=1, speech_windows=8)
    return base.finalize(c)
