"""Persona-Gestor's pickled data files -> plain numbers and names -> our fitted MotionPipeline.

The reference's data preparation (src/data/Data_Processing/{Trinity,BEAT}/prepare_*_datasets.py
and extract_*_motion_features.py in the authors' repository) writes three files with
``joblib.dump`` next to the prepared features (``.../feat_20fps_20s_WithExp_waveform_WithStd/``):

``data_pipe_{fps}fps.sav`` (a copy of ``joint_rot/data_pipe.sav``)
    a fitted ``sklearn.pipeline.Pipeline`` of its vendored PyMO (``src.utils.pymo.preprocessing``):
    ``dwnsampl`` DownSampler(tgt_fps, keep_all) -> ``mir`` Mirror(axis='X', append=True) ->
    ``jtsel`` JointSelector(joints, include_root=True) -> ``root`` RootTransformer('pos_rot_deltas',
    position_smoothing, rotation_smoothing) -> ``exp`` MocapParameterizer('expmap') -> ``cnst``
    ConstantsRemover(eps) -> ``npf`` Numpyfier. Fitted state read here: JointSelector
    ``selected_joints`` (root first), ``not_selected_values`` (channel -> value of the first frame of
    the first take: what unselected joints get back) and ``orig_skeleton`` (the full skeleton dict);
    ConstantsRemover ``const_dims_`` / ``const_values_`` (channels constant in the first take and
    their first-frame value); Numpyfier ``org_mocap_`` (a MocapData whose emptied pandas DataFrame
    keeps the final column names, in order).
``output_scaler.sav``
    ``sklearn.preprocessing.StandardScaler`` over those columns (``mean_``, ``scale_``); generated
    features are ``inverse_transform``-ed with it, then fed to the pipeline's inverse.
``input_scaler.sav``
    a StandardScaler over the raw 16 kHz waveform windows (one feature per sample position of a
    ``train_window_secs`` window), applied before WavLM; nothing here uses it.

PyMO's column order is not ours: ``MocapParameterizer('expmap')`` inserts each joint's
``<joint>_alpha, _beta, _gamma`` (the exp map's x, y, z) at the *front* of the table while
walking the skeleton, so the exp maps come first in reverse skeleton order, followed by the
remaining columns in JointSelector order (root ``X/Y/Zposition``, position channels of other
6-channel joints), then RootTransformer's appended ``<root>_dXposition, _dZposition,
_dYrotation``; constant channels are then dropped. The names map onto ours with
``PYMO_TO_OURS`` (only the exp-map suffixes differ), and ``to_motion_pipeline`` builds a
MotionPipeline whose features come in exactly the reference's column order, with the scaler's
mean / scale and the reference's constant fills and unselected-joint pose.

Everything is read with the restricted unpickler (gesture_jax.foreign.safe_pickle): nothing in
the files is constructed or called; a structure that is not recognised is a ReferenceDataError
naming the file and what was missing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.motion.bvh import Skeleton
from gesture_jax.motion.pipeline import MotionPipeline
from gesture_jax.motion.rotations import axis_rotation, matrix_to_quat

__all__ = ["ReferenceDataError", "ReferencePipeline", "PYMO_TO_OURS", "REFERENCE_PYMO_MODULES", "pymo_to_ours",
           "ours_to_pymo", "read_reference_pipeline", "reference_pipeline_from_tree", "to_motion_pipeline",
           "load_reference_motion_pipeline", "find_reference_files"]


class ReferenceDataError(ForeignCheckpointError):
    """A reference data file (pipeline / scaler) that is not what it should be; names the file."""


# ------------------------------------------------------------------------------------- names

# PyMO column suffix -> our raw channel suffix. Every other PyMO suffix is refused by pymo_to_ours.
PYMO_TO_OURS: dict[str, str] = {
    "_alpha": "_expmap_x",        # MocapParameterizer('expmap'): axis * angle, x
    "_beta": "_expmap_y",         # ... y
    "_gamma": "_expmap_z",        # ... z
    "_Xposition": "_Xposition",   # root (heading frame, minus ground reference) / 6-channel joints
    "_Yposition": "_Yposition",
    "_Zposition": "_Zposition",
    "_dXposition": "_dXposition",  # RootTransformer('pos_rot_deltas') ground velocity, heading frame
    "_dZposition": "_dZposition",
    "_dYrotation": "_dYrotation",  # turning speed (radians per frame)
}
_OURS_TO_PYMO = {v: k for k, v in PYMO_TO_OURS.items()}


def _split(name: str, table: dict[str, str]) -> tuple[str, str] | None:
    # longest suffix first: "_dXposition" must not be read as joint "..._d" + "Xposition"
    for suf in sorted(table, key=len, reverse=True):
        if name.endswith(suf) and len(name) > len(suf):
            return name[:-len(suf)], suf
    return None


def pymo_to_ours(name: str) -> str:
    """Our raw channel name of a PyMO column name (``Hips_alpha`` -> ``Hips_expmap_x``)."""
    s = _split(str(name), PYMO_TO_OURS)
    if s is None:
        raise ReferenceDataError(f"PyMO column {name!r} has no counterpart in gesture_jax's motion features "
                                 f"(known suffixes: {', '.join(PYMO_TO_OURS)})")
    return s[0] + PYMO_TO_OURS[s[1]]


def ours_to_pymo(name: str) -> str:
    """PyMO's column name of one of our raw channel names (``Hips_expmap_x`` -> ``Hips_alpha``)."""
    s = _split(str(name), _OURS_TO_PYMO)
    if s is None:
        raise ReferenceDataError(f"channel {name!r} has no PyMO counterpart")
    return s[0] + _OURS_TO_PYMO[s[1]]


# ------------------------------------------------------------------------------------- the record

@dataclass
class ReferencePipeline:
    """What a reference data_pipe file holds, as plain numbers and names.

    steps: (step name, class name) in pipeline order. fps: DownSampler's target rate (None
    without one). frame_time: the Numpyfier template's frame time, when present.
    selected_joints: JointSelector's fitted selection (root first when include_root), or every
    joint without a JointSelector. columns: final feature names in order (PyMO names).
    constant_names / constant_values: ConstantsRemover's dropped channels and fills.
    skeleton: the full source skeleton (JointSelector.orig_skeleton, else the template's).
    unselected_values: channel -> value unselected joints are restored with (None if absent).
    """

    source: str
    steps: list[tuple[str, str]]
    columns: list[str]
    root_name: str
    selected_joints: list[str]
    include_root: bool = True
    root_method: str = ""
    position_smoothing: float = 0.0
    rotation_smoothing: float = 0.0
    parameterization: str = ""
    fps: float | None = None
    frame_time: float | None = None
    mirror_axis: str | None = None
    constant_eps: float | None = None
    constant_names: list[str] = field(default_factory=list)
    constant_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    skeleton: Skeleton | None = None
    unselected_values: dict[str, float] | None = None

    @property
    def feature_dim(self) -> int:
        return len(self.columns)


# ------------------------------------------------------------------------------------- inert records

def _is_record(x: Any) -> bool:
    """An inert placeholder of the restricted unpickler (safe_pickle.Opaque), by duck type."""
    return isinstance(getattr(x, "name", None), str) and hasattr(x, "state") and hasattr(x, "args")


def _cls(x: Any) -> str:
    return x.name.rsplit(".", 1)[-1] if _is_record(x) else type(x).__name__


def _state(x: Any, where: str) -> dict:
    """The attribute dict a record was BUILT with (a (dict, slots) pair is merged)."""
    st = x.state
    if isinstance(st, tuple) and len(st) == 2 and all(s is None or isinstance(s, dict) for s in st):
        merged: dict = {}
        for s in st:
            merged.update(s or {})
        st = merged
    if not isinstance(st, dict):
        raise ReferenceDataError(f"{where}: {x.name} carries no attribute dict (got {type(st).__name__})")
    return st


def _dtype_of(d: Any) -> np.dtype:
    if isinstance(d, np.dtype):
        return d
    if _is_record(d) and d.name.endswith("dtype") and d.args:
        dt = np.dtype(str(d.args[0]))
        st = d.state
        if isinstance(st, tuple) and len(st) > 1 and st[1] in ("<", ">", "|", "="):
            dt = dt.newbyteorder(st[1]) if st[1] in "<>" else dt
        return dt
    raise ValueError(f"not a dtype: {d!r}")


def _num(x: Any, what: str, where: str) -> float:
    """A real number however the pickle stored it (Python, numpy scalar, 0-d array, scalar record)."""
    if isinstance(x, (bool, int, float, np.integer, np.floating, np.bool_)):
        return float(x)
    if isinstance(x, np.ndarray) and x.size == 1 and x.dtype.kind in "biuf":
        return float(x.reshape(()))
    if _is_record(x) and x.name.endswith("multiarray.scalar") and len(x.args) == 2 \
            and isinstance(x.args[1], (bytes, bytearray)):
        try:
            dt = _dtype_of(x.args[0])
            if dt.kind in "biuf":
                return float(np.frombuffer(bytes(x.args[1]), dtype=dt)[0])
        except (ValueError, TypeError, IndexError):
            pass
    raise ReferenceDataError(f"{where}: {what} is not a number ({_describe(x)})")


def _describe(x: Any) -> str:
    if _is_record(x):
        return f"an object of {x.name}"
    if isinstance(x, np.ndarray):
        return f"array {x.dtype} {x.shape}"
    return type(x).__name__


def _strings(x: Any, what: str, where: str) -> list[str]:
    """A list of names from a list / tuple / array of str, or a pandas Index record."""
    if _is_record(x):
        found = _index_data(x, depth=0)
        if found is None:
            raise ReferenceDataError(f"{where}: {what} is {_describe(x)}, not a recognised pandas Index "
                                     f"(expected pandas' _new_Index(cls, {{'data': [...]}}))")
        x = found
    if isinstance(x, np.ndarray):
        x = x.reshape(-1).tolist()
    if isinstance(x, (list, tuple)) and all(isinstance(s, str) for s in x):
        return [str(s) for s in x]
    if isinstance(x, (list, tuple)):
        bad = next(s for s in x if not isinstance(s, str))
        raise ReferenceDataError(f"{where}: {what} holds {_describe(bad)} where a name was expected"
                                 + (" (a MultiIndex?)" if isinstance(bad, tuple) else ""))
    raise ReferenceDataError(f"{where}: {what} is {_describe(x)}, not a list of names")


def _index_data(x: Any, depth: int) -> Any:
    """The labels inside a pickled pandas Index: ``_new_Index(cls, {'data': labels, ...})``, with
    labels an object / unicode array (or a list), possibly wrapped in an extension-array record."""
    if depth > 4:
        return None
    if isinstance(x, (list, tuple)) and all(isinstance(s, str) for s in x):
        return list(x)
    if isinstance(x, np.ndarray):
        return x if x.dtype.kind in "OUS" else None
    if isinstance(x, dict):
        for key in ("data", "_ndarray", "_data", "_pa_array"):
            if key in x:
                got = _index_data(x[key], depth + 1)
                if got is not None:
                    return got
        return None
    if _is_record(x):
        if "MultiIndex" in x.name or any("MultiIndex" in getattr(a, "name", "") for a in x.args
                                         if _is_record(a)):
            return None
        for part in (*x.args, x.state):
            got = _index_data(part, depth + 1)
            if got is not None:
                return got
    if isinstance(x, tuple):
        for part in x:
            got = _index_data(part, depth + 1)
            if got is not None:
                return got
    return None


def _frame_columns(df: Any, where: str) -> list[str]:
    """Column names of a pickled pandas DataFrame record (any pandas since 0.14)."""
    if not (_is_record(df) and df.name.endswith("DataFrame")):
        raise ReferenceDataError(f"{where}: expected a pandas DataFrame, found {_describe(df)}")
    st = _state(df, where)
    mgr = st.get("_mgr", st.get("_data"))
    if mgr is None:
        raise ReferenceDataError(f"{where}: the DataFrame has no block manager ('_mgr' / '_data'); "
                                 f"its state has {sorted(st)}")
    axes = None
    if _is_record(mgr):
        ms, ma = mgr.state, mgr.args
        if isinstance(ma, tuple) and len(ma) == 2 and isinstance(ma[1], (list, tuple)) and len(ma[1]) == 2:
            axes = ma[1]                     # pandas >= 1.3: BlockManager(blocks, [columns, index])
        elif isinstance(ms, tuple) and len(ms) >= 4 and isinstance(ms[3], dict) and "0.14.1" in ms[3]:
            axes = ms[3]["0.14.1"].get("axes")  # pandas < 1.3: (axes, values, items, {"0.14.1": ...})
        elif isinstance(ms, tuple) and ms and isinstance(ms[0], (list, tuple)) and len(ms[0]) == 2:
            axes = ms[0]
    if axes is None or len(axes) != 2:
        raise ReferenceDataError(f"{where}: unrecognised pandas block manager ({_describe(mgr)}): no "
                                 f"(columns, index) axes in its state")
    return _strings(axes[0], "the DataFrame's columns", where)


# ------------------------------------------------------------------------------------- skeleton

def _skeleton_from_pymo(sk: Any, where: str) -> Skeleton:
    """Our Skeleton from PyMO's dict {joint: {parent, channels, offsets, order, children}} (file
    order; end sites are the ``<parent>_Nub`` entries without channels)."""
    if not isinstance(sk, dict) or not sk:
        raise ReferenceDataError(f"{where}: the skeleton is {_describe(sk)}, not PyMO's joint dict")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    ends: dict[int, np.ndarray] = {}
    index: dict[str, int] = {}
    for name, j in sk.items():
        if not isinstance(j, dict) or "parent" not in j or "offsets" not in j:
            raise ReferenceDataError(f"{where}: skeleton entry {name!r} lacks 'parent' / 'offsets'")
        parent = j.get("parent")
        chans = _strings(j.get("channels") or [], f"channels of {name!r}", where)
        off = [_num(v, f"offset of {name!r}", where) for v in (j.get("offsets") or [0.0, 0.0, 0.0])]
        if len(off) != 3:
            raise ReferenceDataError(f"{where}: joint {name!r} has {len(off)} offsets")
        if parent is not None and parent not in index:
            raise ReferenceDataError(f"{where}: joint {name!r} comes before its parent {parent!r}")
        if not chans and not j.get("children") and str(name).endswith("_Nub") and parent is not None:
            ends[index[parent]] = np.asarray(off, np.float64)
            continue
        index[str(name)] = len(names)
        names.append(str(name))
        parents.append(-1 if parent is None else index[parent])
        offsets.append(off)
        channels.append(chans)
    if sum(p < 0 for p in parents) != 1:
        raise ReferenceDataError(f"{where}: the skeleton has {sum(p < 0 for p in parents)} roots")
    return Skeleton(names, parents, np.asarray(offsets, np.float64), channels, ends)


# ------------------------------------------------------------------------------------- pipeline

_SUPPORTED = ("DownSampler", "Mirror", "JointSelector", "RootTransformer", "MocapParameterizer",
              "ConstantsRemover", "Numpyfier")
# relative order the features depend on (DownSampler / Mirror may sit anywhere before JointSelector)
_CORE_ORDER = ["JointSelector", "RootTransformer", "MocapParameterizer", "ConstantsRemover", "Numpyfier"]


def _need(attrs: dict, key: str, step: str, where: str) -> Any:
    if key not in attrs:
        raise ReferenceDataError(f"{where}: step {step} has no attribute {key!r} "
                                 f"(was the pipeline fitted? it has: {', '.join(sorted(map(str, attrs)))})")
    return attrs[key]


def reference_pipeline_from_tree(tree: Any, source: str = "<data_pipe>") -> ReferencePipeline:
    """ReferencePipeline from the restricted unpickler's tree of a data_pipe file."""
    where = str(source)
    if not (_is_record(tree) and tree.name.endswith("Pipeline")):
        raise ReferenceDataError(f"{where}: expected a pickled sklearn Pipeline of PyMO steps, found "
                                 f"{_describe(tree)}")
    steps_raw = _state(tree, where).get("steps")
    if not isinstance(steps_raw, (list, tuple)) or not steps_raw:
        raise ReferenceDataError(f"{where}: the Pipeline has no 'steps' list")
    steps: list[tuple[str, str]] = []
    by_kind: dict[str, tuple[str, dict]] = {}
    for k, st in enumerate(steps_raw):
        if not (isinstance(st, (list, tuple)) and len(st) == 2 and isinstance(st[0], str)):
            raise ReferenceDataError(f"{where}: pipeline step {k} is not a (name, transformer) pair")
        name, obj = st
        kind = _cls(obj)
        steps.append((name, kind))
        if not _is_record(obj) or kind not in _SUPPORTED:
            raise ReferenceDataError(f"{where}: pipeline step {name!r} ({_describe(obj)}) is not one gesture_jax's "
                                     f"motion pipeline reproduces (supported: {', '.join(_SUPPORTED)})")
        if kind in by_kind:
            raise ReferenceDataError(f"{where}: pipeline has two {kind} steps ({by_kind[kind][0]!r}, {name!r})")
        by_kind[kind] = (name, _state(obj, f"{where}, step {name!r}"))
    core = [kind for _, kind in steps if kind in _CORE_ORDER]
    if core != [k for k in _CORE_ORDER if k in by_kind]:
        raise ReferenceDataError(f"{where}: steps in an order gesture_jax does not reproduce: {core} "
                                 f"(expected {' -> '.join(_CORE_ORDER)})")
    if "Numpyfier" not in by_kind:
        raise ReferenceDataError(f"{where}: no Numpyfier step: the feature column order is not stored")
    for kind in ("RootTransformer", "MocapParameterizer"):
        if kind not in by_kind:
            raise ReferenceDataError(f"{where}: no {kind} step; gesture_jax's features need "
                                     f"RootTransformer('pos_rot_deltas') and MocapParameterizer('expmap')")

    def step(kind: str) -> tuple[str, dict]:
        n, a = by_kind[kind]
        return f"{where}, step {n!r} ({kind})", a

    # Numpyfier: the template MocapData and its columns
    w, npf = step("Numpyfier")
    mocap = _need(npf, "org_mocap_", "Numpyfier", where)
    if not (_is_record(mocap) and mocap.name.endswith("MocapData")):
        raise ReferenceDataError(f"{w}: org_mocap_ is {_describe(mocap)}, not a PyMO MocapData")
    mst = _state(mocap, w)
    columns = _frame_columns(_need(mst, "values", "Numpyfier.org_mocap_", w), w + ", org_mocap_.values")
    root_name = mst.get("root_name")
    if not isinstance(root_name, str) or not root_name:
        raise ReferenceDataError(f"{w}: org_mocap_ has no root_name")
    frame_time = mst.get("framerate")
    frame_time = _num(frame_time, "org_mocap_.framerate", w) if frame_time is not None else None
    skeleton = _skeleton_from_pymo(mst["skeleton"], w + ", org_mocap_.skeleton") if mst.get("skeleton") else None

    ref = ReferencePipeline(source=where, steps=steps, columns=columns, root_name=root_name,
                            selected_joints=[], frame_time=frame_time or None, skeleton=skeleton)

    if "DownSampler" in by_kind:
        w, a = step("DownSampler")
        ref.fps = _num(_need(a, "tgt_fps", "DownSampler", w), "tgt_fps", w)
    if "Mirror" in by_kind:
        w, a = step("Mirror")
        ref.mirror_axis = str(a.get("axis", "X"))

    w, a = step("RootTransformer")
    ref.root_method = str(_need(a, "method", "RootTransformer", w))
    ref.position_smoothing = _num(a.get("position_smoothing", 0), "position_smoothing", w)
    ref.rotation_smoothing = _num(a.get("rotation_smoothing", 0), "rotation_smoothing", w)
    w, a = step("MocapParameterizer")
    ref.parameterization = str(_need(a, "param_type", "MocapParameterizer", w))

    if "JointSelector" in by_kind:
        w, a = step("JointSelector")
        ref.include_root = bool(a.get("include_root", False))
        ref.selected_joints = _strings(_need(a, "selected_joints", "JointSelector", w), "selected_joints", w)
        if a.get("orig_skeleton"):
            ref.skeleton = _skeleton_from_pymo(a["orig_skeleton"], w + ", orig_skeleton")
        nsv = a.get("not_selected_values")
        if isinstance(nsv, dict):
            ref.unselected_values = {str(k): _num(v, f"not_selected_values[{k!r}]", w) for k, v in nsv.items()}
        elif nsv is not None:
            raise ReferenceDataError(f"{w}: not_selected_values is {_describe(nsv)}, not a dict")
    else:
        if ref.skeleton is None:
            raise ReferenceDataError(f"{where}: no JointSelector and no skeleton in the Numpyfier template")
        ref.selected_joints = list(ref.skeleton.names)
        ref.unselected_values = {}

    if "ConstantsRemover" in by_kind:
        w, a = step("ConstantsRemover")
        ref.constant_eps = _num(a["eps"], "eps", w) if "eps" in a else None
        names = _strings(_need(a, "const_dims_", "ConstantsRemover", w), "const_dims_", w)
        vals = _need(a, "const_values_", "ConstantsRemover", w)
        if not isinstance(vals, dict):
            raise ReferenceDataError(f"{w}: const_values_ is {_describe(vals)}, not a dict")
        missing = [n for n in names if n not in vals]
        if missing:
            raise ReferenceDataError(f"{w}: const_values_ has no value for {missing[:5]}")
        ref.constant_names = names
        ref.constant_values = np.array([_num(vals[n], f"const_values_[{n!r}]", w) for n in names], np.float64)
    return ref


# Where the reference's pickles name PyMO's classes: its vendored copy (src/utils/pymo/, imported as
# ``src.utils.pymo``); upstream ``pymo.`` is allowed by safe_pickle itself.
REFERENCE_PYMO_MODULES: tuple[str, ...] = ("src.utils.pymo",)


def read_reference_pipeline(path: str | os.PathLike, *,
                            pymo_modules: Sequence[str] = REFERENCE_PYMO_MODULES) -> ReferencePipeline:
    """Read a reference ``data_pipe*.sav`` (joblib / pickle) without constructing anything in it.
    pymo_modules: module prefixes besides ``pymo`` its PyMO classes may come from."""
    from gesture_jax.foreign.safe_pickle import load_plain
    return reference_pipeline_from_tree(load_plain(path, extra_allowed=tuple(pymo_modules)), str(path))


# ------------------------------------------------------------------------------------- to our pipeline

def _rest_pose(ref: ReferencePipeline, sk: Skeleton, selected: set[str],
               unselected_pose: str) -> tuple[np.ndarray, np.ndarray]:
    """Rotation quaternions [J, 4] and translations [J, 3] joints outside the selection get back:
    the reference's JointSelector values (first frame of its first take), or zero angles."""
    J = sk.num_joints
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (J, 1))
    trans = sk.offsets.copy()
    values = ref.unselected_values
    for j, name in enumerate(sk.names):
        if name in selected:
            continue
        if values is None and unselected_pose != "zero":
            raise ReferenceDataError(
                f"{ref.source}: JointSelector stores no not_selected_values, so the pose of the joints it "
                f"leaves out (e.g. {name!r}) is unknown; pass unselected_pose='zero' to give them zero angles")
        R = np.eye(3)
        for c in sk.channels[j]:
            if unselected_pose == "zero":
                v = 0.0 if c.endswith("rotation") else float(sk.offsets[j, "XYZ".index(c[0])])
            else:
                key = f"{name}_{c}"
                if key not in values:
                    raise ReferenceDataError(f"{ref.source}: JointSelector.not_selected_values has no {key!r} "
                                             f"for unselected joint {name!r}")
                v = values[key]
            if c.endswith("rotation"):
                R = R @ axis_rotation(c[0], np.deg2rad(v))
            else:
                trans[j, "XYZ".index(c[0])] = v
        quats[j] = matrix_to_quat(R)
    return quats, trans


def to_motion_pipeline(ref: ReferencePipeline, output_scaler: Any, *, fps: float | None = None,
                       unselected_pose: str = "reference") -> MotionPipeline:
    """A fitted MotionPipeline reproducing the reference's features exactly in layout.

    Its ``feature_names`` map with ``ours_to_pymo`` onto ``ref.columns`` in the same order; its
    mean / std are ``output_scaler``'s mean / scale (a safe_pickle.ScalerNumbers: with_mean=False
    gives 0, with_std=False gives 1); channels the reference dropped as constant are restored with
    its values; joints outside the selection with the reference's JointSelector values
    (``unselected_pose='zero'``: zero angles, for pipelines that did not store them).

    fps: the model frame rate (default: the reference's DownSampler rate, else its template's
    frame time). What is not reproduced bit for bit (forward direction only; ``inverse`` is
    exact): our resampler interpolates where DownSampler keeps every k-th frame (the same frames
    for integer ratios), and exp maps are kept continuous in time by a different rule than
    PyMO's ``unroll`` (equal rotations; the vectors can differ by 2*pi*axis near pi).
    """
    src = ref.source
    if ref.root_method != "pos_rot_deltas":
        raise ReferenceDataError(f"{src}: RootTransformer({ref.root_method!r}) is not reproduced; gesture_jax's "
                                 f"motion features use 'pos_rot_deltas' (the reference's full-body setting)")
    if ref.parameterization != "expmap":
        raise ReferenceDataError(f"{src}: MocapParameterizer({ref.parameterization!r}) is not reproduced; "
                                 f"gesture_jax's motion features are exp maps ('expmap')")
    if not ref.include_root:
        raise ReferenceDataError(f"{src}: JointSelector(include_root=False) is not reproduced; gesture_jax always "
                                 f"keeps the root")
    if unselected_pose not in ("reference", "zero"):
        raise ValueError(f"unselected_pose must be 'reference' or 'zero', got {unselected_pose!r}")
    sk = ref.skeleton
    if sk is None:
        raise ReferenceDataError(f"{src}: no skeleton stored (JointSelector.orig_skeleton or the Numpyfier "
                                 f"template), so features cannot be inverted to BVH")
    if sk.names[0] != ref.root_name:
        raise ReferenceDataError(f"{src}: the skeleton's root is {sk.names[0]!r} but the pipeline's is "
                                 f"{ref.root_name!r}")
    missing = [j for j in ref.selected_joints if j not in sk.names]
    if missing:
        raise ReferenceDataError(f"{src}: selected joint(s) {missing[:5]} are not in the stored skeleton")
    own = ref.fps if ref.fps else (1.0 / ref.frame_time if ref.frame_time else None)
    if fps is not None and own and abs(float(fps) - float(own)) > 1e-6 * float(own):
        raise ReferenceDataError(f"{src}: the reference's pipeline makes {float(own):g} fps features (its root "
                                 f"deltas and scaler are per frame at that rate) but the model runs at {float(fps):g} "
                                 f"fps (data.fps): use the data_pipe file of {float(fps):g} fps")
    if fps is None:
        fps = own
    if not fps:
        raise ReferenceDataError(f"{src}: no DownSampler rate nor template frame time; pass fps")

    # scaler
    mean = getattr(output_scaler, "mean", None)
    scale = getattr(output_scaler, "scale", None)
    F = ref.feature_dim
    widths = {int(getattr(output_scaler, "n_features", -1))}
    widths |= {np.asarray(a).reshape(-1).shape[0] for a in (mean, scale) if a is not None}
    if widths != {F}:
        raise ReferenceDataError(f"{src}: the output scaler has {next(w for w in widths if w != F)} features but "
                                 f"the pipeline's Numpyfier has {F} columns: not the scaler of this pipeline")
    mean = np.zeros(F) if mean is None else np.asarray(mean, np.float64).reshape(-1)
    std = np.ones(F) if scale is None else np.asarray(scale, np.float64).reshape(-1)
    if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ReferenceDataError(f"{src}: the output scaler's mean / scale are not finite and positive")

    # names: PyMO -> ours
    feat = [pymo_to_ours(c) for c in ref.columns]
    const = {pymo_to_ours(c): float(v) for c, v in zip(ref.constant_names, ref.constant_values)}
    both = sorted(set(feat) & set(const))
    if both:
        raise ReferenceDataError(f"{src}: channel(s) {both[:5]} are both features and constants")
    joints = [j for j in ref.selected_joints if j != ref.root_name]
    raw = MotionPipeline._raw_names(sk, MotionPipeline(fps=fps, joints=joints)._selection(sk, src))
    extra = [c for c in [*feat, *const] if c not in set(raw)]
    absent = [c for c in raw if c not in set(feat) and c not in const]
    if extra or absent:
        raise ReferenceDataError(
            f"{src}: the reference's channels differ from gesture_jax's for this skeleton and selection: "
            + (f"reference-only {[ours_to_pymo(c) for c in extra[:5]]} " if extra else "")
            + (f"missing {[ours_to_pymo(c) for c in absent[:5]]}" if absent else ""))
    quats, trans = _rest_pose(ref, sk, set(ref.selected_joints) | {ref.root_name}, unselected_pose)
    return MotionPipeline.from_feature_order(
        sk, feat, mean, std, const, quats, trans, fps=float(fps), joints=joints,
        position_smoothing=ref.position_smoothing, rotation_smoothing=ref.rotation_smoothing,
        constant_eps=ref.constant_eps if ref.constant_eps else 1e-6)


# ------------------------------------------------------------------------------------- files

def find_reference_files(directory: str | os.PathLike, fps: float | None = None) -> tuple[Path, Path]:
    """(data_pipe file, output_scaler file) in a reference ``feat_*`` folder (or its joint_rot/)."""
    d = Path(directory)
    # With the model's fps known, only that rate's file or a rate-less data_pipe.sav (whose DownSampler
    # rate to_motion_pipeline checks) qualify: another rate's file must not be picked silently.
    cands = ([d / f"data_pipe_{int(fps) if float(fps).is_integer() else fps}fps.sav"] if fps
             else sorted(d.glob("data_pipe_*fps.sav"))) + [d / "data_pipe.sav", d / "joint_rot" / "data_pipe.sav"]
    pipe = next((p for p in cands if p.is_file()), None)
    scaler = d / "output_scaler.sav"
    if pipe is None:
        raise ReferenceDataError(f"{d}: no data_pipe_<fps>fps.sav or data_pipe.sav (the reference's motion "
                                 f"pipeline) in this folder")
    if not scaler.is_file():
        raise ReferenceDataError(f"{d}: no output_scaler.sav (the reference's motion scaler) in this folder")
    return pipe, scaler


def load_reference_motion_pipeline(pipeline_file: str | os.PathLike, output_scaler_file: str | os.PathLike,
                                   *, fps: float | None = None, unselected_pose: str = "reference",
                                   expect_features: int | None = None) -> MotionPipeline:
    """Both reference files -> our fitted MotionPipeline (see to_motion_pipeline); expect_features:
    the model's motion width (e.g. 156 for BEAT), checked against the files."""
    from gesture_jax.foreign.safe_pickle import read_scaler
    ref = read_reference_pipeline(pipeline_file)
    scaler = read_scaler(output_scaler_file)
    if expect_features is not None and ref.feature_dim != int(expect_features):
        raise ReferenceDataError(f"{pipeline_file}: {ref.feature_dim} motion features, but the model has "
                                 f"{int(expect_features)}")
    try:
        return to_motion_pipeline(ref, scaler, fps=fps, unselected_pose=unselected_pose)
    except ReferenceDataError as e:
        if "output scaler" in str(e):   # name the scaler file, not the pipeline's
            msg = str(e)
            prefix = f"{ref.source}: "
            raise ReferenceDataError(f"{output_scaler_file}: {msg[len(prefix):] if msg.startswith(prefix) else msg}") \
                from None
        raise

