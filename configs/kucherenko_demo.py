"""Kucherenko et al. 2019 on the embedded synthetic corpus: both stages in a few minutes on a CPU.

    python -m data_prep.synthetic --config=configs/kucherenko_demo.py     # the demo corpus (shared with demo.py)
    python -m data_prep.prepare --config=configs/kucherenko_demo.py       # positions + MFCC shards
    python -m gesture_jax.train --config=configs/kucherenko_demo.py --workdir=runs/ka_demo --config.train.stage=autoencoder
    python -m gesture_jax.train --config=configs/kucherenko_demo.py --workdir=runs/ka_demo --config.train.stage=speech
    python -m gesture_jax.generate --workdir=runs/ka_demo --audio=data/demo_src/demo_test_000.wav --out=runs/ka_demo/out --video

Method settings are the reference's (configs/kucherenko.py); only the amount of training and
SpeechE's batch are the demo's (see below).
"""
from configs import base, demo, kucherenko


def get_config():
    c = demo.get_config()
    c.unlock()
    c.name = "kucherenko_demo"
    c.data.out = "data/demo_ka"   # positions + MFCC: its own shards next to Persona-Gestor's
    c.data.window_s = 8.0         # 160 frames: 100 full 61-frame contexts per window
    c.data.stride_s = 2.0
    c.data.test_stride_s = 8.0
    # 9 windows per 24 s file, 360 in all. Autoencoder: 30,000 steps of 128 frames (200 epochs of
    # the 19,200 training frames; ~1 min): Adam at 1e-4 needs the steps the reference's much
    # larger corpus gave it in 20 epochs (after 3,000 steps the loss was 117, after 30,000 0.91).
    # SpeechE (ours, for minutes on a CPU): batches of 512 contexts drawn from 8 windows (800)
    # instead of the reference's 2,056 (a step of 2,056 takes ~4-7 s on 2 cores, 512 ~1.9 s);
    # its loss stops improving after ~100 steps here, so 200 steps (5 epochs).
    kucherenko.apply(c, ae_steps=30_000, speech_steps=200, ae_windows=2, speech_windows=8)
    c.stages.speech.contexts_per_step = 512
    c.train.checkpoint_every = 250
    c.train.log_every = 50
    c.train.eval_every = 0
    return base.finalize(c)
