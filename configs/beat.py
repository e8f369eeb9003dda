"""BEAT (English, v0.2.1) with the Persona-Gestor reference model: 934M parameters.

    python -m data_prep.prepare --config=configs/beat.py --config.data.root=SRC --config.data.out=data/beat
    python -m gesture_jax.train --config=configs/beat.py --workdir=runs/beat
    python -m gesture_jax.generate --workdir=runs/beat --audio=talk.wav --out=out/
"""
from configs import base

# Joint selection of the reference's BEAT pipeline (fingers kept), as listed in Persona-Gestor's
# extract_BEAT_motion_features.py (fullbody, JointSelector(include_root=True)): every one of the
# 74 non-root joints of the BEAT v0.2.1 skeleton plus the root Hips. Raw features: 9 root
# (pos_rot_deltas) + 74 x 3 exp maps = 231; the reference's 156 is what remains after its
# ConstantsRemover drops channels that never move in the data (end joints such as HeadEnd and
# *ToeBaseEnd, finger tips, single-axis finger joints whose exp-map has two zero components, and
# the root's X/Z residual, exactly 0 without trajectory smoothing), so the count is data-dependent.
# Our 39-frame BEAT sample at its own 120 fps also gives 156 (see `python -m
# gesture_jax.motion.inspect ... --config=configs/beat.py`).
BEAT_JOINTS: list[str] = [
    "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftForeFoot", "LeftToeBase", "LeftToeBaseEnd",
    "RightUpLeg", "RightLeg", "RightFoot", "RightForeFoot", "RightToeBase", "RightToeBaseEnd",
    "Spine", "Spine1", "Spine2", "Spine3",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
    "LeftHandIndex", "LeftHandIndex1", "LeftHandIndex2", "LeftHandIndex3", "LeftHandIndex4",
    "LeftHandThumb1", "LeftHandThumb2", "LeftHandThumb3", "LeftHandThumb4",
    "LeftHandRing", "LeftHandRing1", "LeftHandRing2", "LeftHandRing3", "LeftHandRing4",
    "LeftHandPinky", "LeftHandPinky1", "LeftHandPinky2", "LeftHandPinky3", "LeftHandPinky4",
    "LeftHandMiddle1", "LeftHandMiddle2", "LeftHandMiddle3", "LeftHandMiddle4",
    "RightShoulder", "RightArm", "RightForeArm", "RightHand",
    "RightHandIndex", "RightHandIndex1", "RightHandIndex2", "RightHandIndex3", "RightHandIndex4",
    "RightHandThumb1", "RightHandThumb2", "RightHandThumb3", "RightHandThumb4",
    "RightHandRing", "RightHandRing1", "RightHandRing2", "RightHandRing3", "RightHandRing4",
    "RightHandPinky", "RightHandPinky1", "RightHandPinky2", "RightHandPinky3", "RightHandPinky4",
    "RightHandMiddle1", "RightHandMiddle2", "RightHandMiddle3", "RightHandMiddle4",
    "Neck", "Neck1", "Head", "HeadEnd",
]


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
