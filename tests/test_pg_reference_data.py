"""Persona-Gestor's pickled motion pipeline / scaler files -> our MotionPipeline in their layout.

The reference files are crafted here with the real machinery: scikit-learn's Pipeline and
StandardScaler, joblib.dump (the reference's writer) or pickle, and stand-in classes written
under tmp_path with the module paths the real files name (the reference's vendored PyMO,
``src.utils.pymo.preprocessing`` / ``src.utils.pymo.data``, and pandas' DataFrame / BlockManager /
Index with pandas' own pickle layouts: ``BlockManager(blocks, axes)`` since pandas 1.3, the
``(axes, values, items, {"0.14.1": ...})`` state before), holding the same fitted attributes.
The stand-ins only exist while the files are written; reading never imports them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import sys
import types
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from data_prep.synthetic import make_skeleton
from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign.safe_pickle import read_scaler
from gesture_jax.methods.persona_gestor import reference_data as rd
from gesture_jax.motion.bvh import BVH, Skeleton, read_bvh, write_bvh
from gesture_jax.motion.channels import local_transforms
from gesture_jax.motion.pipeline import MotionPipeline
from gesture_jax.motion.rotations import euler_to_matrix, expmap_to_matrix, matrix_to_expmap

# ------------------------------------------------------------------------------------- stand-ins

_STAND_INS = {
    "src/utils/pymo/data.py": '''
class MocapData():
    def __init__(self):
        self.skeleton = {}
        self.values = None
        self.channel_names = []
        self.framerate = 0.0
        self.root_name = ''
''',
    "src/utils/pymo/preprocessing.py": '''
from sklearn.base import BaseEstimator, TransformerMixin

class DownSampler(BaseEstimator, TransformerMixin):
    def __init__(self, tgt_fps, keep_all=False):
        self.tgt_fps = tgt_fps
        self.keep_all = keep_all

class Mirror(BaseEstimator, TransformerMixin):
    def __init__(self, axis="X", append=True):
        self.axis = axis
        self.append = append

class JointSelector(BaseEstimator, TransformerMixin):
    def __init__(self, joints, include_root=False):
        self.joints = joints
        self.include_root = include_root

class RootTransformer(BaseEstimator, TransformerMixin):
    def __init__(self, method, position_smoothing=0, rotation_smoothing=0):
        self.method = method
        self.position_smoothing = position_smoothing
        self.rotation_smoothing = rotation_smoothing

class MocapParameterizer(BaseEstimator, TransformerMixin):
    def __init__(self, param_type='euler'):
        self.param_type = param_type

class ConstantsRemover(BaseEstimator, TransformerMixin):
    def __init__(self, eps=1e-6):
        self.eps = eps

class Numpyfier(BaseEstimator, TransformerMixin):
    def __init__(self):
        pass

class EulerReorder(BaseEstimator, TransformerMixin):
    def __init__(self, new_order):
        self.new_order = new_order
''',
    "pandas/core/indexes/base.py": '''
import numpy as np

def _new_Index(cls, d):
    raise RuntimeError("stand-in: never called when reading")

class Index:
    def __init__(self, data, name=None):
        self._data = np.asarray(list(data), dtype=object)
        self.name = name

    def __reduce__(self):                       # pandas' Index.__reduce__
        return _new_Index, (type(self), {"data": self._data, "name": self.name}), None
''',
    "pandas/core/indexes/timedeltas.py": '''
import numpy as np
from pandas.core.indexes.base import Index

class TimedeltaIndex(Index):
    def __init__(self):
        self._data = np.zeros(0, "m8[ns]")
        self.name = None
''',
    "pandas/_libs/internals.py": '''
def _unpickle_block(values, placement, ndim):
    raise RuntimeError("stand-in: never called when reading")

class Block:
    def __init__(self, values):
        self.values = values

    def __reduce__(self):                       # pandas >= 1.3 blocks
        return _unpickle_block, (self.values, slice(0, self.values.shape[0], 1), 2)
''',
    "pandas/core/internals/managers.py": '''
import copyreg

class BlockManager:
    legacy = False                              # True: the pre-1.3 __getstate__ layout

    def __init__(self, blocks, axes):
        self.blocks, self.axes = blocks, axes

    def __reduce_ex__(self, protocol):
        if not BlockManager.legacy:
            return type(self), (tuple(self.blocks), list(self.axes))
        values = [b.values for b in self.blocks]
        state = (list(self.axes), values, [self.axes[0]],
                 {"0.14.1": {"axes": list(self.axes),
                             "blocks": [{"values": v, "mgr_locs": slice(0, v.shape[0], 1)} for v in values]}})
        return copyreg.__newobj__, (type(self),), state
''',
    "pandas/core/frame.py": '''
class DataFrame:
    def __init__(self, mgr):
        self._mgr = mgr

    def __getstate__(self):                     # NDFrame.__getstate__
        return {"_mgr": self._mgr, "_typ": "dataframe", "_metadata": [], "attrs": {},
                "_flags": {"allows_duplicate_labels": True}}
''',
}


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """The stand-in modules; ``installed()`` makes them importable under the real names while the
    test writes its files (only then: scikit-learn probes ``sys.modules['pandas']``)."""
    root = tmp_path / "stand_ins"
    mods: dict[str, types.ModuleType] = {}
    order = ["pandas/core/indexes/base.py", "pandas/core/indexes/timedeltas.py", "pandas/_libs/internals.py",
             "pandas/core/internals/managers.py", "pandas/core/frame.py", "src/utils/pymo/data.py",
             "src/utils/pymo/preprocessing.py"]

    @contextlib.contextmanager
    def installed():
        with monkeypatch.context() as m:
            for name, mod in mods.items():
                m.setitem(sys.modules, name, mod)
            yield

    for rel in order:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_STAND_INS[rel])
        name = rel[:-3].replace("/", ".")
        parts = name.split(".")
        for k in range(1, len(parts)):           # parent packages
            pkg = ".".join(parts[:k])
            if pkg not in mods:
                mods[pkg] = types.ModuleType(pkg)
                mods[pkg].__path__ = [str(root.joinpath(*parts[:k]))]
        spec = importlib.util.spec_from_file_location(name, path)
        mods[name] = importlib.util.module_from_spec(spec)
        with installed():
            spec.loader.exec_module(mods[name])
    ns = types.SimpleNamespace(pre=mods["src.utils.pymo.preprocessing"], data=mods["src.utils.pymo.data"],
                               pd_frame=mods["pandas.core.frame"], pd_managers=mods["pandas.core.internals.managers"],
                               pd_index=mods["pandas.core.indexes.base"], pd_td=mods["pandas.core.indexes.timedeltas"],
                               pd_internals=mods["pandas._libs.internals"], installed=installed)
    monkeypatch.setattr(ns.pd_managers.BlockManager, "legacy", False)
    return ns


def empty_frame(ns, columns):
    """pandas DataFrame with these columns and no rows, as PyMO's Numpyfier keeps it."""
    cols = ns.pd_index.Index(columns)
    mgr = ns.pd_managers.BlockManager([ns.pd_internals.Block(np.zeros((len(columns), 0)))],
                                      [cols, ns.pd_td.TimedeltaIndex()])
    return ns.pd_frame.DataFrame(mgr)


# ------------------------------------------------------------------------------------- test motion

# A Trinity-like skeleton with one 6-channel non-root joint (Spine), so position columns of
# other joints are exercised; selection order differs from skeleton order (Head before Neck).
SELECTION = ["Spine", "Spine1", "Spine2", "Spine3", "Head", "Neck", "RightShoulder", "RightArm", "RightForeArm",
             "RightHand", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "RightUpLeg", "RightLeg",
             "LeftUpLeg", "LeftLeg"]          # feet and toes left out
FPS = 20.0


def make_test_skeleton() -> Skeleton:
    sk = make_skeleton()
    chans = [list(c) for c in sk.channels]
    chans[sk.index("Spine")] = ["Xposition", "Yposition", "Zposition"] + chans[sk.index("Spine")]
    return Skeleton(sk.names, sk.parents, sk.offsets, chans, sk.end_sites)



def make_motion(sk: Skeleton, n: int = 48, seed: int = 0) -> BVH:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    cols = []
    for j, name in enumerate(sk.names):
        for c in sk.channels[j]:
            if name == "Spine2" and c.endswith("rotation"):
                v = np.zeros(n)                                   # constant channels (exp map 0)
            elif name == "Spine" and c == "Yposition":
                v = np.full(n, 9.0)                               # constant position channel
            elif c.endswith("position"):
                base = sk.offsets[j, "XYZ".index(c[0])]
                v = base + 2.0 * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t + rng.uniform(0, 6))
                if name == "Hips" and c != "Yposition":
                    v = v + 30.0 * t * (1 if c == "Xposition" else -0.5)   # walks and drifts
            else:
                amp = 60.0 if (name == "Hips" and c == "Yrotation") else 25.0
                v = amp * np.sin(2 * np.pi * rng.uniform(0.2, 0.9) * t + rng.uniform(0, 6))
            cols.append(v)
    return BVH(sk, np.stack(cols, 1), 1.0 / FPS)



def pymo_skeleton(sk: Skeleton, keep: list[str] | None = None) -> dict:
    """PyMO's skeleton dict (parse order; end sites as '<joint>_Nub')."""
    out: dict = {}
    for j, name in enumerate(sk.names):
        if keep is not None and name not in keep:
            continue
        kids = [sk.names[k] for k in sk.children(j)] + ([f"{name}_Nub"] if j in sk.end_sites else [])
        rot = "".join(c[0] for c in sk.channels[j] if c.endswith("rotation"))
        out[name] = {"parent": None if sk.parents[j] < 0 else sk.names[sk.parents[j]],
                     "channels": list(sk.channels[j]), "offsets": [float(v) for v in sk.offsets[j]],
                     "order": rot, "children": kids}
        if j in sk.end_sites and keep is None:
            out[f"{name}_Nub"] = {"parent": name, "channels": [], "offsets": [float(v) for v in sk.end_sites[j]],
                                  "order": "", "children": []}
    return out


def pymo_columns(sk: Skeleton, selection: list[str], constants: list[str]) -> list[str]:
    """PyMO's final column order, by replaying its DataFrame column operations on names:
    JointSelector keeps '<joint>_' columns per selected joint (root first, list order),
    RootTransformer appends the root deltas, MocapParameterizer walks the skeleton replacing each
    joint's rotation columns by alpha/beta/gamma inserted at position 0, ConstantsRemover drops."""
    root = sk.names[0]
    all_cols = [f"{name}_{c}" for j, name in enumerate(sk.names) for c in sk.channels[j]]
    sel = [root] + selection
    cols = [c for joint in sel for c in all_cols if (joint + "_") in c and "Nub" not in c]
    cols += [f"{root}_dXposition", f"{root}_dZposition", f"{root}_dYrotation"]
    for name in [n for n in sk.names if n in sel]:
        order = "".join(c[0] for c in sk.channels[sk.index(name)] if c.endswith("rotation"))
        for a in order:
            cols.remove(f"{name}_{a}rotation")
        for p in ("gamma", "beta", "alpha"):
            cols.insert(0, f"{name}_{p}")
    return [c for c in cols if c not in constants]


def reference_numbers(bvh: BVH, selection: list[str]):
    """What the reference's fit would store for this take: raw features in PyMO's column order
    (per name, from our raw channels), the constant channels (std < 1e-6, first-frame value) and
    the unselected joints' first-frame channel values."""
    sk = bvh.skeleton
    raw, _, _, _, names = MotionPipeline(fps=FPS, joints=selection)._raw(bvh, False)
    pymo_of = {rd.ours_to_pymo(n): k for k, n in enumerate(names)}
    constants = [c for c in pymo_columns(sk, selection, []) if raw[:, pymo_of[c]].std() < 1e-6]
    columns = pymo_columns(sk, selection, constants)
    table = raw[:, [pymo_of[c] for c in columns]]
    const_values = {c: np.float64(raw[0, pymo_of[c]]) for c in constants}
    unselected = {}
    for j, name in enumerate(sk.names):
        if name in selection or j == 0:
            continue
        for k, c in enumerate(sk.channels[j]):
            unselected[f"{name}_{c}"] = np.float64(bvh.frames[0, sk.channel_starts()[j] + k])
    return table, columns, constants, const_values, unselected


def write_reference(ns, directory: Path, bvh: BVH, selection: list[str], *, writer: str = "joblib",
                    root_method: str = "pos_rot_deltas", steps_override=None, drop=()):
    """data_pipe_20fps.sav + output_scaler.sav + input_scaler.sav as the reference writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    sk = bvh.skeleton
    table, columns, constants, const_values, unselected = reference_numbers(bvh, selection)
    P = ns.pre
    dwn = P.DownSampler(tgt_fps=int(FPS), keep_all=False)
    mir = P.Mirror(axis="X", append=True)
    jts = P.JointSelector(list(selection), include_root=True)
    jts.selected_joints = [sk.names[0]] + list(selection)
    jts.selected_channels = [c for c in columns]   # not read
    jts.not_selected = ns.pd_index.Index(sorted(unselected))
    jts.not_selected_values = unselected
    jts.orig_skeleton = pymo_skeleton(sk)
    root = P.RootTransformer(root_method, position_smoothing=0, rotation_smoothing=0)
    exp = P.MocapParameterizer("expmap")
    cnst = P.ConstantsRemover(eps=1e-6)
    cnst.const_dims_ = list(constants)
    cnst.const_values_ = dict(const_values)
    npf = P.Numpyfier()
    m = ns.data.MocapData()
    m.skeleton = pymo_skeleton(sk, keep=[sk.names[0]] + selection)
    m.values = empty_frame(ns, columns)
    m.channel_names = [(name, c) for j, name in enumerate(sk.names) for c in sk.channels[j]]
    m.framerate = 1.0 / FPS
    m.root_name = sk.names[0]
    npf.org_mocap_ = m
    for obj, attr in drop:
        delattr({"jts": jts, "cnst": cnst, "npf": npf}[obj], attr)
    steps = [("dwnsampl", dwn), ("mir", mir), ("jtsel", jts), ("root", root), ("exp", exp), ("cnst", cnst),
             ("npf", npf)]
    if steps_override is not None:
        steps = steps_override(steps)
    pipe = Pipeline(steps)
    out_scaler = StandardScaler().fit(table)
    in_scaler = StandardScaler().fit(np.random.default_rng(1).normal(size=(4, 32)))
    dump = joblib.dump if writer == "joblib" else (lambda o, p: Path(p).write_bytes(pickle.dumps(o, protocol=4)))
    with ns.installed():
        dump(pipe, directory / "data_pipe_20fps.sav")
    dump(out_scaler, directory / "output_scaler.sav")
    dump(in_scaler, directory / "input_scaler.sav")
    return types.SimpleNamespace(table=table, columns=columns, constants=constants, const_values=const_values,
                                 unselected=unselected, scaler=out_scaler, dir=directory)


# ------------------------------------------------------------------------------------- tests

def test_name_table_maps_every_pymo_suffix_both_ways():
    pairs = {"Hips_alpha": "Hips_expmap_x", "Hips_beta": "Hips_expmap_y", "Hips_gamma": "Hips_expmap_z",
             "b_r_arm_alpha": "b_r_arm_expmap_x", "Hips_Xposition": "Hips_Xposition",
             "Spine_Yposition": "Spine_Yposition", "Hips_Zposition": "Hips_Zposition",
             "Hips_dXposition": "Hips_dXposition", "Hips_dZposition": "Hips_dZposition",
             "b_root_dYrotation": "b_root_dYrotation"}
    for pymo, ours in pairs.items():
        assert rd.pymo_to_ours(pymo) == ours
        assert rd.ours_to_pymo(ours) == pymo
    for bad in ("Hips_Xrotation", "Hips_dXrotation", "alpha", "Hips_qw"):
        with pytest.raises(rd.ReferenceDataError, match="no counterpart"):
            rd.pymo_to_ours(bad)


@pytest.mark.parametrize("writer,legacy_pandas", [("joblib", False), ("joblib", True), ("pickle", False)])
def test_reads_every_fitted_number_and_name(stand_ins, tmp_path, monkeypatch, writer, legacy_pandas):
    monkeypatch.setattr(stand_ins.pd_managers.BlockManager, "legacy", legacy_pandas)
    sk = make_test_skeleton()
    bvh = make_motion(sk)
    made = write_reference(stand_ins, tmp_path / "ref", bvh, SELECTION, writer=writer)
    assert not any(k == "src" or k.startswith(("src.", "pandas")) for k in sys.modules)  # reading needs none
    ref = rd.read_reference_pipeline(made.dir / "data_pipe_20fps.sav")
    assert ref.columns == made.columns
    assert ref.steps == [("dwnsampl", "DownSampler"), ("mir", "Mirror"), ("jtsel", "JointSelector"),
                         ("root", "RootTransformer"), ("exp", "MocapParameterizer"), ("cnst", "ConstantsRemover"),
                         ("npf", "Numpyfier")]
    assert (ref.fps, ref.frame_time, ref.mirror_axis) == (20.0, 0.05, "X")
    assert ref.selected_joints == ["Hips"] + SELECTION and ref.include_root and ref.root_name == "Hips"
    assert (ref.root_method, ref.parameterization, ref.constant_eps) == ("pos_rot_deltas", "expmap", 1e-6)
    assert ref.constant_names == made.constants and len(made.constants) >= 4
    np.testing.assert_array_equal(ref.constant_values, [made.const_values[c] for c in made.constants])
    assert ref.unselected_values == {k: float(v) for k, v in made.unselected.items()}
    assert ref.skeleton.names == sk.names and ref.skeleton.parents == sk.parents
    assert ref.skeleton.channels == sk.channels
    np.testing.assert_array_equal(ref.skeleton.offsets, sk.offsets)
    assert sorted(ref.skeleton.end_sites) == sorted(sk.end_sites)
    for j, off in sk.end_sites.items():
        np.testing.assert_array_equal(ref.skeleton.end_sites[j], off)
    sc = read_scaler(made.dir / "output_scaler.sav")
    assert sc.n_features == ref.feature_dim == len(made.columns)


def test_features_come_in_reference_order_with_its_scaler_and_constants(stand_ins, tmp_path):
    sk = make_test_skeleton()
    bvh = make_motion(sk)
    made = write_reference(stand_ins, tmp_path / "ref", bvh, SELECTION)
    mp = rd.load_reference_motion_pipeline(made.dir / "data_pipe_20fps.sav", made.dir / "output_scaler.sav")
    # the exp maps of the selected joints come first, in reverse skeleton order, as PyMO inserts them
    assert [rd.ours_to_pymo(n) for n in mp.feature_names] == made.columns
    assert made.columns[:3] == ["LeftLeg_alpha", "LeftLeg_beta", "LeftLeg_gamma"]
    assert made.columns[-3:] == ["Hips_dXposition", "Hips_dZposition", "Hips_dYrotation"]
    np.testing.assert_array_equal(mp._fit.mean, made.scaler.mean_)
    np.testing.assert_array_equal(mp._fit.std, made.scaler.scale_)
    feats = mp.transform(bvh)
    # exactly what the reference feeds its model: its scaler applied to its column table
    np.testing.assert_allclose(feats, made.scaler.transform(made.table), atol=2e-5)
    # independently of our pipeline: a joint's alpha/beta/gamma are the exp map of its local
    # rotation read from the BVH's Euler channels
    raw = feats * made.scaler.scale_ + made.scaler.mean_
    for joint in ("RightForeArm", "Neck", "LeftLeg"):
        j = sk.index(joint)
        order = sk.rotation_order(j)
        start = sk.channel_starts()[j] + sk.channels[j].index(order[0] + "rotation")
        R = euler_to_matrix(np.deg2rad(bvh.frames[:, start:start + 3]), order)
        e = raw[:, [made.columns.index(f"{joint}_{p}") for p in ("alpha", "beta", "gamma")]]
        np.testing.assert_allclose(expmap_to_matrix(e), R, atol=1e-5)
        np.testing.assert_allclose(e, matrix_to_expmap(R), atol=1e-5)   # small angles: same vector
    # constant channels are restored with the reference's values
    out = mp.inverse(feats)
    _, trans = local_transforms(out.skeleton, out.frames)
    rots, _ = local_transforms(out.skeleton, out.frames)
    np.testing.assert_allclose(matrix_to_expmap(rots[:, sk.index("Spine2")]), 0.0, atol=1e-7)
    np.testing.assert_allclose(trans[:, sk.index("Spine"), 1], made.const_values["Spine_Yposition"], atol=1e-9)


def test_round_trip_to_bvh_in_the_reference_skeleton_is_exact(stand_ins, tmp_path):
    sk = make_test_skeleton()
    bvh = make_motion(sk, seed=3)
    made = write_reference(stand_ins, tmp_path / "ref", bvh, SELECTION)
    mp = rd.load_reference_motion_pipeline(made.dir / "data_pipe_20fps.sav", made.dir / "output_scaler.sav")
    out = mp.inverse(mp.transform(bvh), start=mp.root_start(bvh))
    write_bvh(tmp_path / "out.bvh", out)
    back = read_bvh(tmp_path / "out.bvh")
    for b in (out, back):
        assert b.skeleton.names == sk.names and b.skeleton.channels == sk.channels
        np.testing.assert_array_equal(b.skeleton.offsets, sk.offsets)
        assert b.frame_time == pytest.approx(1.0 / FPS)
    starts = sk.channel_starts()
    for j, name in enumerate(sk.names):
        cols = slice(starts[j], starts[j] + len(sk.channels[j]))
        if name in SELECTION or j == 0:
            np.testing.assert_allclose(out.frames[:, cols], bvh.frames[:, cols], atol=2e-4, err_msg=name)
        else:        # joints the reference leaves out come back as its JointSelector stored them
            want = [made.unselected[f"{name}_{c}"] for c in sk.channels[j]]
            np.testing.assert_allclose(out.frames[:, cols], np.broadcast_to(want, (len(out.frames), len(want))),
                                       atol=1e-9, err_msg=name)
    np.testing.assert_allclose(back.frames, out.frames, atol=2e-6)


def test_saved_and_loaded_pipeline_keeps_the_reference_order(stand_ins, tmp_path):
    sk = make_test_skeleton()
    bvh = make_motion(sk)
    made = write_reference(stand_ins, tmp_path / "ref", bvh, SELECTION)
    mp = rd.load_reference_motion_pipeline(*rd.find_reference_files(made.dir))
    mp.save(tmp_path / "saved")
    back = MotionPipeline.load(tmp_path / "saved")
    assert back.feature_names == mp.feature_names
    np.testing.assert_array_equal(back.transform(bvh), mp.transform(bvh))
    np.testing.assert_array_equal(back.inverse(mp.transform(bvh)).frames, mp.inverse(mp.transform(bvh)).frames)


def test_beat_selection_on_the_shared_beat_take(stand_ins, tmp_path, shared_data):
    """The reference's BEAT JointSelector list on a real BEAT file (120 fps, XYZ joints)."""
    path = shared_data / "beat" / "10_kieks_0_96_96_1.bvh"
    if not path.is_file():
        pytest.skip("no BEAT sample")
    src = read_bvh(path)
    beat = list(src.skeleton.names[1:])                   # the reference selects every joint but Hips
    at20 = MotionPipeline(fps=FPS).fit([src])              # the take at 20 fps, in the BEAT skeleton
    bvh20 = at20.inverse(at20.transform(src), start=at20.root_start(src))
    made = write_reference(stand_ins, tmp_path / "ref", bvh20, beat)
    mp = rd.load_reference_motion_pipeline(made.dir / "data_pipe_20fps.sav", made.dir / "output_scaler.sav",
                                           expect_features=len(made.columns))
    assert [rd.ours_to_pymo(n) for n in mp.feature_names] == made.columns
    assert mp.skeleton.names == src.skeleton.names and mp.skeleton.channels == src.skeleton.channels
    feats = mp.transform(bvh20)
    np.testing.assert_allclose(feats, made.scaler.transform(made.table), atol=2e-5)
    np.testing.assert_allclose(mp.transform(mp.inverse(feats, start=mp.root_start(bvh20))), feats, atol=2e-4)
    with pytest.raises(rd.ReferenceDataError, match=f"{len(made.columns)} motion features, but the model has"):
        rd.load_reference_motion_pipeline(made.dir / "data_pipe_20fps.sav", made.dir / "output_scaler.sav",
                                          expect_features=len(made.columns) + 1)


def test_no_downsampler_and_no_stored_pose(stand_ins, tmp_path):
    """Without DownSampler the rate comes from the template's frame time; without
    not_selected_values the unselected joints' pose is an explicit choice (zero angles)."""
    sk = make_test_skeleton()
    bvh = make_motion(sk)
    made = write_reference(stand_ins, tmp_path / "ref", bvh, SELECTION, drop=[("jts", "not_selected_values")],
                           steps_override=lambda steps: steps[1:])
    ref = rd.read_reference_pipeline(made.dir / "data_pipe_20fps.sav")
    assert ref.fps is None and ref.frame_time == 0.05 and ref.unselected_values is None
    scaler = read_scaler(made.dir / "output_scaler.sav")
    with pytest.raises(rd.ReferenceDataError, match="no not_selected_values.*unselected_pose='zero'"):
        rd.to_motion_pipeline(ref, scaler)
    mp = rd.to_motion_pipeline(ref, scaler, unselected_pose="zero")
    assert mp.fps == 20.0
    out = mp.inverse(mp.transform(bvh))
    starts = sk.channel_starts()
    for j, name in enumerate(sk.names):
        if name not in SELECTION and j > 0:
            np.testing.assert_array_equal(out.frames[:, starts[j]:starts[j] + len(sk.channels[j])], 0.0)


# ------------------------------------------------------------------------------------- errors

def _craft(stand_ins, tmp_path, **kw):
    sk = make_test_skeleton()
    return write_reference(stand_ins, tmp_path / "ref", make_motion(sk), SELECTION, **kw)


def test_root_transform_it_does_not_reproduce_is_an_error(stand_ins, tmp_path):
    made = _craft(stand_ins, tmp_path, root_method="hip_centric")
    ref = rd.read_reference_pipeline(made.dir / "data_pipe_20fps.sav")
    with pytest.raises(rd.ReferenceDataError, match=r"RootTransformer\('hip_centric'\) is not reproduced"):
        rd.to_motion_pipeline(ref, read_scaler(made.dir / "output_scaler.sav"))


def test_unsupported_step_is_an_error_naming_it(stand_ins, tmp_path):
    made = _craft(stand_ins, tmp_path, steps_override=lambda s: s[:3] + [("reorder", stand_ins.pre.EulerReorder("XYZ"))]
                  + s[3:])
    with pytest.raises(rd.ReferenceDataError, match=r"data_pipe_20fps.sav: pipeline step 'reorder' .*EulerReorder"):
        rd.read_reference_pipeline(made.dir / "data_pipe_20fps.sav")


def test_scaler_of_another_pipeline_is_an_error(stand_ins, tmp_path):
    made = _craft(stand_ins, tmp_path)
    joblib.dump(StandardScaler().fit(np.random.default_rng(0).normal(size=(5, 7))), made.dir / "output_scaler.sav")
    with pytest.raises(rd.ReferenceDataError, match=r"output_scaler.sav: .*7 features but .* has \d+ columns"):
        rd.load_reference_motion_pipeline(made.dir / "data_pipe_20fps.sav", made.dir / "output_scaler.sav")


def test_unfitted_or_unrecognised_structures_are_errors_naming_the_file(stand_ins, tmp_path):
    made = _craft(stand_ins, tmp_path, drop=[("npf", "org_mocap_")])
    with pytest.raises(rd.ReferenceDataError, match=r"data_pipe_20fps.sav: step Numpyfier has no attribute "
                                                    r"'org_mocap_' \(was the pipeline fitted"):
        rd.read_reference_pipeline(made.dir / "data_pipe_20fps.sav")

    def not_a_frame(steps):
        steps[-1][1].org_mocap_.values = {"columns": ["Hips_alpha"]}
        return steps
    made = _craft(stand_ins, tmp_path, steps_override=not_a_frame)
    with pytest.raises(rd.ReferenceDataError, match=r"org_mocap_.values: expected a pandas DataFrame, found dict"):
        rd.read_reference_pipeline(made.dir / "data_pipe_20fps.sav")

    def odd_manager(steps):
        steps[-1][1].org_mocap_.values = stand_ins.pd_frame.DataFrame(stand_ins.pre.Mirror())
        return steps
    made = _craft(stand_ins, tmp_path, steps_override=odd_manager)
    with pytest.raises(rd.ReferenceDataError, match=r"unrecognised pandas block manager"):
        rd.read_reference_pipeline(made.dir / "data_pipe_20fps.sav")


def test_channels_our_pipeline_lacks_are_an_error(stand_ins, tmp_path):
    def euler_left(steps):   # an Euler column survived (e.g. a joint PyMO's expmap step skipped)
        df = steps[-1][1].org_mocap_
        cols = ["Hips_Xrotation"] + ["LeftLeg_alpha"]
        df.values = empty_frame(stand_ins, cols)
        return steps
    made = _craft(stand_ins, tmp_path, steps_override=euler_left)
    ref = rd.read_reference_pipeline(made.dir / "data_pipe_20fps.sav")
    with pytest.raises(rd.ReferenceDataError, match="'Hips_Xrotation' has no counterpart"):
        rd.to_motion_pipeline(ref, types.SimpleNamespace(n_features=2, mean=np.zeros(2), scale=np.ones(2)))
    ref.columns = ref.columns[1:]
    with pytest.raises(rd.ReferenceDataError, match=r"differ from gesture_jax's.*missing \['Hips_Yposition'"):
        rd.to_motion_pipeline(ref, types.SimpleNamespace(n_features=1, mean=np.zeros(1), scale=np.ones(1)))


def test_only_the_reference_pymo_path_is_allowed(stand_ins, tmp_path):
    made = _craft(stand_ins, tmp_path)
    evil = tmp_path / "evil.sav"
    marker = tmp_path / "ran"
    # a pickle that names a function next to the vendored pymo (src.utils.*), and one naming os.system
    mod = types.ModuleType("src.utils.helpers")
    mod.touch = lambda p: Path(p).write_text("x")
    mod.touch.__module__, mod.touch.__qualname__ = "src.utils.helpers", "touch"

    class Evil:
        def __reduce__(self):
            return mod.touch, (str(marker),)
    with stand_ins.installed(), pytest.MonkeyPatch.context() as m:
        m.setitem(sys.modules, "src.utils.helpers", mod)
        evil.write_bytes(pickle.dumps(Pipeline([("x", Evil())]), protocol=4))
    with pytest.raises(ForeignCheckpointError, match="refusing global src.utils.helpers.touch"):
        rd.read_reference_pipeline(evil)

    class System:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    (tmp_path / "sys.sav").write_bytes(pickle.dumps(Pipeline([("x", System())]), protocol=4))
    with pytest.raises(ForeignCheckpointError, match="refusing global (posix|os).system"):
        rd.read_reference_pipeline(tmp_path / "sys.sav")
    assert not marker.exists() and os.path.exists(made.dir / "data_pipe_20fps.sav")


def test_missing_files_in_a_reference_folder(tmp_path):
    with pytest.raises(rd.ReferenceDataError, match="no data_pipe_<fps>fps.sav"):
        rd.find_reference_files(tmp_path)
    (tmp_path / "data_pipe.sav").write_bytes(b"")
    with pytest.raises(rd.ReferenceDataError, match="no output_scaler.sav"):
        rd.find_reference_files(tmp_path)


def test_a_pipeline_at_another_frame_rate_is_refused(stand_ins, tmp_path):
    """Root deltas and the scaler are per frame: a 20 fps pipeline under a 30 fps model is an error,
    and a folder holding only another rate's file is not searched past the model's rate."""
    sk = make_test_skeleton()
    made = write_reference(stand_ins, tmp_path / "ref", make_motion(sk), SELECTION)
    with pytest.raises(rd.ReferenceDataError, match="makes 20 fps features .* model runs at 30 fps"):
        rd.load_reference_motion_pipeline(made.dir / "data_pipe_20fps.sav", made.dir / "output_scaler.sav", fps=30)
    with pytest.raises(rd.ReferenceDataError, match="no data_pipe"):
        rd.find_reference_files(made.dir, fps=30)
    assert rd.find_reference_files(made.dir, fps=20)[0].name == "data_pipe_20fps.sav"
