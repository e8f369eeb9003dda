"""What maps the authors' Kucherenko et al. 2019 tensors onto our model (spec
../shared/methods/kucherenko.md §3-§5, §11), from files read by gesture_jax.foreign.

SpeechE (Keras 2.3.1 .hdf5): its nine weighted layers, checked against the reference's layer
list (3 time-distributed Dense + BN, a reset_after=False GRU, BN, Dense), become our
SpeechEncoder's dense1..3, bn1..4, gru and out (speech_weights). The DAE (TF1 checkpoint): the
one-hidden-layer MotionE / MotionD matrices and biases (read_autoencoder), with its
normalisation mu, M (read_normalization).

The reference frame is 64 nodes x [p, v] in the BVH's depth-first order with each End Site right
after its joint (evaluation/joints.txt), hips fixed at the root OFFSET; ours lists the joints
first and the End Sites last, fixes the hips at their training mean and drops the channels
constant in training. FrameLayout says how one maps onto the other; map_autoencoder and
map_baseline_output fold that map into the weights (rows/columns permuted, dropped constants
folded into the encoder bias, positions shifted by s = reference root - our root), and assign
puts the result into our modules. Every mismatch is a one-line ConversionError.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gesture_jax.foreign.keras_hdf5 import KerasLayer, KerasModelFile, activation, config_layers
from gesture_jax.foreign.sniff import refuse, sniff
from gesture_jax.foreign.tf_checkpoint import read_tf_checkpoint
from gesture_jax.methods.base import MethodError

__all__ = ["ConversionError", "SpeechWeights", "AEWeights", "FrameLayout", "speech_weights", "read_autoencoder",
           "parse_ae_names", "read_normalization", "frame_layout", "check_reference_pose", "map_autoencoder",
           "map_baseline_output", "assign", "position_fit", "DEFAULT_AE_NAMES", "SPEECH_FILE", "AE_CHECKPOINT"]

KERAS_BN_EPSILON = 1e-3          # our KerasBatchNorm's (fixed) epsilon
NORMALIZE_EPS = 1e-8             # losses.NORMALIZE_EPS (x = (y - mu)/(M + 1e-8))
NORM_FILES = ("mean_pose.npy", "max_val.npy")
FRAME_ORDERS = ("bvh", "ours")
AE_PREFIX = "chkpt-final"        # the name the reference DAE saves its final checkpoint under
SPEECH_FILE = "the Keras model.save(...hdf5) (or save_weights) file of SpeechE"
AE_CHECKPOINT = (f"the DAE's checkpoint (--autoencoder takes the checkpoint prefix DIR/{AE_PREFIX}, its .index "
                 f"file or the folder holding it)")
DEFAULT_AE_NAMES = {
    "encoder.kernel": "AE_Variables/Variables/matrix1",
    "encoder.bias": "AE_Variables/Variables/bias1",
    "decoder.kernel": "AE_Variables/Variables/matrix2",
    "decoder.bias": "AE_Variables/Variables/bias2",
}


class ConversionError(MethodError):
    """An input file that cannot be converted (the message names the file and the problem)."""


# ============================================================================ SpeechE (Keras)
# The reference's layer list (train.py), Dropout and InputLayer aside.
_SPEECHE_LAYOUT = ["TimeDistributed(Dense)", "BatchNormalization", "Activation(relu)"] * 3 + \
                  ["GRU", "BatchNormalization", "Activation(relu)", "Dense"]


def _check_model_config(kf: KerasModelFile) -> dict[str, Any]:
    """Check model_config against the reference layout; returns what it fixes (GRU recurrent
    activation, input shape)."""
    path = kf.path
    layers = [(c, cfg) for c, cfg in config_layers(kf.model_config) if c not in ("Dropout", "InputLayer")]
    if layers and layers[-1][0] == "Activation" and activation(layers[-1][1]) == "linear":
        layers = layers[:-1]          # the reference ends with Activation('linear')
    def describe(c: str, cfg: Mapping[str, Any]) -> str:
        if c == "TimeDistributed":
            inner = cfg.get("layer", {})
            return f"TimeDistributed({inner.get('class_name', '?')})"
        if c == "Activation":
            return f"Activation({activation(cfg)})"
        return c
    got = [describe(c, cfg) for c, cfg in layers]
    if got != _SPEECHE_LAYOUT:
        raise ConversionError(f"{path}: unexpected layer set for SpeechE: the file's model is {got} "
                              f"(Dropout aside); the reference is {_SPEECHE_LAYOUT}")
    info: dict[str, Any] = {}
    for c, cfg in config_layers(kf.model_config):   # the input shape: on the first layer or an InputLayer
        inner = cfg.get("layer", {}).get("config", {}) if c == "TimeDistributed" else {}
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape") or inner.get("batch_input_shape")
        if shape:
            info["input_shape"] = [None if s is None else int(s) for s in shape]
            break
    for c, cfg in layers:
        name = cfg.get("name", c)
        if c == "TimeDistributed":
            inner = cfg.get("layer", {}).get("config", {})
            if activation(inner) != "linear" or not inner.get("use_bias", True):
                raise ConversionError(f"{path}: layer {name}: Dense with activation {activation(inner)!r}, use_bias="
                                      f"{inner.get('use_bias', True)}; the reference's is linear with bias")
        elif c == "BatchNormalization":
            eps = float(cfg.get("epsilon", KERAS_BN_EPSILON))
            axis = cfg.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
            if not math.isclose(eps, KERAS_BN_EPSILON, rel_tol=1e-6) or axis not in (-1, 1, 2):
                raise ConversionError(f"{path}: layer {name}: BatchNormalization epsilon={eps}, axis={axis}; ours "
                                      f"is Keras' default (epsilon 1e-3 over the last axis)")
        elif c == "GRU":
            bad = {k: cfg.get(k) for k, want in (("reset_after", False), ("go_backwards", False),
                                                  ("return_sequences", False), ("use_bias", True))
                   if bool(cfg.get(k, want)) != want}
            if activation(cfg) != "tanh":
                bad["activation"] = activation(cfg)
            if bad:
                raise ConversionError(f"{path}: layer {name}: GRU with {bad}; SpeechE's GRU is Keras 2.3.1's "
                                      f"(tanh, reset_after=False, last state, with bias)")
            info["recurrent_activation"] = activation(cfg, "recurrent_activation")
            info["gru_layer"] = name
        elif c == "Dense" and activation(cfg) != "linear":
            raise ConversionError(f"{path}: layer {name}: output Dense with activation {activation(cfg)!r}; the "
                                  f"reference's is linear")
    return info


@dataclass
class SpeechWeights:
    """SpeechE's tensors under our parameter paths (module.variable), float32, plus what they fix."""
    arrays: dict[str, np.ndarray]
    sources: dict[str, str]              # our path -> "layer/weight name" in the file
    n_input: int
    width: int
    n_output: int
    recurrent_activation: str | None     # from model_config or the caller; None: not known (weights-only file)
    recurrent_activation_source: str     # "model_config", "--recurrent_activation" or ""
    context_frames: int | None           # 2C + 1 from model_config's input shape, when recorded
    keras_version: str
    backend: str


_EXPECTED_KINDS = ["dense", "bn", "dense", "bn", "dense", "bn", "recurrent", "bn", "dense"]
_OUR_LAYERS = ["dense1", "bn1", "dense2", "bn2", "dense3", "bn3", "gru", "bn4", "out"]
_BN_NAMES = {"gamma": "scale", "beta": "bias", "moving_mean": "mean", "moving_variance": "var"}


def speech_weights(kf: KerasModelFile, recurrent_activation: str = "auto") -> SpeechWeights:
    """Map SpeechE's Keras layers onto our SpeechEncoder (every shape checked)."""
    path = kf.path
    kinds = [layer.kind for layer in kf.layers]
    if kinds != _EXPECTED_KINDS:
        found = ", ".join(f"{layer.name}:{k}" for layer, k in zip(kf.layers, kinds))
        raise ConversionError(f"{path}: unexpected layer set for SpeechE: weighted layers [{found}]; the reference "
                              f"has [{', '.join(_EXPECTED_KINDS)}] (3 time-distributed Dense + BN, GRU, BN, Dense)")
    info = _check_model_config(kf) if kf.model_config is not None else {}
    if kf.keras_version.startswith("3.") and info.get("recurrent_activation") == "hard_sigmoid":
        raise ConversionError(f"{path}: saved by Keras {kf.keras_version}, whose hard_sigmoid is not Keras 2's "
                              f"clip(0.2x + 0.5, 0, 1) that SpeechEncoder implements")
    arrays: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}

    def put(ours: str, layer: KerasLayer, short: str, arr: np.ndarray | None = None) -> None:
        wname, a = layer.weights[short] if arr is None else (f"({short} absent: Keras default)", arr)
        if not np.issubdtype(a.dtype, np.floating):
            raise ConversionError(f"{path}: tensor {layer.name}/{wname}: dtype {a.dtype}, expected floats")
        if not np.all(np.isfinite(a)):
            raise ConversionError(f"{path}: tensor {layer.name}/{wname} holds NaN or inf")
        arrays[ours] = np.asarray(a, np.float32)
        sources[ours] = f"{layer.name}/{wname}"

    for ours, layer in zip(_OUR_LAYERS, kf.layers):
        if layer.kind == "bn":
            width = layer.weights["moving_mean"][1].shape
            for short, var in _BN_NAMES.items():
                default = (np.ones if short == "gamma" else np.zeros)(width, np.float32)
                put(f"{ours}.{var}", layer, short, None if short in layer.weights else default)
        elif layer.kind == "dense":
            put(f"{ours}.kernel", layer, "kernel")
            bias = None if "bias" in layer.weights else np.zeros(layer.weights["kernel"][1].shape[-1:], np.float32)
            put(f"{ours}.bias", layer, "bias", bias)
        else:
            for short in ("kernel", "recurrent_kernel", "bias"):
                if short not in layer.weights:
                    raise ConversionError(f"{path}: layer {layer.name}: the GRU has no {short} (use_bias=False); "
                                          f"SpeechE's GRU has one")
                put(f"gru.{short}", layer, short)

    k1 = arrays["dense1.kernel"]
    if k1.ndim != 2:
        raise ConversionError(f"{path}: tensor {sources['dense1.kernel']}: shape {k1.shape}, expected [N_INPUT, width]")
    n_in, w = k1.shape
    n_out = arrays["out.kernel"].shape[-1] if arrays["out.kernel"].ndim == 2 else -1
    expect = {"dense1.kernel": (n_in, w), "dense1.bias": (w,), "dense2.kernel": (w, w), "dense2.bias": (w,),
              "dense3.kernel": (w, w), "dense3.bias": (w,), "gru.kernel": (w, 3 * w),
              "gru.recurrent_kernel": (w, 3 * w), "gru.bias": (3 * w,), "out.kernel": (w, n_out), "out.bias": (n_out,)}
    expect.update({f"bn{i}.{v}": (w,) for i in range(1, 5) for v in _BN_NAMES.values()})
    for ours, shape in expect.items():
        got = arrays[ours].shape
        if got != shape:
            hint = ""
            if ours == "gru.bias" and got == (2, 3 * w):
                hint = (" - a reset_after=True GRU (tf.keras 2 / CuDNN-compatible, two biases); SpeechE's GRU is "
                        "Keras 2.3.1's reset_after=False")
            elif ours.startswith("gru.") and len(got) == 2 and got[-1] == 4 * w:
                hint = " - an LSTM's gate count (4 units), not a GRU's (3)"
            raise ConversionError(f"{path}: tensor {sources[ours]}: shape {list(got)}, expected {list(shape)} "
                                  f"(width {w}, {n_in} input features){hint}")

    from_file = info.get("recurrent_activation")
    ra = str(recurrent_activation or "auto")
    if ra not in ("auto", "sigmoid", "hard_sigmoid"):
        raise ConversionError(f"--recurrent_activation must be auto, sigmoid or hard_sigmoid, got {ra!r}")
    if from_file is not None and from_file not in ("sigmoid", "hard_sigmoid"):
        raise ConversionError(f"{path}: the GRU's recurrent_activation is {from_file!r}; SpeechEncoder supports "
                              f"sigmoid (Keras 2.3.1) and hard_sigmoid (Keras <= 2.2)")
    if ra != "auto" and from_file is not None and ra != from_file:
        raise ConversionError(f"{path}: --recurrent_activation={ra} contradicts the file, whose GRU "
                              f"{info.get('gru_layer', '')} was saved with recurrent_activation={from_file!r}")
    shape = info.get("input_shape")
    context = None
    if shape and len(shape) == 3:
        if shape[2] is not None and shape[2] != n_in:
            raise ConversionError(f"{path}: model_config's input shape {shape} disagrees with the kernel "
                                  f"{sources['dense1.kernel']} {list(k1.shape)}")
        context = shape[1]
    if from_file is not None:
        act, act_src = from_file, "model_config"
    else:
        act, act_src = (None, "") if ra == "auto" else (ra, "--recurrent_activation")
    return SpeechWeights(arrays=arrays, sources=sources, n_input=int(n_in), width=int(w), n_output=int(n_out),
                         recurrent_activation=act, recurrent_activation_source=act_src,
                         context_frames=None if context is None else int(context), keras_version=kf.keras_version,
                         backend=kf.backend)


# ============================================================================ DAE
@dataclass
class AEWeights:
    arrays: dict[str, np.ndarray]     # encoder.kernel [D, C], encoder.bias [C], decoder.kernel [C, D], decoder.bias [D]
    sources: dict[str, str]           # our path -> variable name in the checkpoint
    frame_dim: int
    code_dim: int
    index_path: Path
    data_paths: list[Path]            # the shards the four tensors were read from


def parse_ae_names(spec: str | None) -> dict[str, str]:
    """``encoder.kernel=NAME,decoder.bias=NAME`` over DEFAULT_AE_NAMES (unset keys keep the default)."""
    names = dict(DEFAULT_AE_NAMES)
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in DEFAULT_AE_NAMES or not value.strip():
            raise ConversionError(f"--ae_names: {part!r} is not KEY=VARIABLE with KEY one of "
                                  f"{', '.join(DEFAULT_AE_NAMES)}")
        names[key] = value.strip()
    return names


def read_autoencoder(path: str | Path, names: Mapping[str, str] | None = None) -> AEWeights:
    """The DAE's MotionE / MotionD from its TF1 checkpoint (one hidden layer, as the paper's)."""
    ck = read_tf_checkpoint(path, AE_CHECKPOINT, prefer=AE_PREFIX)
    names = dict(names or DEFAULT_AE_NAMES)
    deeper = sorted(n for n in ck.names if re.search(r"(^|/)Variables/matrix([3-9]|\d{2,})$", n))
    if deeper:
        raise ConversionError(f"{ck.index_path}: the autoencoder has more than two weight matrices ({deeper[0]}, "
                              f"...): more than one hidden layer; the paper's (and ours) has one")
    arrays, sources = {}, {}
    for ours, want in names.items():
        name = want
        if name not in ck.entries:
            tail = want.split("/", 1)[1] if want.startswith("AE_Variables/") else want
            hits = [n for n in ck.names if n == tail or n.endswith("/" + tail)]
            if len(hits) != 1:
                cands = [f"{n} {list(e.shape)}" for n, e in sorted(ck.entries.items())
                         if e.dtype in (1, 2, 19) and len(e.shape) in (1, 2) and "Adam" not in n]
                raise ConversionError(f"{ck.index_path}: no variable {want!r} for the autoencoder's {ours} "
                                      f"({'several' if hits else 'none'} ending in {tail!r}); float variables in "
                                      f"the checkpoint: {', '.join(cands[:16]) or 'none'}; name them with "
                                      f"--ae_names={ours}=NAME")
            name = hits[0]
        a = ck.read(name)
        if not np.issubdtype(a.dtype, np.floating):
            raise ConversionError(f"{ck.index_path}: variable {name} ({ours}) has dtype {a.dtype}, expected floats")
        if not np.all(np.isfinite(a)):
            raise ConversionError(f"{ck.index_path}: variable {name} ({ours}) holds NaN or inf")
        arrays[ours], sources[ours] = np.asarray(a, np.float32), name
    ek, eb, dk, db = (arrays[k] for k in ("encoder.kernel", "encoder.bias", "decoder.kernel", "decoder.bias"))
    if ek.ndim != 2:
        raise ConversionError(f"{ck.index_path}: variable {sources['encoder.kernel']}: shape {list(ek.shape)}, "
                              f"expected [frame, code]")
    d, c = ek.shape
    for key, shape in (("encoder.bias", (c,)), ("decoder.kernel", (c, d)), ("decoder.bias", (d,))):
        if arrays[key].shape != shape:
            raise ConversionError(f"{ck.index_path}: variable {sources[key]} ({key}): shape {list(arrays[key].shape)}, "
                                  f"expected {list(shape)} (encoder {sources['encoder.kernel']} is {[d, c]})")
    shards = sorted({ck.shard_path(ck.entries[n].shard_id) for n in sources.values()})
    return AEWeights(arrays=arrays, sources=sources, frame_dim=int(d), code_dim=int(c), index_path=ck.index_path,
                     data_paths=shards)


def _load_npy(path: Path) -> np.ndarray:
    kind = sniff(path)
    if kind in ("zip", "pickle"):
        raise refuse(path, kind, "a numpy .npy array")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ConversionError(f"{path}: not a plain numeric .npy array ({e}); pickled objects are never loaded") \
            from None
    except (OSError, EOFError) as e:
        raise ConversionError(f"{path}: cannot be read ({e}); truncated or damaged") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
        raise ConversionError(f"{path}: dtype {getattr(a, 'dtype', type(a))}, expected numbers")
    return a


def read_normalization(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(mu [D], M [D] float64, description) from mean_pose.npy + max_val.npy, or from Y_train.npy
    (mu = mean, M = max |Y| over the frames, as utils.prepare_motion_data)."""
    d = Path(path)
    if not d.is_dir():
        raise ConversionError(f"{d}: not a folder (--normalization takes the folder holding "
                              f"{' and '.join(NORM_FILES)}, or the reference's Y_train.npy)")
    mean_f, max_f = (d / n for n in NORM_FILES)
    if mean_f.is_file() and max_f.is_file():
        mu, m = _load_npy(mean_f).astype(np.float64), _load_npy(max_f).astype(np.float64)
        desc = f"{mean_f.name} + {max_f.name}"
        for f, a in ((mean_f, mu), (max_f, m)):
            if a.ndim == 2 and a.shape[0] == 1:
                a.shape = (a.shape[1],)
            if a.ndim != 1:
                raise ConversionError(f"{f}: shape {list(a.shape)}, expected one value per frame dimension")
        mu, m = mu.reshape(-1), m.reshape(-1)
        if mu.shape != m.shape:
            raise ConversionError(f"{d}: {mean_f.name} has {mu.size} values, {max_f.name} {m.size}")
    elif (d / "Y_train.npy").is_file():
        y = _load_npy(d / "Y_train.npy").astype(np.float64)
        if y.ndim != 2 or y.shape[0] == 0:
            raise ConversionError(f"{d / 'Y_train.npy'}: shape {list(y.shape)}, expected [frames, frame dim]")
        mu, m, desc = y.mean(axis=0), np.abs(y).max(axis=0), "Y_train.npy (mean and max |y| recomputed)"
    else:
        raise ConversionError(f"{d}: holds neither {' and '.join(NORM_FILES)} nor Y_train.npy")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(m))) or np.any(m < 0):
        raise ConversionError(f"{d}: the normalization holds NaN/inf or a negative max")
    return mu, m, desc


# ============================================================================ frame layout
@dataclass
class FrameLayout:
    """How the reference frame's D channels map onto our pipeline's (reference y = our y + shift)."""
    order: str
    raw_names: list[str]          # our D raw channel names
    ref_names: list[str]          # the reference's channels, in its order, named as ours
    to_raw: np.ndarray            # [D] reference index -> our raw index
    keep: np.ndarray              # [D] bool, our raw channels the model sees
    kept_ref: np.ndarray          # [F] reference index of each model feature
    dropped_raw: np.ndarray       # our raw indices of the dropped (training-constant) channels
    dropped_ref: np.ndarray       # their reference indices
    const_raw: np.ndarray         # [D] our raw fill values (training means; the constants for dropped ones)
    mean_raw: np.ndarray          # [D] our training mean of every raw channel
    shift: np.ndarray             # [D] raw order: reference y = our y + shift (positions only)
    root_ref: np.ndarray          # [3] the reference's root position
    root_ours: np.ndarray         # [3] ours
    root_source: str


def position_fit(pipeline: Any, where: str) -> Any:
    """The fitted statistics of a position pipeline (what the reference's frames are)."""
    from gesture_jax.motion.positions import PositionPipeline
    if not isinstance(pipeline, PositionPipeline):
        raise ConversionError(f"{where}: a {type(pipeline).__name__}; the reference's frames are joint positions "
                              f"(prepare with data.representation='positions')")
    fit = getattr(pipeline, "_fit", None)
    if fit is None or not hasattr(fit, "raw_names"):
        raise ConversionError(f"{where}: the position pipeline is not fitted")
    return fit


def _node_order(pipeline: Any, order: str) -> list[str]:
    names = pipeline.node_names
    if order == "ours":
        return list(names)
    if order == "bvh":   # depth-first file order, each End Site right after its joint (evaluation/joints.txt)
        return [n for _, n in sorted(zip(pipeline.nodes, names), key=lambda t: (t[0][0], t[0][1]))]
    p = Path(order)
    if not p.is_file():
        raise ConversionError(f"--frame_order={order!r}: neither {' nor '.join(FRAME_ORDERS)} nor a file of node names")
    listed = [t for t in re.split(r"[\s,]+", p.read_text()) if t]
    unknown = [t for t in listed if t not in names]
    missing = [n for n in names if n not in listed]
    if unknown or missing or len(listed) != len(set(listed)):
        raise ConversionError(f"{p}: must list each of DATA's {len(names)} nodes once (unknown: {unknown[:5]}, "
                              f"missing: {missing[:5]}); our node names are e.g. {names[:3]} and "
                              f"'<joint>_End' for End Sites")
    return listed


def frame_layout(pipeline: Any, order: str = "bvh", *, ref_mean: np.ndarray | None = None,
                 reference_root: Sequence[float] | None = None, where: str = "DATA") -> FrameLayout:
    fit = position_fit(pipeline, where)
    if not pipeline.velocities:
        raise ConversionError(f"{where}: prepared without velocities; the reference frame is [p, v] per node "
                              f"(data.position_velocities=True)")
    if pipeline.root != "fixed":
        raise ConversionError(f"{where}: prepared with data.positions_root={pipeline.root!r}; the reference fixes "
                              f"the hips (positions_root='fixed')")
    raw = list(fit.raw_names)
    index = {n: i for i, n in enumerate(raw)}
    kinds = ["p", "v"]
    ref_names = [f"{n}_{k}{a}" for n in _node_order(pipeline, order) for k in kinds for a in "xyz"]
    if sorted(ref_names) != sorted(raw):
        raise ConversionError(f"{where}: its raw channels are not [p, v] x xyz of its nodes")
    to_raw = np.asarray([index[n] for n in ref_names], np.int64)
    keep = np.asarray(fit.keep, bool)
    ref_of_raw = np.empty_like(to_raw)
    ref_of_raw[to_raw] = np.arange(len(to_raw))
    mean_raw = np.asarray(fit.const_values, np.float64).copy()
    mean_raw[keep] = np.asarray(fit.mean, np.float64)
    root = pipeline.node_names[0]
    rp = np.asarray([index[f"{root}_p{a}"] for a in "xyz"])
    if keep[rp].any():
        raise ConversionError(f"{where}: the root's position channels vary over the training set; the reference "
                              f"fixes them")
    root_ours = np.asarray(fit.const_values, np.float64)[rp]
    if reference_root is not None:
        root_ref, src = np.asarray(reference_root, np.float64), "--reference_root"
    elif ref_mean is not None:
        root_ref, src = np.asarray(ref_mean, np.float64)[ref_of_raw[rp]], "the reference mean pose (its hips)"
    else:
        root_ref, src = np.asarray(fit.skeleton.offsets[0], np.float64), "the skeleton's root OFFSET"
    shift = np.zeros(len(raw))
    for i, n in enumerate(raw):
        if n[-3:-1] == "_p":
            shift[i] = root_ref["xyz".index(n[-1])] - root_ours["xyz".index(n[-1])]
    dropped_raw = np.flatnonzero(~keep)
    return FrameLayout(order=order, raw_names=raw, ref_names=ref_names, to_raw=to_raw, keep=keep,
                       kept_ref=ref_of_raw[np.flatnonzero(keep)], dropped_raw=dropped_raw,
                       dropped_ref=ref_of_raw[dropped_raw], const_raw=np.asarray(fit.const_values, np.float64),
                       mean_raw=mean_raw, shift=shift, root_ref=root_ref, root_ours=root_ours, root_source=src)


def check_reference_pose(layout: FrameLayout, mu: np.ndarray, m: np.ndarray, tolerance: float, where: str,
                         source: str) -> dict[str, Any]:
    """The reference's hips must be fixed and its mean pose must be DATA's (up to tolerance x body size)."""
    raw_of = {n: i for i, n in enumerate(layout.raw_names)}
    ref_idx = {n: a for a, n in enumerate(layout.ref_names)}
    root = layout.raw_names[0].rsplit("_", 1)[0]          # our raw order starts with the root joint
    rp = [ref_idx[f"{root}_p{a}"] for a in "xyz"]
    rv = [ref_idx[f"{root}_v{a}"] for a in "xyz"]
    if not (np.allclose(m[rp], np.abs(mu[rp]), rtol=1e-5, atol=1e-6) and np.allclose(m[rv], 0, atol=1e-6)):
        raise ConversionError(f"{source}: the channels of {root!r} under --frame_order={layout.order} are not "
                              f"constant (mean {np.round(mu[rp], 3).tolist()}, max {np.round(m[rp], 3).tolist()}): "
                              f"the reference fixes the hips; wrong frame order or not the reference's frames")
    nodes = sorted({n.rsplit("_", 1)[0] for n in layout.ref_names})
    ours = np.asarray([[layout.mean_raw[raw_of[f"{n}_p{a}"]] for a in "xyz"] for n in nodes])
    theirs = np.asarray([[mu[ref_idx[f"{n}_p{a}"]] for a in "xyz"] for n in nodes]) - layout.root_ref + layout.root_ours
    dist = np.linalg.norm(ours - theirs, axis=1)
    size = float(np.max(np.linalg.norm(ours - layout.root_ours, axis=1)))
    worst = int(np.argmax(dist))
    report = {"max_node_distance": float(dist[worst]), "node": nodes[worst], "body_size": size,
              "tolerance": float(tolerance)}
    if tolerance > 0 and dist[worst] > tolerance * size:
        raise ConversionError(f"{source}: the reference mean pose does not match {where}'s under "
                              f"--frame_order={layout.order}: node {nodes[worst]} is {dist[worst]:.3g} units away "
                              f"(body size {size:.3g}, tolerance {tolerance}); wrong frame order or another skeleton "
                              f"(--pose_tolerance=0 skips this check)")
    return report


def map_autoencoder(ae: AEWeights, layout: FrameLayout, mu: np.ndarray, m: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]:
    """Our autoencoder's tensors and (mean, max |y|) for our kept channels from the reference's.

    Encoder rows / decoder columns go to our feature order; a dropped channel d enters the
    reference encoder as the constant x_d = (our constant + s - mu)/(M + 1e-8), folded into the
    encoder bias. Our normalizer then sees (y - (mu - s))/(M + 1e-8): the reference's x."""
    W1, b1 = ae.arrays["encoder.kernel"].astype(np.float64), ae.arrays["encoder.bias"].astype(np.float64)
    W2, b2 = ae.arrays["decoder.kernel"].astype(np.float64), ae.arrays["decoder.bias"].astype(np.float64)
    k, dr, dref = layout.kept_ref, layout.dropped_raw, layout.dropped_ref
    x_d = (layout.const_raw[dr] + layout.shift[dr] - mu[dref]) / (m[dref] + NORMALIZE_EPS)
    warnings = [f"dropped channel {layout.raw_names[r]} enters the reference encoder as x = {x:.3g} (|x| > 1: the "
                f"reference data were not constant there)" for r, x in zip(dr, x_d) if abs(x) > 1]
    out = {"encoder.kernel": W1[k], "encoder.bias": b1 + x_d @ W1[dref],
           "decoder.kernel": W2[:, k], "decoder.bias": b2[k]}
    mean = mu[k] - layout.shift[layout.keep]
    return {n: a.astype(np.float32) for n, a in out.items()}, mean, m[k].astype(np.float64), warnings


def map_baseline_output(sw: SpeechWeights, layout: FrameLayout) -> None:
    """The baseline's last Dense: reference frame (raw cm) -> our kept channels, minus the shift."""
    W, b = sw.arrays["out.kernel"].astype(np.float64), sw.arrays["out.bias"].astype(np.float64)
    k = layout.kept_ref
    sw.arrays["out.kernel"] = W[:, k].astype(np.float32)
    sw.arrays["out.bias"] = (b[k] - layout.shift[layout.keep]).astype(np.float32)
    sw.n_output = int(len(k))


# ============================================================================ into our modules
def assign(model: Any, arrays: Mapping[str, np.ndarray], sources: Mapping[str, str], where: str) -> None:
    """model.<module>.<variable> = arrays['<module>.<variable>'] (shapes must agree)."""
    import jax.numpy as jnp

    for path, value in arrays.items():
        mod, var_name = path.split(".")
        var = getattr(getattr(model, mod), var_name)
        have = tuple(var[...].shape)
        if have != tuple(value.shape):
            raise ConversionError(f"{where}: tensor {sources.get(path, path)}: shape {list(value.shape)}, but the "
                                  f"model the config builds has {path} {list(have)}")
        var[...] = jnp.asarray(value, var[...].dtype)
