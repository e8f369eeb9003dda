"""BEAT (English, v0.2.1) with the Persona-Gestor reference model: 934M parameters.

    python -m data_prep.prepare --config=configs/beat.py --config.data.root=SRC --config.data.out=data/beat
    python -m gesture_jax.train --config=configs/beat.py --workdir=runs/beat
    python -m gesture_jax.generate --workdir=runs/beat --audio=talk.wav --out=out/
"""
from configs import base

# Joint selection of the reference's BEAT pipeline (fingers kept): 156 motion features.
BEAT_JOINTS: list[str] = []  # filled in by the motion pipeline work (issue 2)


def get_config():
    c = base.get_base_config()
    c.name = "beat"
    c.data.dataset = "beat"
    c.data.root = "datasets/beat_english_v0.2.1"
    c.data.out = "data/beat"
    c.data.joints = BEAT_JOINTS
    c.data.holdout = []  # one file per speaker: chosen by data_prep.datasets (issue 4)
    c.audio.feature = "wavlm"
    c.audio.wavlm_dir = "checkpoints/wavlm-base-plus"
    c.train.batch_size = 38
    return base.finalize(c)
