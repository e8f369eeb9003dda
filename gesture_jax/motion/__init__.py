"""Motion side of the data path: BVH files <-> model features, with an exact inverse.

  bvh.py         read/write any BVH (BVHError names file and line)
  rotations.py   Euler / matrix / quaternion / exp map / 6D, one implementation for numpy and jax.numpy
  channels.py    BVH channel values <-> local joint transforms
  kinematics.py  forward kinematics (numpy and jax.numpy), bvh_positions
  resample.py    frame-rate change by slerp
  mirror.py      left/right mirroring
  root.py        root motion as pos_rot_deltas
  pipeline.py    MotionPipeline: the feature pipeline (fit / transform / inverse / save / load)
  positions.py   PositionPipeline: joint positions (+ velocities) as features, same interface
  ik.py          inverse kinematics: node positions -> joint rotations on the source skeleton
  representations.py  data.representation -> pipeline class; load_pipeline dispatches on the saved format
  inspect.py, roundtrip.py   command-line tools
"""
