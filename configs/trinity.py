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
    c.data.joints = tuple(TRINITY_JOINTS)
    c.data.holdout = ("Recording_008*", "Recording_015*")
    # The root's ground-plane residual is kept (not constant) only with a smoothed root
    # trajectory; with the StyleGestures defaults below the 23 joints give the reference's
    # 75 features (73 without smoothing).
    c.data.root_position_smoothing = 5.0
    c.data.root_rotation_smoothing = 10.0
    return base.finalize(c)
