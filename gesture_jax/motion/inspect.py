"""Describe a BVH file as one JSON object (and, with a config, its motion-feature size).

    python -m gesture_jax.motion.inspect FILE.bvh
    python -m gesture_jax.motion.inspect FILE.bvh --config=configs/zeggs.py

Prints: file, joints (count), joint_names, channels (count), channels_per_joint
({channel count: joints}), end_sites, frames, frame_time, fps, duration_s, root,
rotation_orders ({order: joints}). With --config: config, target_fps, selected_joints,
raw_feature_dim (before constant-channel removal), feature_dim (the motion pipeline of the
config fitted on this file alone), constant_channels (the channels it drops). Note that
feature_dim depends on the data: channels that never move in this file are dropped.
Exit status 1 with a one-line message for unreadable or malformed input.
"""
from __future__ import annotations

import collections
import json
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional experiment config (e.g. configs/zeggs.py): its data.joints and data.fps "
    "give the motion-feature dimension printed as feature_dim.", lock_config=True)


def describe(path: str, data_cfg=None) -> dict:
    """The JSON-able description printed by this command."""
    from gesture_jax.motion.bvh import read_bvh
    from gesture_jax.motion.pipeline import MotionPipeline
    from gesture_jax.motion.resample import effective_fps

    b = read_bvh(path)
    sk = b.skeleton
    fps = effective_fps(b.frame_time)
    orders = collections.Counter(sk.rotation_order(j) or "none" for j in range(sk.num_joints))
    per_joint = collections.Counter(str(len(c)) for c in sk.channels)
    out = {
        "file": str(path),
        "joints": sk.num_joints,
        "joint_names": sk.names,
        "channels": sk.num_channels,
        "channels_per_joint": dict(sorted(per_joint.items())),
        "end_sites": len(sk.end_sites),
        "frames": b.num_frames,
        "frame_time": b.frame_time,
        "fps": fps,
        "duration_s": round(b.num_frames * b.frame_time, 6),
        "root": sk.names[0],
        "rotation_orders": dict(orders.most_common()),
    }
    if data_cfg is not None:
        pipe = MotionPipeline.from_config(data_cfg).fit([b])
        out.update({
            "target_fps": pipe.fps,
            "selected_joints": len(pipe.selected_joints),
            "raw_feature_dim": len(pipe.raw_feature_names),
            "feature_dim": pipe.feature_dim,
            "constant_channels": [n for n in pipe.raw_feature_names if n not in set(pipe.feature_names)],
        })
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError("give exactly one BVH file: python -m gesture_jax.motion.inspect FILE.bvh "
                             "[--config=configs/x.py]")
    from gesture_jax.motion.bvh import BVHError
    from gesture_jax.motion.pipeline import MotionPipelineError
    cfg = _CONFIG.value
    try:
        d = describe(argv[1], None if cfg is None else cfg.data)
    except (BVHError, MotionPipelineError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if cfg is not None:
        d = {"config": str(flags.FLAGS["config"].config_filename), **d}
    print(json.dumps(d))


if __name__ == "__main__":
    app.run(main)
