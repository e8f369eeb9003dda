"""Trinity Speech-Gesture (GENEA 2020) with the Persona-Gestor reference settings.

    python -m data_prep.prepare --config=configs/trinity.py --config.data.root=SRC --config.data.out=data/trinity
    python -m gesture_jax.train --config=configs/trinity.py --workdir=runs/trinity
"""
from configs import base

TRINITY_JOINTS = [
    "Hips", "Spine", "Spine1", "Spine2", "Spine3", "Neck", "Head",
    "RightShoulder", "RightArm", "RightForeArm", "RightHand",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
    "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase",
    "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase",
]


def get_config():
    c = base.get_base_config()
    c.name = "trinity"
    c.data.dataset = "trinity"
    c.data.root = "datasets/trinity"
    c.data.out = "data/trinity"
    c.data.joints = TRINITY_JOINTS
    c.data.holdout = ["Recording_008*", "Recording_015*"]
    return base.finalize(c)
