"""ZEGGS (Ubisoft La Forge) with the Persona-Gestor reference settings.

    python -m data_prep.prepare --config=configs/zeggs.py --config.data.root=SRC --config.data.out=data/zeggs
    python -m gesture_jax.train --config=configs/zeggs.py --workdir=runs/zeggs
"""
from configs import base

ZEGGS_JOINTS: list[str] = []  # filled in by the motion pipeline work (issue 2): 166 features


def get_config():
    c = base.get_base_config()
    c.name = "zeggs"
    c.data.dataset = "zeggs"
    c.data.root = "datasets/zeggs/clean"
    c.data.out = "data/zeggs"
    c.data.joints = ZEGGS_JOINTS
    c.data.holdout = ["011_Happy_0_x_1_0*"]
    c.audio.feature = "wavlm"
    c.audio.wavlm_dir = "checkpoints/wavlm-base-plus"
    return base.finalize(c)
