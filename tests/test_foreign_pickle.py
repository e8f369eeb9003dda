"""The restricted unpickler (gesture_jax/foreign/safe_pickle.py) and the torch.save zip reader
(gesture_jax/foreign/torch_zip.py): Lightning-like checkpoints written by real torch.save read
back tensor for tensor, pickled payloads never run, clear errors, real scikit-learn scalers."""
from __future__ import annotations

import collections
import functools
import importlib
import pickle
import struct
import sys
import uuid
import zipfile

import numpy as np
import pytest

from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign.safe_pickle import Opaque, load_plain, read_scaler, restricted_load
from gesture_jax.foreign.torch_zip import read_torch_archive, state_dict

HELPER_SRC = '''
import pathlib


def touch(path):
    pathlib.Path(path).write_text("ran")


class Evil:
    """Unpickling calls touch(path)."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (touch, (self.path,))


class EvilState:
    """Unpickling runs __setstate__, which writes the marker."""
    def __init__(self, path):
        self.path = path

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        pathlib.Path(state["path"]).write_text("ran")


class MyConfig:
    """Stands in for an omegaconf / own config object pickled into hyper_parameters."""
    def __init__(self, **kw):
        self.__dict__.update(kw)


class System:
    def __reduce__(self):
        import os
        return (os.system, ("true",))
'''


@pytest.fixture
def helpers(tmp_path, monkeypatch):
    """A module written to tmp_path and imported, so its classes pickle by reference."""
    name = f"pg_helpers_{uuid.uuid4().hex[:8]}"
    d = tmp_path / "mods"
    d.mkdir()
    (d / f"{name}.py").write_text(HELPER_SRC)
    monkeypatch.syspath_prepend(str(d))
    mod = importlib.import_module(name)
    yield mod
    sys.modules.pop(name, None)


def _lightning_ckpt(torch, helpers, tmp_path, extra_hparams=None):
    """A file laid out like a Lightning checkpoint, written by real torch.save."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    net(torch.randn(5, 3))  # running stats and num_batches_tracked move
    sd = net.state_dict()   # an OrderedDict carrying _metadata
    w = torch.randn(4, 6)
    sd["extra.w"] = w
    sd["extra.w_t"] = w.t()          # non-contiguous view sharing w's storage
    sd["extra.w_row"] = w[2, 1:5]    # a slice: storage offset
    sd["extra.w_col"] = w[:, 3]      # strided slice
    sd["extra.half"] = torch.randn(2, 3).half()
    sd["extra.param"] = torch.nn.Parameter(torch.randn(3))
    hp = {"optimizer": functools.partial(torch.optim.AdamW, lr=2e-4),
          "config": helpers.MyConfig(dim=1280, layers=12, name="pg")}
    hp.update(extra_hparams or {})
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4)
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    ckpt = {"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "2.1.0", "state_dict": sd,
            "hyper_parameters": hp, "optimizer_states": [opt.state_dict()],
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.5)}},
            "lr_schedulers": [{"last_epoch": 3, "_last_lr": [2e-4]}]}
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    return path, ckpt


def test_lightning_checkpoint_reads_back_every_tensor(tmp_path, helpers):
    torch = pytest.importorskip("torch")
    path, ckpt = _lightning_ckpt(torch, helpers, tmp_path)
    sd, report = state_dict(path)
    ref = ckpt["state_dict"]
    assert list(sd) == list(ref)
    for k, t in ref.items():
        want = t.detach().numpy()
        assert sd[k].dtype == want.dtype, k
        assert sd[k].shape == want.shape, k
        np.testing.assert_array_equal(sd[k], want, err_msg=k)
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"].shape == ()
    assert int(sd["1.num_batches_tracked"]) == 2
    assert sd["extra.half"].dtype == np.float16
    # views share the one storage read from the file
    assert np.shares_memory(sd["extra.w"], sd["extra.w_t"]) and np.shares_memory(sd["extra.w"], sd["extra.w_col"])
    assert "functools.partial x1" in report
    assert f"{helpers.__name__}.MyConfig x1" in report

    tree = read_torch_archive(path).tree
    assert tree["epoch"] == 3 and tree["global_step"] == 1234
    assert tree["pytorch-lightning_version"] == "2.1.0"
    part = tree["hyper_parameters"]["optimizer"]
    assert isinstance(part, Opaque) and part.name == "functools.partial"
    assert part.state[0].name == "torch.optim.adamw.AdamW" and part.state[2] == {"lr": 2e-4}
    cfg = tree["hyper_parameters"]["config"]
    assert cfg.name == f"{helpers.__name__}.MyConfig" and cfg.state == {"dim": 1280, "layers": 12, "name": "pg"}
    ost = tree["optimizer_states"][0]["state"]
    for i, s in ckpt["optimizer_states"][0]["state"].items():
        np.testing.assert_array_equal(ost[i]["exp_avg"], s["exp_avg"].numpy())
    assert float(tree["callbacks"]["ModelCheckpoint{'monitor': 'val_loss'}"]["best_model_score"]) == 0.5

    flat = tmp_path / "weights.pt"   # plain torch.save(model.state_dict())
    torch.save(ckpt["state_dict"], flat)
    sd2, _ = state_dict(flat)
    np.testing.assert_array_equal(sd2["extra.w_t"], ref["extra.w_t"].numpy())


def test_bfloat16_and_big_tensor_dtypes(tmp_path):
    torch = pytest.importorskip("torch")
    import ml_dtypes
    t = {"bf": torch.randn(3, 2).bfloat16(), "b": torch.tensor([True, False]), "u16": torch.arange(4).to(torch.uint16),
         "c": torch.randn(2, dtype=torch.complex64), "d": torch.randn(2, dtype=torch.float64)}
    torch.save(t, tmp_path / "t.pt")
    sd, _ = state_dict(tmp_path / "t.pt")
    assert sd["bf"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(sd["bf"].astype(np.float32), t["bf"].float().numpy())
    for k in ("b", "u16", "c", "d"):
        assert sd[k].dtype == t[k].numpy().dtype
        np.testing.assert_array_equal(sd[k], t[k].numpy())


def test_nothing_in_the_pickle_is_executed(tmp_path, helpers):
    torch = pytest.importorskip("torch")
    m1, m2, m3 = tmp_path / "marker_reduce", tmp_path / "marker_setstate", tmp_path / "marker_control"
    # the payloads are live: the real unpickler runs them
    for payload in (helpers.Evil(str(m3)), helpers.EvilState(str(m3))):
        pickle.loads(pickle.dumps(payload))
        assert m3.exists()
        m3.unlink()

    path, _ = _lightning_ckpt(torch, helpers, tmp_path, {"evil": helpers.Evil(str(m1)),
                                                          "evil_state": helpers.EvilState(str(m2))})
    arch = read_torch_archive(path)
    assert not m1.exists() and not m2.exists()
    hp = arch.tree["hyper_parameters"]
    assert isinstance(hp["evil"], Opaque) and hp["evil"].name == f"{helpers.__name__}.touch"
    assert hp["evil"].args == (str(m1),)
    assert hp["evil_state"].name == f"{helpers.__name__}.EvilState" and hp["evil_state"].state == {"path": str(m2)}
    assert f"{helpers.__name__}.touch x1" in arch.report
    state_dict(path)   # the weights still read
    assert not m1.exists() and not m2.exists()

    # a placeholder, called, records the call and runs nothing
    called = hp["evil"](str(m1))
    assert isinstance(called, Opaque) and called.args == (str(m1),) and not m1.exists()

    # mode="plain" (scaler / pipeline files) refuses the same payloads, naming the global
    for obj, marker, name in ((helpers.Evil(str(m1)), m1, f"{helpers.__name__}.touch"),
                              (helpers.EvilState(str(m2)), m2, f"{helpers.__name__}.EvilState")):
        f = tmp_path / "evil.pkl"
        f.write_bytes(pickle.dumps(obj, protocol=4))
        with pytest.raises(ForeignCheckpointError, match=name) as e:
            load_plain(f)
        assert str(f) in str(e.value) and not marker.exists()

    # the classic getattr(__import__('os'), 'system')(cmd) chain: inert in placeholder mode, refused in plain
    evil = (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vtouch " + str(m1).encode()
            + b"\ntR.")
    obj, report = restricted_load(evil, mode="placeholder", source="chain.pkl")
    assert isinstance(obj, Opaque) and obj.name == "builtins.getattr" and not m1.exists()
    assert "builtins.__import__ x1" in report
    with pytest.raises(ForeignCheckpointError, match=r"chain\.pkl.*builtins\.getattr"):
        restricted_load(evil, mode="plain", source="chain.pkl")
    assert not m1.exists()


def test_clear_errors(tmp_path, helpers):
    torch = pytest.importorskip("torch")
    ts = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), ts)
    with pytest.raises(ForeignCheckpointError, match="TorchScript archive.*not executed") as e:
        read_torch_archive(ts)
    assert str(ts) in str(e.value)

    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ForeignCheckpointError, match="legacy.*_use_new_zipfile_serialization=True"):
        state_dict(legacy)

    good, _ = _lightning_ckpt(torch, helpers, tmp_path)
    data = good.read_bytes()
    cases = {"empty.ckpt": (b"", "empty"), "random.ckpt": (b"\x13" + np.random.default_rng(1).bytes(4095), "not a zip"),
             "half.ckpt": (data[: len(data) // 2], "damaged or truncated zip"),
             "nocd.ckpt": (data[:-30], "damaged or truncated zip")}
    for name, (content, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(ForeignCheckpointError, match=msg) as e:
            state_dict(p)
        assert str(p) in str(e.value), name

    # a flipped byte inside a tensor's record: its CRC fails
    with zipfile.ZipFile(good) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    bad = bytearray(data)
    n_name, n_extra = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    bad[info.header_offset + 30 + n_name + n_extra + 1] ^= 0xFF   # torch pads the local extra field
    p = tmp_path / "flipped.ckpt"
    p.write_bytes(bytes(bad))
    with pytest.raises(ForeignCheckpointError, match="CRC"):
        state_dict(p)

    nokey = tmp_path / "nokey.ckpt"
    torch.save({"epoch": 1, "hparams": {"lr": 1e-3}, "name": "x"}, nokey)
    with pytest.raises(ForeignCheckpointError, match=r"no 'state_dict'.*'epoch', 'hparams', 'name'") as e:
        state_dict(nokey)
    assert str(nokey) in str(e.value)

    opaque_val = tmp_path / "opaque_val.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2), "cfg": helpers.MyConfig(a=1)}}, opaque_val)
    with pytest.raises(ForeignCheckpointError, match=rf"\['cfg'\] is a {helpers.__name__}\.MyConfig object"):
        state_dict(opaque_val)

    plain_zip = tmp_path / "notorch.zip"
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(ForeignCheckpointError, match="without a data.pkl.*config.json"):
        read_torch_archive(plain_zip)

    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps({"a": np.arange(10.0)}, protocol=4)[:-20])
    with pytest.raises(ForeignCheckpointError, match="trunc.pkl"):
        load_plain(trunc)


def test_numpy_values_rebuilt_in_every_protocol():
    import ml_dtypes
    obj = {"f": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "be": np.arange(3, dtype=">i4"),
           "o": np.array(["a", None], dtype=object), "u": np.array(["ab", "c"]), "bf": np.ones(2, ml_dtypes.bfloat16),
           "td": np.arange(2).astype("m8[s]"), "z": np.zeros((0, 3), np.float32), "s0": np.array(5),
           "sc": np.float32(3.5), "i": np.int64(-2), "dt": np.dtype("M8[ns]"),
           "b": b"xy", "e": b"", "ba": bytearray(b"zz"), "set": {1, 2}, "fs": frozenset([3]), "c": 1 + 2j,
           "od": collections.OrderedDict(a=1), "t": (1, "x", None)}
    for proto in range(6):
        got, report = restricted_load(pickle.dumps(obj, protocol=proto), mode="plain", source="np.pkl")
        assert report == []
        for k, want in obj.items():
            g = got[k]
            assert type(g) is type(want), (proto, k)
            if isinstance(want, np.ndarray):
                assert g.dtype == want.dtype.newbyteorder("=") and g.shape == want.shape, (proto, k)
                assert g.tolist() == want.tolist(), (proto, k)
            else:
                assert g == want and getattr(g, "dtype", None) == getattr(want, "dtype", None), (proto, k)


def test_sklearn_scaler(tmp_path, helpers):
    pytest.importorskip("sklearn")
    import joblib
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    x = np.random.default_rng(0).normal(3.0, 2.0, (40, 5)).astype(np.float32)
    sc = StandardScaler().fit(x)
    files = {"s.pkl": lambda p: p.write_bytes(pickle.dumps(sc)),
             "s.joblib": lambda p: joblib.dump(sc, p),
             "s_zlib.joblib": lambda p: joblib.dump(sc, p, compress=3),
             "pipe.joblib": lambda p: joblib.dump(Pipeline([("scale", sc)]), p)}
    for name, write in files.items():
        p = tmp_path / name
        write(p)
        got = read_scaler(p)
        assert got.kind == "StandardScaler" and got.n_features == 5, name
        for mine, theirs in ((got.mean, sc.mean_), (got.scale, sc.scale_), (got.var, sc.var_)):
            assert mine.dtype == theirs.dtype, name
            np.testing.assert_array_equal(mine, theirs, err_msg=name)

    nomean = tmp_path / "nomean.pkl"
    nomean.write_bytes(pickle.dumps(StandardScaler(with_mean=False).fit(x)))
    assert read_scaler(nomean).mean is None

    system = tmp_path / "system.pkl"
    system.write_bytes(pickle.dumps(helpers.System()))
    with pytest.raises(ForeignCheckpointError, match=r"refusing global (os|posix)\.system") as e:
        read_scaler(system)
    assert str(system) in str(e.value)

    mm = tmp_path / "minmax.pkl"
    mm.write_bytes(pickle.dumps(MinMaxScaler().fit(x)))
    with pytest.raises(ForeignCheckpointError, match="MinMaxScaler.*expected a fitted scikit-learn StandardScaler"):
        read_scaler(mm)
    other = tmp_path / "dict.pkl"
    other.write_bytes(pickle.dumps({"mean": np.zeros(3)}))
    with pytest.raises(ForeignCheckpointError, match=r"dict.pkl: holds a dict; expected"):
        read_scaler(other)
    notpickle = tmp_path / "scaler.txt"
    notpickle.write_text("mean 1 2 3\n")
    with pytest.raises(ForeignCheckpointError, match="not a pickle"):
        read_scaler(notpickle)
