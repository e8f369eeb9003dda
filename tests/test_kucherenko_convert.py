"""Import of the authors' Kucherenko et al. 2019 files (gesture_jax/methods/kucherenko/convert.py,
reference.py; the readers in gesture_jax/foreign).

Nothing here needs TensorFlow or Keras: the Keras 2.3.1 HDF5 layout is written with h5py and the
TF1 checkpoint (a LevelDB-format tensor bundle) by a small writer in this file, from random
tensors of the right shapes. The converted modules are compared with numpy re-implementations
of the reference's forward passes (Keras 2.3.1 SpeechE.predict; the DAE's tanh layers and
x (M + 1e-15) + mu decoding), and the CLI writes a workdir that generate loads.
"""
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import REPO
from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign import keras_hdf5 as K
from gesture_jax.foreign import tf_checkpoint as T
from gesture_jax.methods.kucherenko import convert as C
from gesture_jax.methods.kucherenko import reference as R
from gesture_jax.methods.kucherenko.model import MotionAutoencoder, SpeechEncoder

CONFIG = "configs/kucherenko_demo.py"
DATA_OV = ["--config.data.window_s=4.0", "--config.data.stride_s=1.0", "--config.data.test_stride_s=4.0"]


# ============================================================================ numpy references
def _act(name):
    return {"sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)), "hard_sigmoid": lambda v: np.clip(0.2 * v + 0.5, 0.0, 1.0)}[name]


def _np_keras_speeche(layers, x, recurrent_activation):
    """Keras 2.3.1 SpeechE.predict (inference: BN with moving statistics, no dropout) from the
    file's tensors. layers: the 9 weighted layers [(name, {short: array})] in file order.
    GRUCell (reset_after=False): z, r = act(x W + b + h U) per gate block (z, r, h order);
    h~ = tanh(x W_h + b_h + (r * h) U_h); h' = z h + (1 - z) h~, from h = 0, last state out."""
    w = [dict(ws) for _, ws in layers]
    sig = _act(recurrent_activation)
    dense = lambda h, p: h @ p["kernel"].astype(np.float64) + p["bias"]
    bn = lambda h, p: (h - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) * p["gamma"] + p["beta"]
    h = np.asarray(x, np.float64)
    for i in (0, 2, 4):
        h = np.maximum(bn(dense(h, w[i]), w[i + 1]), 0.0)
    g = w[6]
    K, U, b = (g[k].astype(np.float64) for k in ("kernel", "recurrent_kernel", "bias"))
    u = U.shape[0]
    s = np.zeros((h.shape[0], u))
    for t in range(h.shape[1]):
        mx = h[:, t] @ K + b
        z = sig(mx[:, :u] + s @ U[:, :u])
        r = sig(mx[:, u:2 * u] + s @ U[:, u:2 * u])
        hh = np.tanh(mx[:, 2 * u:] + (r * s) @ U[:, 2 * u:])
        s = z * s + (1.0 - z) * hh
    s = np.maximum(bn(s, w[7]), 0.0)
    return dense(s, w[8])


# ============================================================================ Keras 2.3.1 files (h5py)
def _keras_layers(rng, n_in, width, n_out, scale=1.0):
    """SpeechE's layers as Keras 2.3.1 names them: [(layer name, [(weight name, array)])], the
    weightless Activation/Dropout layers included."""
    f32 = lambda *s, sc=scale: (rng.normal(size=s) * sc).astype(np.float32)
    out = []
    for i in (1, 2, 3):
        fan = n_in if i == 1 else width
        out.append((f"time_distributed_{i}", [(f"time_distributed_{i}/kernel:0", f32(fan, width, sc=scale / np.sqrt(fan))),
                                              (f"time_distributed_{i}/bias:0", f32(width, sc=0.1))]))
        out += _bn(rng, i, width)
        out += [(f"activation_{i}", []), (f"dropout_{i}", [])]
    out.append(("gru_1", [("gru_1/kernel:0", f32(width, 3 * width, sc=scale / np.sqrt(width))),
                          ("gru_1/recurrent_kernel:0", f32(width, 3 * width, sc=scale / np.sqrt(width))),
                          ("gru_1/bias:0", f32(3 * width, sc=0.3))]))
    out += _bn(rng, 4, width)
    out += [("activation_4", []), ("dropout_4", [])]
    out.append(("dense_4", [("dense_4/kernel:0", f32(width, n_out, sc=1.0 / np.sqrt(width))),
                            ("dense_4/bias:0", f32(n_out, sc=0.1))]))
    out.append(("activation_5", []))
    return out


def _bn(rng, i, width):
    n = f"batch_normalization_{i}"
    return [(n, [(f"{n}/gamma:0", rng.uniform(0.5, 1.5, width).astype(np.float32)),
                 (f"{n}/beta:0", rng.normal(0, 0.2, width).astype(np.float32)),
                 (f"{n}/moving_mean:0", rng.normal(0, 0.3, width).astype(np.float32)),
                 (f"{n}/moving_variance:0", rng.uniform(0.3, 2.0, width).astype(np.float32))])]


def _keras_config(n_in, context, width, n_out, recurrent_activation="sigmoid", **gru):
    dense = lambda name, units: {"class_name": "Dense", "config": {
        "name": name, "trainable": True, "dtype": "float32", "units": units, "activation": "linear", "use_bias": True,
        "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 1.0}}, "bias_initializer":
        {"class_name": "Zeros", "config": {}}}}
    bn = lambda i: {"class_name": "BatchNormalization", "config": {"name": f"batch_normalization_{i}", "axis": -1,
                                                                    "momentum": 0.99, "epsilon": 0.001, "center": True,
                                                                    "scale": True}}
    act = lambda i, a: {"class_name": "Activation", "config": {"name": f"activation_{i}", "activation": a}}
    drop = lambda i: {"class_name": "Dropout", "config": {"name": f"dropout_{i}", "rate": 0.1}}
    layers = []
    for i in (1, 2, 3):
        td = {"class_name": "TimeDistributed", "config": {"name": f"time_distributed_{i}", "layer": dense(f"dense_{i}",
                                                                                                         width)}}
        if i == 1:
            td["config"]["batch_input_shape"] = [None, context, n_in]
        layers += [td, bn(i), act(i, "relu"), drop(i)]
    layers.append({"class_name": "GRU", "config": {
        "name": "gru_1", "units": width, "activation": "tanh", "recurrent_activation": recurrent_activation,
        "use_bias": True, "return_sequences": False, "return_state": False, "go_backwards": False,
        "stateful": False, "unroll": False, "implementation": 2, "reset_after": False, **gru}})
    layers += [bn(4), act(4, "relu"), drop(4), {"class_name": "Dense", "config": dense("dense_4", n_out)["config"]},
               act(5, "linear")]
    return {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": layers}}


def _write_keras(path, layers, config=None, weights_only=False, keras_version="2.3.1"):
    with h5py.File(path, "w") as f:
        if weights_only:
            g = f
        else:
            f.attrs["keras_version"] = keras_version.encode()
            f.attrs["backend"] = b"tensorflow"
            f.attrs["model_config"] = json.dumps(config).encode()
            f.attrs["training_config"] = json.dumps({"loss": "mean_squared_error"}).encode()
            g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        g.attrs["backend"] = b"tensorflow"
        g.attrs["keras_version"] = keras_version.encode()
        for name, ws in layers:
            lg = g.create_group(name)
            lg.attrs["weight_names"] = np.array([wn.encode() for wn, _ in ws], dtype="S")
            for wn, a in ws:
                lg.create_dataset(wn, data=a)
        if not weights_only:   # Keras also stores the optimizer state: ignored by the reader
            f.create_group("optimizer_weights").create_dataset("Adam/iterations:0", data=np.int64(7))
    return Path(path)


def _weighted(layers):
    return [(n, {wn.split("/")[-1].split(":")[0]: a for wn, a in ws}) for n, ws in layers if ws]


# ============================================================================ TF1 tensor bundle writer
def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        t.append(c)
    return t


_T = _crc_table()


def _masked_crc(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _vi(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _fv(no, v):
    return _vi(no << 3) + _vi(v) if v else b""     # proto3 drops zero scalars


def _fb(no, b):
    return _vi(no << 3 | 2) + _vi(len(b)) + b


def _block(entries, restart_interval=4):
    buf, restarts, prev = bytearray(), [], b""
    for i, (k, v) in enumerate(entries):
        if i % restart_interval == 0:
            restarts.append(len(buf))
            shared = 0
        else:
            shared = len(os.path.commonprefix([prev, k]))
        buf += _vi(shared) + _vi(len(k) - shared) + _vi(len(v)) + k[shared:] + v
        prev = k
    for r in restarts or [0]:
        buf += struct.pack("<I", r)
    return bytes(buf + struct.pack("<I", len(restarts or [0])))


def _put_block(out: bytearray, block: bytes) -> bytes:
    off = len(out)
    out += block + b"\x00" + struct.pack("<I", _masked_crc(block + b"\x00"))
    return _vi(off) + _vi(len(block))


_DT = {np.dtype("float32"): 1, np.dtype("float64"): 2, np.dtype("int64"): 9}


def _write_bundle(prefix, tensors):
    """tf.train.Saver(V2)-style chkpt: PREFIX.index (SSTable of BundleEntryProto) + PREFIX.data-00000-of-00001."""
    prefix = str(prefix)
    data, entries = bytearray(), []
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_fb(2, _vi(1 << 3) + _vi(d)) for d in a.shape)
        entry = (_fv(1, _DT[a.dtype]) + _fb(2, shape) + _fv(4, len(data)) + _fv(5, len(raw))
                 + _vi(6 << 3 | 5) + struct.pack("<I", _masked_crc(raw)))
        entries.append((name.encode(), entry))
        data += raw
    header = _fv(1, 1) + _fb(3, _fv(1, 1))            # num_shards 1, version {producer 1}
    table = bytearray()
    h_data = _put_block(table, _block([(b"", header)] + entries))
    h_meta = _put_block(table, _block([]))
    h_index = _put_block(table, _block([(entries[-1][0] if entries else b"", h_data)]))
    footer = h_meta + h_index
    table += footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(prefix + ".index").write_bytes(bytes(table))
    Path(prefix + ".data-00000-of-00001").write_bytes(bytes(data))
    Path(prefix + ".meta").write_bytes(b"\x0a\x00")   # the MetaGraphDef: never read
    return Path(prefix)


def _dae_tensors(rng, d, c):
    """What the reference DAE's tf.train.Saver writes: AE_Variables/Variables/{matrix,bias}{1,2}, the
    pre-training variables, Adam slots and counters."""
    bound = 2 * np.sqrt(6.0 / (d + c))
    t = {"AE_Variables/Variables/matrix1": rng.uniform(-bound, bound, (d, c)).astype(np.float32),
         "AE_Variables/Variables/bias1": rng.normal(0, 0.1, c).astype(np.float32),
         "AE_Variables/Variables/matrix2": rng.uniform(-bound, bound, (c, d)).astype(np.float32),
         "AE_Variables/Variables/bias2": rng.normal(0, 0.1, d).astype(np.float32),
         "AE_Variables/Var/matrix1_pretr": np.zeros((d, c), np.float32),
         "AE_Variables/Var/bias1_pretr": np.zeros(c, np.float32),
         "AE_Variables/Var/bias1_out": np.zeros(d, np.float32),
         "Train/beta1_power": np.float32(0.5), "Train/beta2_power": np.float32(0.9),
         "global_step": np.int64(12345)}
    for n in ("matrix1", "bias1", "matrix2", "bias2"):
        for slot in ("Adam", "Adam_1"):
            t[f"AE_Variables/Variables/{n}/{slot}"] = np.zeros_like(t[f"AE_Variables/Variables/{n}"])
    return t


# ============================================================================ crc, bundle, hdf5 readers
def test_crc32c_check_value_and_mask():
    assert T.crc32c(b"123456789") == 0xE3069283          # the CRC-32C check value
    assert T.crc32c(b"") == 0
    for data in (b"", b"a", bytes(range(256)) * 3):
        assert T.masked_crc32c(data) == _masked_crc(data)


def test_tf_bundle_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    t = _dae_tensors(rng, 12, 5)
    t["AE_Variables/Variables/extra64"] = rng.normal(size=(3, 2))      # float64
    ck = T.read_tf_checkpoint(_write_bundle(tmp_path / "chkpt-final", t))
    assert ck.names == sorted(t) and ck.num_shards == 1
    for name, a in t.items():
        got = ck.read(name)
        assert got.dtype == np.asarray(a).dtype and got.shape == np.shape(a)
        np.testing.assert_array_equal(got, a)
    # the prefix, its .index / .meta / .data file or the folder all name the same checkpoint
    for p in ("chkpt-final.index", "chkpt-final.meta", "chkpt-final.data-00000-of-00001", ""):
        assert T.read_tf_checkpoint(tmp_path / p).names == ck.names


def test_tf_bundle_damage_is_a_one_line_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(1)
    prefix = _write_bundle(tmp_path / "chkpt-final", _dae_tensors(rng, 12, 5))
    index, shard = Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001")
    good_index, good_data = index.read_bytes(), shard.read_bytes()

    index.write_bytes(good_index[: len(good_index) // 2])               # truncated index
    with pytest.raises(ForeignCheckpointError, match=r"chkpt-final\.index: .*truncated"):
        T.read_tf_checkpoint(prefix)
    bad = bytearray(good_index)
    bad[10] ^= 0xFF                                                      # damaged data block
    index.write_bytes(bytes(bad))
    with pytest.raises(ForeignCheckpointError, match=r"crc32c mismatch in the data block"):
        T.read_tf_checkpoint(prefix)
    index.write_bytes(good_index)

    shard.write_bytes(good_data[:-7])                                    # truncated data shard
    ck = T.read_tf_checkpoint(prefix)
    with pytest.raises(ForeignCheckpointError,
                       match=r"data-00000-of-00001: tensor global_step needs bytes .*truncated"):
        ck.read("global_step")
    bad = bytearray(good_data)
    bad[3] ^= 0x01                                                       # one flipped bit in matrix1/Adam...
    shard.write_bytes(bytes(bad))
    name = sorted(ck.entries, key=lambda n: ck.entries[n].offset)[0]
    with pytest.raises(ForeignCheckpointError, match=rf"tensor {name}: crc32c mismatch"):
        T.read_tf_checkpoint(prefix).read(name)
    shard.unlink()
    with pytest.raises(ForeignCheckpointError, match="no such file"):
        T.read_tf_checkpoint(prefix).read(name)
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    with pytest.raises(ForeignCheckpointError, match=r"model\.pt\.index: no such file"):
        T.read_tf_checkpoint(tmp_path / "model.pt")


def test_dae_from_the_tf_checkpoint_equals_numpy_tanh_layers(tmp_path):
    rng = np.random.default_rng(2)
    d, c = 384, 325                                                      # the reference's sizes
    t = _dae_tensors(rng, d, c)
    ae_w = R.read_autoencoder(_write_bundle(tmp_path / "chkpt-final", t))
    assert (ae_w.frame_dim, ae_w.code_dim) == (d, c)
    assert ae_w.sources["encoder.kernel"] == "AE_Variables/Variables/matrix1"
    ae = MotionAutoencoder(d, c, rngs=nnx.Rngs(0))
    R.assign(ae, ae_w.arrays, ae_w.sources, "test")
    x = rng.normal(0, 0.5, (16, d))
    code = np.tanh(x @ t["AE_Variables/Variables/matrix1"].astype(np.float64) + t["AE_Variables/Variables/bias1"])
    recon = np.tanh(code @ t["AE_Variables/Variables/matrix2"].astype(np.float64) + t["AE_Variables/Variables/bias2"])
    got_code = np.asarray(ae.encode(jnp.asarray(x, jnp.float32), deterministic=True))
    np.testing.assert_allclose(got_code, code, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ae.decode(jnp.asarray(code, jnp.float32), deterministic=True)), recon,
                               atol=1e-5)


def test_dae_variable_names(tmp_path):
    rng = np.random.default_rng(3)
    t = _dae_tensors(rng, 10, 4)
    renamed = {k.replace("AE_Variables/", "Model/"): v for k, v in t.items()}      # another outer scope
    assert R.read_autoencoder(_write_bundle(tmp_path / "a", renamed)).sources["decoder.bias"] == \
        "Model/Variables/bias2"
    custom = {"enc/w": t["AE_Variables/Variables/matrix1"], "enc/b": t["AE_Variables/Variables/bias1"],
              "dec/w": t["AE_Variables/Variables/matrix2"], "dec/b": t["AE_Variables/Variables/bias2"]}
    prefix = _write_bundle(tmp_path / "b", custom)
    with pytest.raises(R.ConversionError, match=r"no variable 'AE_Variables/Variables/matrix1'.*dec/b \[10\].*--ae_names"):
        R.read_autoencoder(prefix)
    names = R.parse_ae_names("encoder.kernel=enc/w,encoder.bias=enc/b,decoder.kernel=dec/w,decoder.bias=dec/b")
    w = R.read_autoencoder(prefix, names)
    np.testing.assert_array_equal(w.arrays["decoder.kernel"], custom["dec/w"])
    with pytest.raises(R.ConversionError, match="--ae_names"):
        R.parse_ae_names("kernel=enc/w")
    t["AE_Variables/Variables/matrix3"] = np.zeros((4, 4), np.float32)
    with pytest.raises(R.ConversionError, match="more than one hidden layer"):
        R.read_autoencoder(_write_bundle(tmp_path / "c", t))
    t.pop("AE_Variables/Variables/matrix3")
    t["AE_Variables/Variables/bias2"] = np.zeros(9, np.float32)
    with pytest.raises(R.ConversionError, match=r"AE_Variables/Variables/bias2 \(decoder.bias\): shape \[9\], "
                                                r"expected \[10\]"):
        R.read_autoencoder(_write_bundle(tmp_path / "d", t))


@pytest.mark.parametrize("activation", ["sigmoid", "hard_sigmoid"])
def test_speeche_hdf5_forward_equals_numpy_keras(tmp_path, activation):
    """Reference sizes (26 MFCC x 61 frames -> 256 -> 325); weights large enough that hard_sigmoid clips."""
    rng = np.random.default_rng(4)
    layers = _keras_layers(rng, 26, 256, 325, scale=2.0 if activation == "hard_sigmoid" else 1.0)
    path = _write_keras(tmp_path / "model.hdf5", layers, _keras_config(26, 61, 256, 325, activation))
    sw = R.speech_weights(K.read_keras_hdf5(path))
    assert (sw.n_input, sw.width, sw.n_output, sw.context_frames) == (26, 256, 325, 61)
    assert sw.recurrent_activation == activation and sw.recurrent_activation_source == "model_config"
    assert sw.sources["gru.recurrent_kernel"] == "gru_1/gru_1/recurrent_kernel:0"
    model = SpeechEncoder(26, 61, 256, 325, recurrent_activation=activation, rngs=nnx.Rngs(0))
    R.assign(model, sw.arrays, sw.sources, str(path))
    x = rng.normal(size=(4, 61, 26))
    want = _np_keras_speeche(_weighted(layers), x, activation)
    got = np.asarray(model(jnp.asarray(x, jnp.float32), deterministic=True))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    if activation == "hard_sigmoid":   # the clipped region was reached, and the other activation differs
        other = _np_keras_speeche(_weighted(layers), x, "sigmoid")
        assert np.abs(other - want).max() > 1e-2


def test_weights_only_file_and_the_recurrent_activation_switch(tmp_path):
    rng = np.random.default_rng(5)
    layers = _keras_layers(rng, 5, 8, 3)
    wo = _write_keras(tmp_path / "weights.h5", layers, weights_only=True)
    sw = R.speech_weights(K.read_keras_hdf5(wo))
    assert sw.recurrent_activation is None and sw.context_frames is None          # not recorded
    assert R.speech_weights(K.read_keras_hdf5(wo), "hard_sigmoid").recurrent_activation == "hard_sigmoid"
    full = _write_keras(tmp_path / "model.hdf5", layers, _keras_config(5, 9, 8, 3, "hard_sigmoid"))
    with pytest.raises(R.ConversionError, match="contradicts the file.*'hard_sigmoid'"):
        R.speech_weights(K.read_keras_hdf5(full), "sigmoid")
    np.testing.assert_array_equal(sw.arrays["gru.kernel"], layers[12][1][0][1])    # gru_1/kernel:0


def test_tf_keras_naming_and_an_input_layer(tmp_path):
    """tf.keras 2 names (time_distributed, gru/gru_cell/kernel:0) and an InputLayer holding the input shape."""
    rng = np.random.default_rng(12)
    rename = {"time_distributed_1": "time_distributed", "gru_1": "gru"}
    layers = [(rename.get(n, n), [(wn.replace("gru_1/", "gru/gru_cell/").replace("time_distributed_1/",
                                                                                "time_distributed/"), a)
                                  for wn, a in ws]) for n, ws in _keras_layers(rng, 5, 8, 3)]
    cfg = _keras_config(5, 9, 8, 3, "sigmoid")
    cfg["config"]["layers"][0]["config"].pop("batch_input_shape")
    cfg["config"]["layers"].insert(0, {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 9, 5]}})
    sw = R.speech_weights(K.read_keras_hdf5(_write_keras(tmp_path / "tfk.h5", layers, cfg, keras_version="2.4.0")))
    assert sw.context_frames == 9 and sw.sources["gru.kernel"] == "gru/gru/gru_cell/kernel:0"
    np.testing.assert_array_equal(sw.arrays["dense1.kernel"], layers[0][1][0][1])


def test_unexpected_speeche_files_are_errors(tmp_path):
    rng = np.random.default_rng(6)
    base = _keras_layers(rng, 5, 8, 3)
    # an LSTM where the GRU should be (4 gates)
    lstm = [(n, [(wn, np.zeros((a.shape[0], 32) if a.ndim == 2 else 32, np.float32)) for wn, a in ws])
            if n == "gru_1" else (n, ws) for n, ws in base]
    p = _write_keras(tmp_path / "lstm.h5", lstm, weights_only=True)
    with pytest.raises(R.ConversionError, match=r"lstm\.h5: tensor gru_1/gru_1/kernel:0: shape \[8, 32\], "
                                                r"expected \[8, 24\].*LSTM"):
        R.speech_weights(K.read_keras_hdf5(p))
    # reset_after=True (tf.keras 2 default): two biases
    ra = [(n, [(wn, np.zeros((2, 24), np.float32)) if wn.endswith("bias:0") else (wn, a) for wn, a in ws])
          if n == "gru_1" else (n, ws) for n, ws in base]
    p = _write_keras(tmp_path / "reset_after.h5", ra, weights_only=True)
    with pytest.raises(R.ConversionError, match="reset_after=True"):
        R.speech_weights(K.read_keras_hdf5(p))
    # a missing BatchNormalization
    p = _write_keras(tmp_path / "no_bn.h5", [layer for layer in base if layer[0] != "batch_normalization_2"],
                     weights_only=True)
    with pytest.raises(R.ConversionError, match=r"no_bn\.h5: unexpected layer set for SpeechE"):
        R.speech_weights(K.read_keras_hdf5(p))
    # the layer list in model_config (a relu inside the last Dense, a GRU with reset_after)
    cfg = _keras_config(5, 9, 8, 3)
    cfg["config"]["layers"][-2]["config"]["activation"] = "relu"
    with pytest.raises(R.ConversionError, match="output Dense with activation 'relu'"):
        R.speech_weights(K.read_keras_hdf5(_write_keras(tmp_path / "relu.h5", base, cfg)))
    cfg = _keras_config(5, 9, 8, 3, reset_after=True)
    with pytest.raises(R.ConversionError, match="GRU with {'reset_after': True}"):
        R.speech_weights(K.read_keras_hdf5(_write_keras(tmp_path / "ra2.h5", base, cfg)))
    cfg = _keras_config(5, 9, 8, 3)
    cfg["config"]["layers"].insert(4, {"class_name": "Conv1D", "config": {"name": "conv1d_1"}})
    with pytest.raises(R.ConversionError, match="unexpected layer set.*Conv1D"):
        R.speech_weights(K.read_keras_hdf5(_write_keras(tmp_path / "conv.h5", base, cfg)))


def test_pickles_archives_and_truncated_files_are_refused(tmp_path):
    import pickle

    pk = tmp_path / "model.pkl"
    pk.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with pytest.raises(ForeignCheckpointError, match=r"model\.pkl: a Python pickle .*refusing to unpickle"):
        K.read_keras_hdf5(pk)
    pt = tmp_path / "model.pt"
    with zipfile.ZipFile(pt, "w") as z:                                  # torch.save / TorchScript are zips
        z.writestr("archive/data.pkl", pickle.dumps([1, 2]))
    with pytest.raises(ForeignCheckpointError, match=r"model\.pt: a zip archive .*TorchScript"):
        K.read_keras_hdf5(pt)
    empty = tmp_path / "empty.hdf5"
    empty.write_bytes(b"")
    with pytest.raises(ForeignCheckpointError, match=r"empty\.hdf5: an empty file"):
        K.read_keras_hdf5(empty)
    full = _write_keras(tmp_path / "model.hdf5", _keras_layers(np.random.default_rng(7), 5, 8, 3),
                        _keras_config(5, 9, 8, 3))
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ForeignCheckpointError, match=r"cut\.hdf5: .*(truncated|damaged)"):
        K.read_keras_hdf5(cut)
    with pytest.raises(ForeignCheckpointError, match="no such file"):
        K.read_keras_hdf5(tmp_path / "absent.hdf5")
    # a pickled .npy is not loaded
    np.save(tmp_path / "mean_pose.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "max_val.npy", np.ones(3))
    with pytest.raises(R.ConversionError, match=r"mean_pose\.npy: not a plain numeric \.npy"):
        R.read_normalization(tmp_path)


def test_normalization_files(tmp_path):
    rng = np.random.default_rng(8)
    y = rng.normal(10, 3, (50, 6))
    np.save(tmp_path / "Y_train.npy", y)
    mu, m, desc = R.read_normalization(tmp_path)                         # recomputed as prepare_motion_data
    np.testing.assert_allclose(mu, y.mean(0))
    np.testing.assert_allclose(m, np.abs(y).max(0))
    assert "Y_train" in desc
    np.save(tmp_path / "mean_pose.npy", np.arange(6.0))
    np.save(tmp_path / "max_val.npy", np.full(6, 2.0))
    mu, m, desc = R.read_normalization(tmp_path)                         # the demo's files win
    np.testing.assert_array_equal(mu, np.arange(6.0))
    assert desc.startswith("mean_pose.npy")
    np.save(tmp_path / "max_val.npy", np.full(5, 2.0))
    with pytest.raises(R.ConversionError, match="6 values, max_val.npy 5"):
        R.read_normalization(tmp_path)


# ============================================================================ against a prepared dataset
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    from data_prep import synthetic
    from gesture_jax.motion.representations import load_pipeline

    root = tmp_path_factory.mktemp("ka_convert")
    src, data = root / "src", root / "data"
    synthetic.generate_corpus(src, num_train=2, num_test=1, duration_s=6.0, seed=0)
    p = subprocess.run([sys.executable, "-m", "data_prep.prepare", f"--config={CONFIG}", f"--config.data.root={src}",
                        f"--config.data.out={data}", "--config.data.num_workers=1", *DATA_OV],
                       cwd=REPO, capture_output=True, text=True, env=_env())
    assert p.returncode == 0, p.stderr[-3000:]
    return {"root": root, "src": src, "data": data, "pipeline": load_pipeline(data / "motion_pipeline")}


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONUNBUFFERED="1")


def _bvh_node_order(pipeline):
    """The reference's node order (evaluation/joints.txt): depth-first over the hierarchy with each
    End Site right after its joint, built here from the parents (independently of convert.py)."""
    sk = pipeline._fit.skeleton
    children = {j: [c for c in range(len(sk.parents)) if sk.parents[c] == j] for j in range(len(sk.parents))}
    out = []

    def visit(j):
        out.append(sk.names[j])
        if j in sk.end_sites:
            out.append(sk.names[j] + "_End")
        for c in children[j]:
            visit(c)

    visit(0)
    return out


class Reference:
    """The authors' world for DATA's skeleton: frames in joints.txt order, hips at ROOT."""
    ROOT = np.array([1.5, 60.0, -2.0])

    def __init__(self, pipeline, rng, root=None):
        if root is not None:
            self.ROOT = np.asarray(root, np.float64)
        fit = pipeline._fit
        self.raw = list(fit.raw_names)
        self.names = [f"{n}_{k}{a}" for n in _bvh_node_order(pipeline) for k in "pv" for a in "xyz"]
        self.idx = np.asarray([self.raw.index(n) for n in self.names])          # ref channel -> our raw channel
        root_ours = np.asarray(fit.const_values)[[self.raw.index(f"{pipeline.node_names[0]}_p{a}") for a in "xyz"]]
        self.shift_raw = np.asarray([(self.ROOT - root_ours)["xyz".index(n[-1])] if n[-3:-1] == "_p" else 0.0
                                     for n in self.raw])
        mean_raw = np.asarray(fit.const_values, np.float64).copy()
        mean_raw[fit.keep] = fit.mean
        keep_ref = np.asarray(fit.keep)[self.idx]
        # reference statistics: DATA's mean (moved to the reference hips), slightly off, and a max |y|
        # reference statistics: DATA's mean (moved to the reference hips), slightly off, and a max |y|; the
        # channels DATA drops as constant vary a little in the reference's data, except the hips' (fixed there too)
        root_ref = np.asarray([n.startswith(pipeline.node_names[0] + "_") for n in self.names])
        vary = keep_ref | ~root_ref
        self.mu = (mean_raw + self.shift_raw)[self.idx] + np.where(vary, rng.normal(0, 0.3, len(self.idx)), 0)
        self.M = np.where(vary, np.abs(self.mu) + rng.uniform(2, 20, len(self.idx)), np.abs(self.mu))
        self.keep_raw = np.asarray(fit.keep)
        self.kept_ref = np.asarray([self.names.index(self.raw[r]) for r in np.flatnonzero(fit.keep)])

    def decode(self, code, W2, b2):
        return np.tanh(code @ W2.astype(np.float64) + b2) * (self.M + 1e-15) + self.mu


def _contexts(bundle, feats):
    from gesture_jax.audio.context import context_windows, silence_frame
    from gesture_jax.audio.features import make_extractor
    cfg = bundle.config
    silence = silence_frame(make_extractor(cfg.audio, float(cfg.data.fps)))
    return np.asarray(context_windows(feats, int(cfg.kucherenko.context), silence), np.float64)


def _sample(bundle, feats):
    from gesture_jax.generate import method_of
    from gesture_jax.sampling.options import SamplingOptions
    z = method_of(bundle).sample(bundle, [feats.astype(np.float32)], SamplingOptions(), progress=False)[0][0]
    return np.asarray(bundle.model.norm.z_to_y(jnp.asarray(z)), np.float64)       # our raw units, kept channels


def _convert_cli(*args):
    return subprocess.run([sys.executable, "-m", "gesture_jax.methods.kucherenko.convert", f"--config={CONFIG}",
                           *DATA_OV, *args], cwd=REPO, capture_output=True, text=True, env=_env())


def test_bvh_frame_order_is_the_references(prepared, tmp_path):
    lay = R.frame_layout(prepared["pipeline"], "bvh")
    nodes = [n[:-3] for n in lay.ref_names[::6]]
    assert nodes == _bvh_node_order(prepared["pipeline"])
    assert nodes[nodes.index("Head") + 1] == "Head_End"                   # as Head, Site1 in joints.txt
    assert R.frame_layout(prepared["pipeline"], "ours").ref_names == lay.raw_names
    listed = tmp_path / "joints.txt"                                      # joints.txt-style, in our node names
    listed.write_text(",".join(nodes))
    assert R.frame_layout(prepared["pipeline"], str(listed)).ref_names == lay.ref_names
    listed.write_text(",".join(nodes[:-1] + ["Site13"]))
    with pytest.raises(R.ConversionError, match=r"unknown: \['Site13'\], missing: \['LeftToeBase_End'\]"):
        R.frame_layout(prepared["pipeline"], str(listed))


def test_cli_proposed_model_into_a_workdir_that_generate_loads(prepared, tmp_path):
    from gesture_jax.generate import generate_motion, load_bundle

    rng = np.random.default_rng(9)
    pipe = prepared["pipeline"]
    ref = Reference(pipe, rng)
    D, code, width, ctx = len(ref.names), 40, 32, 21
    layers = _keras_layers(rng, 26, width, code)
    speech = _write_keras(tmp_path / "Model_MFCC.hdf5", layers, _keras_config(26, ctx, width, code))
    t = _dae_tensors(rng, D, code)
    ae_dir = tmp_path / "DAE_checkpoints"
    ae_dir.mkdir()
    _write_bundle(ae_dir / "chkpt-final", t)
    (ae_dir / "checkpoint").write_text('model_checkpoint_path: "/home/someone/112/chkpt-final"\n')
    norm = tmp_path / "models"
    norm.mkdir()
    np.save(norm / "mean_pose.npy", ref.mu)
    np.save(norm / "max_val.npy", ref.M)
    wd = tmp_path / "run"

    p = _convert_cli(f"--workdir={wd}", f"--speech={speech}", f"--autoencoder={ae_dir}", f"--normalization={norm}",
                     f"--data={prepared['data']}")
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((wd / "config.json").read_text())
    ka = cfg["kucherenko"]
    assert (ka["use_autoencoder"], ka["code_dim"], ka["width"], ka["context"], ka["recurrent_activation"]) == \
        (True, code, width, (ctx - 1) // 2, "sigmoid")
    conv = json.loads((wd / "conversion.json").read_text())
    assert conv["reference_root"] == ref.ROOT.tolist() and conv["frame_order"] == "bvh"
    assert conv["autoencoder_variables"]["decoder.kernel"] == "AE_Variables/Variables/matrix2"
    assert conv["sources"]["speech"]["sha256"] and conv["pose_check"]["max_node_distance"] < 2.0
    assert (wd / "stages" / "autoencoder" / "checkpoints" / "0").is_dir()
    assert (wd / "stages" / "speech" / "checkpoints" / "0").is_dir()
    from gesture_jax.training import check                                # written as the trainer does: checksummed
    rows = check.check_run(wd)
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows

    bundle = load_bundle(wd)
    feats = rng.normal(0, 1, (45, 26))
    ours = _sample(bundle, feats)                                          # [L, F], our raw units
    code_ref = _np_keras_speeche(_weighted(layers), _contexts(bundle, feats), "sigmoid")
    y_ref = ref.decode(code_ref, t["AE_Variables/Variables/matrix2"], t["AE_Variables/Variables/bias2"])
    want = y_ref[:, ref.kept_ref] - ref.shift_raw[ref.keep_raw]            # the reference's frame, in our frame
    np.testing.assert_allclose(ours, want, atol=1e-4 * ref.M.max(), rtol=1e-5)
    # the encoder (the speech stage's training targets): reference x of our frames -> reference code
    y_raw = np.asarray(pipe._fit.const_values, np.float64)[None].repeat(len(ours), 0)
    y_raw[:, ref.keep_raw] = ours
    x_ref = ((y_raw + ref.shift_raw)[:, ref.idx] - ref.mu) / (ref.M + 1e-8)
    code_want = np.tanh(x_ref @ t["AE_Variables/Variables/matrix1"].astype(np.float64) + t["AE_Variables/Variables/bias1"])
    got = np.asarray(bundle.model.autoencoder.encode(bundle.model.norm.ka.normalize(jnp.asarray(ours, jnp.float32)),
                                                     deterministic=True))
    np.testing.assert_allclose(got, code_want, atol=2e-4)
    # and the BVH
    bvh = generate_motion(bundle, [rng.normal(0, 0.05, 16000 * 2).astype(np.float32)])[0][0]
    assert bvh.num_frames == 40 and np.all(np.isfinite(bvh.frames))


def test_cli_baseline_with_speech_only(prepared, tmp_path):
    from gesture_jax.generate import load_bundle

    rng = np.random.default_rng(10)
    # no mean pose in a baseline conversion: the reference hips are at the skeleton's root OFFSET
    ref = Reference(prepared["pipeline"], rng, root=prepared["pipeline"]._fit.skeleton.offsets[0])
    layers = _keras_layers(rng, 26, 16, len(ref.names))
    speech = _write_keras(tmp_path / "weights.h5", layers, weights_only=True)
    wd = tmp_path / "run"
    p = _convert_cli(f"--workdir={wd}", f"--speech={speech}", f"--data={prepared['data']}",
                     "--recurrent_activation=hard_sigmoid")
    assert p.returncode == 0, p.stderr[-3000:]
    ka = json.loads((wd / "config.json").read_text())["kucherenko"]
    assert (ka["use_autoencoder"], ka["recurrent_activation"], ka["context"]) == (False, "hard_sigmoid", 30)
    assert not (wd / "stages" / "autoencoder").exists()
    bundle = load_bundle(wd)
    feats = rng.normal(0, 1, (30, 26))
    want = _np_keras_speeche(_weighted(layers), _contexts(bundle, feats), "hard_sigmoid")
    want = want[:, ref.kept_ref] - ref.shift_raw[ref.keep_raw]
    np.testing.assert_allclose(_sample(bundle, feats), want, atol=1e-4, rtol=1e-5)


def test_conversion_errors(prepared, tmp_path):
    """In-process: every check runs before the workdir is written."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kcfg", REPO / CONFIG)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    with cfg.unlocked():
        cfg.data.window_s, cfg.data.stride_s, cfg.data.test_stride_s = 4.0, 1.0, 4.0
    rng = np.random.default_rng(11)
    ref = Reference(prepared["pipeline"], rng)
    D = len(ref.names)
    speech = _write_keras(tmp_path / "m.hdf5", _keras_layers(rng, 26, 8, 12), _keras_config(26, 21, 8, 12))
    _write_bundle(tmp_path / "chkpt-final", _dae_tensors(rng, D, 12))
    norm = tmp_path / "norm"
    norm.mkdir()
    np.save(norm / "mean_pose.npy", ref.mu)
    np.save(norm / "max_val.npy", ref.M)
    kw = dict(speech=speech, data=prepared["data"], verify=False, log=lambda s: None)
    wd = tmp_path / "wd"
    with pytest.raises(C.ConversionError, match="needs --normalization"):
        C.convert(cfg, wd, autoencoder=tmp_path / "chkpt-final", **kw)
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 60)   # what gesture_jax.foreign refuses, too
    with pytest.raises(C.ConversionError, match=r"model\.pt: a zip archive"):
        C.convert(cfg, wd, **{**kw, "speech": tmp_path / "model.pt"})
    # the reference frames read in our node order: the mean pose gives it away
    with pytest.raises(C.ConversionError, match=r"mean pose does not match .*--frame_order=ours"):
        C.convert(cfg, wd, autoencoder=tmp_path / "chkpt-final", normalization=norm, frame_order="ours", **kw)
    with pytest.raises(C.ConversionError, match="12 values .* the autoencoder's code has 7"):
        _write_bundle(tmp_path / "other", _dae_tensors(rng, D, 7))
        C.convert(cfg, wd, autoencoder=tmp_path / "other", normalization=norm, **kw)
    small = _write_keras(tmp_path / "b.hdf5", _keras_layers(rng, 26, 8, D - 6), _keras_config(26, 21, 8, D - 6))
    with pytest.raises(C.ConversionError, match=rf"frames of {D - 6} values .* give {D}"):
        C.convert(cfg, wd, **{**kw, "speech": small})
    mfcc_pros = _write_keras(tmp_path / "p.hdf5", _keras_layers(rng, 30, 8, D), _keras_config(30, 21, 8, D))
    with pytest.raises(C.ConversionError, match="takes 30 speech features per frame .* holds 26"):
        C.convert(cfg, wd, **{**kw, "speech": mfcc_pros})
    assert not wd.exists()
    wd.mkdir()
    (wd / "config.json").write_text("{}")
    ok = _write_keras(tmp_path / "ok.hdf5", _keras_layers(rng, 26, 8, D), _keras_config(26, 21, 8, D))
    with pytest.raises(C.ConversionError, match="already holds a run"):
        C.convert(cfg, wd, **{**kw, "speech": ok})


def test_cli_one_line_errors_and_help(prepared, tmp_path):
    import pickle

    pk = tmp_path / "model.hdf5"
    pk.write_bytes(pickle.dumps({"weights": 1}))
    p = _convert_cli(f"--workdir={tmp_path / 'wd'}", f"--speech={pk}", f"--data={prepared['data']}")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
    assert lines[0].startswith("error: ") and str(pk) in lines[0] and "pickle" in lines[0]
    assert not (tmp_path / "wd").exists()
    h = subprocess.run([sys.executable, "-m", "gesture_jax.methods.kucherenko.convert", "--help"], cwd=REPO,
                       capture_output=True, text=True, env=_env())
    assert "--speech" in h.stdout and "--autoencoder" in h.stdout and "chkpt-final" in h.stdout
