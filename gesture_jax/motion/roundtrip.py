"""Run a BVH through the motion-feature pipeline and back; write the reconstruction.

    python -m gesture_jax.motion.roundtrip IN.bvh --out=OUT.bvh
    python -m gesture_jax.motion.roundtrip IN.bvh --config=configs/beat.py --fps=20 --out=OUT.bvh
    python -m gesture_jax.motion.roundtrip IN.bvh --representation=positions --out=OUT.bvh

The pipeline (resample, optional mirror, joint selection, root pos_rot_deltas, exp maps,
constant-channel removal, standardization) is fitted on IN alone, with the config's joint
set (every joint without --config) at IN's own frame rate unless --fps is given. OUT has
IN's skeleton; unselected joints hold their mean rotation. One JSON line reports frames,
fps, feature_dim and the largest joint-position error (cm) against IN resampled to OUT's fps
(against the mirrored IN with --mirror). With --representation=positions the features are
joint/End Site positions (data.positions_root / data.position_velocities from --config, else
the defaults: fixed root, velocities), OUT is solved by inverse kinematics, and the error is
positions -> BVH -> positions: OUT is read back (text precision included) and its positions
compared with IN's, node by node. Exit status 1 with a one-line message for unreadable or
malformed input.
"""
from __future__ import annotations

import json
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional experiment config (e.g. configs/zeggs.py); its data.joints select the joints "
    "(without it: every joint). Its data.fps is NOT used: see --fps.", lock_config=True)
_FPS = flags.DEFINE_float("fps", None, "Frame rate of the features and of OUT (default: IN's own frame rate).")
_OUT = flags.DEFINE_string("out", None, "Where to write the reconstructed BVH (required).")
_MIRROR = flags.DEFINE_bool("mirror", False, "Mirror the take (left/right swap + reflection) on the way.")
_REPRESENTATION = flags.DEFINE_enum("representation", None, ["expmap", "positions"],
                                    "Motion representation (default: the config's data.representation, else expmap).")


def roundtrip(src: str, out: str, joints: list[str] | None = None, fps: float | None = None,
              mirror: bool = False, data_cfg=None, representation: str | None = None) -> dict:
    """Fit on `src`, transform, invert, write `out`; returns the summary printed by the CLI."""
    from gesture_jax.motion.bvh import read_bvh, write_bvh
    from gesture_jax.motion.kinematics import bvh_positions
    from gesture_jax.motion.mirror import mirror_bvh
    from gesture_jax.motion.representations import REPRESENTATIONS, pipeline_from_config
    from gesture_jax.motion.resample import effective_fps, resample_bvh

    b = read_bvh(src)
    target = float(fps) if fps else effective_fps(b.frame_time)
    if data_cfg is not None:
        data_cfg = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
        if representation:
            data_cfg["representation"] = representation
        pipe = pipeline_from_config(data_cfg)
        pipe.fps = target
    else:
        pipe = REPRESENTATIONS[representation or "expmap"](fps=target, joints=list(joints or []))
    pipe.fit([b], mirror=mirror)
    x = pipe.transform(b, mirror=mirror)
    rec = pipe.inverse(x, pipe.root_start(b, mirror=mirror))
    write_bvh(out, rec)
    if hasattr(pipe, "positions"):  # positions -> BVH -> positions, the BVH as written
        P, P2 = pipe.positions(x), pipe.positions(pipe.transform(read_bvh(out)))
    else:
        ref = resample_bvh(mirror_bvh(b) if mirror else b, target)
        P, P2 = bvh_positions(ref), bvh_positions(rec)
    n = min(len(P), len(P2))
    err = float(np.linalg.norm(P[:n] - P2[:n], axis=-1).max()) if n else 0.0
    return {"in": str(src), "out": str(out), "frames_in": b.num_frames, "fps_in": effective_fps(b.frame_time),
            "frames_out": rec.num_frames, "fps_out": target, "selected_joints": len(pipe.selected_joints),
            "feature_dim": pipe.feature_dim, "mirrored": bool(mirror), "max_position_error_cm": err,
            **({"representation": representation} if representation else {})}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError("give exactly one input BVH: python -m gesture_jax.motion.roundtrip IN.bvh "
                             "--out=OUT.bvh [--config=configs/x.py] [--fps=N]")
    if not _OUT.value:
        raise app.UsageError("--out=OUT.bvh is required")
    if _FPS.value is not None and not _FPS.value > 0:
        raise app.UsageError(f"--fps must be positive, got {_FPS.value}")
    from gesture_jax.motion.bvh import BVHError
    from gesture_jax.motion.pipeline import MotionPipelineError
    cfg = _CONFIG.value
    try:
        summary = roundtrip(argv[1], _OUT.value, fps=_FPS.value, mirror=_MIRROR.value,
                            data_cfg=None if cfg is None else cfg.data, representation=_REPRESENTATION.value)
    except (BVHError, MotionPipelineError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"error: cannot write {_OUT.value}: {e.strerror or e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
