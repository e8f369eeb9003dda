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
import zlib
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


# ------------------------------------------------------------------ crafted files (review findings)
# Hand-written pickles and zip archives: a test can make them lie in ways torch.save never does.
class _G:
    """GLOBAL module.name."""

    def __init__(self, dotted):
        self.module, _, self.name = dotted.rpartition(".")


class _R:
    """func(*args) (REDUCE), then BUILD with state when given."""

    def __init__(self, func, args=(), state=None):
        self.func, self.args, self.state = func, tuple(args), state


class _P:
    """A persistent id (BINPERSID)."""

    def __init__(self, pid):
        self.pid = pid


def _pk(obj):
    """Protocol-2 pickle bytes of obj (None, bool, int, float, str, tuple, list, dict, _G, _R, _P)."""
    out = bytearray(b"\x80\x02")

    def w(o):
        if o is None or o is True or o is False:
            out.extend({None: b"N", True: b"\x88", False: b"\x89"}[o])
        elif isinstance(o, int) and -(1 << 31) <= o < (1 << 31):
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, int):
            b = o.to_bytes(16, "little", signed=True)
            out.extend(b"\x8a\x10" + b)
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o))
        elif isinstance(o, str):
            b = o.encode()
            out.extend(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(o, (tuple, list)):
            out.extend(b"(" if isinstance(o, tuple) else b"](")
            for v in o:
                w(v)
            out.extend(b"t" if isinstance(o, tuple) else b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                w(k)
                w(v)
            out.extend(b"u")
        elif isinstance(o, _G):
            out.extend(b"c" + f"{o.module}\n{o.name}\n".encode())
        elif isinstance(o, _R):
            w(o.func)
            w(o.args)
            out.extend(b"R")
            if o.state is not None:
                w(o.state)
                out.extend(b"b")
        elif isinstance(o, _P):
            w(o.pid)
            out.extend(b"Q")
        else:
            raise TypeError(type(o))

    w(obj)
    return bytes(out + b".")


def _v2(key, numel, offset, size, stride, storage="FloatStorage"):
    pid = _P(("storage", _G(f"torch.{storage}"), key, "cpu", numel))
    return _R(_G("torch._utils._rebuild_tensor_v2"),
              (pid, offset, tuple(size), tuple(stride), False, _R(_G("collections.OrderedDict"))))


def _v3(key, nbytes, offset, size, stride, dtype):
    pid = _P(("storage", _G("torch.storage.UntypedStorage"), key, "cpu", nbytes))
    return _R(_G("torch._utils._rebuild_tensor_v3"),
              (pid, offset, tuple(size), tuple(stride), False, _R(_G("collections.OrderedDict")), _G(f"torch.{dtype}")))


def _zip(records, aliases=(), method=None, flags=None, claim=None):
    """Zip bytes of records (name -> bytes), stored unless method[name] (8: deflated, other: as is);
    aliases: (extra name, record it points at) central-directory entries; flags[name]: flag bits;
    claim[name]: the uncompressed size the central directory claims."""
    method, flags, claim = method or {}, flags or {}, claim or {}
    out, central, at = bytearray(), bytearray(), {}
    for name, data in records.items():
        nb, m, fl, crc = name.encode(), method.get(name, 0), flags.get(name, 0), zlib.crc32(data)
        stored = data
        if m == 8:
            c = zlib.compressobj(wbits=-15)
            stored = c.compress(data) + c.flush()
        at[name] = (len(out), crc, len(stored), len(data), m, fl)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, fl, m, 0, 0, crc, len(stored), len(data), len(nb), 0)
        out += nb + stored
    entries = [(n, n) for n in records] + list(aliases)
    for name, target in entries:
        off, crc, csize, usize, m, fl = at[target]
        nb = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, fl, m, 0, 0, crc, csize, claim.get(name, usize),
                               len(nb), 0, 0, 0, 0, 0, off) + nb
    return bytes(out + central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                                             len(central), len(out), 0))


def _torch_zip(path, tree, storages, big=False, **zip_kw):
    recs = {"archive/data.pkl": _pk(tree), "archive/byteorder": b"big" if big else b"little"}
    recs.update({f"archive/data/{k}": v for k, v in storages.items()})
    recs["archive/version"] = b"3\n"
    path.write_bytes(_zip(recs, **zip_kw))
    return path


def _f32(n):
    return np.arange(n, dtype=np.float32).tobytes()


def test_crafted_archive_helper_reads(tmp_path):
    p = _torch_zip(tmp_path / "ok.pt", {"w": _v2("0", 6, 0, (2, 3), (3, 1)), "t": _v2("0", 6, 1, (2, 2), (1, 3)),
                                        "e": _v2("0", 6, 0, (4, 3), (0, 1))}, {"0": _f32(6)})
    sd, report = state_dict(p)
    np.testing.assert_array_equal(sd["w"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(sd["t"], np.arange(6.0).reshape(2, 3)[:, 1:3].T)
    # stride 0 on 3 elements (an expand()ed tensor): materialised, 12 elements
    np.testing.assert_array_equal(sd["e"], np.tile(np.arange(3.0), (4, 1)))
    assert report == []


def test_overlapping_records_are_refused(tmp_path):
    """Finding 1: 40 central-directory names for one stored 1 MiB record cost 40 MiB (100 GB at scale)."""
    n = 1 << 18
    tree = {f"w{i}": _v2(str(i), n, 0, (n,), (1,)) for i in range(40)}
    p = _torch_zip(tmp_path / "alias.pt", tree, {"0": _f32(n)},
                   aliases=[(f"archive/data/{i}", "archive/data/0") for i in range(1, 40)])
    with pytest.raises(ForeignCheckpointError, match=r"records archive/data/0 and archive/data/1 overlap in the file") as e:
        state_dict(p)
    assert str(e.value).startswith(f"{p}: ")


def test_compressed_encrypted_or_oversized_records_are_refused(tmp_path):
    """Findings 2a and 5: torch never compresses or encrypts records; a claimed size is checked
    against the archive's size before anything is allocated; every refusal names file and record."""
    tree = {"w": _v2("0", 6, 0, (6,), (1,))}
    for name, kw, msg in (
            ("deflated.pt", {"method": {"archive/data/0": 8}}, r"record archive/data/0 is compressed \(zip method 8\)"),
            ("imploded.pt", {"method": {"archive/data/0": 6}}, r"record archive/data/0 is compressed \(zip method 6\)"),
            ("encrypted.pt", {"flags": {"archive/data/0": 1}}, "record archive/data/0 is encrypted"),
            ("encrypted_pkl.pt", {"flags": {"archive/data.pkl": 1}}, "record archive/data.pkl is encrypted"),
            ("huge.pt", {"claim": {"archive/data/0": 0xFFFFFFF0}}, r"record archive/data/0 claims 4294967280 bytes"),
            ("huge_pkl.pt", {"claim": {"archive/data.pkl": 0xFFFFFFF0}}, r"record archive/data.pkl claims")):
        p = _torch_zip(tmp_path / name, tree, {"0": _f32(6)}, **kw)
        with pytest.raises(ForeignCheckpointError, match=msg) as e:
            state_dict(p)
        assert str(p) in str(e.value), name


def test_restricted_load_wraps_any_hook_error():
    """Finding 5 (safe_pickle): an error a persistent_load hook raises becomes a ForeignCheckpointError."""
    for exc in (NotImplementedError("method"), RuntimeError("encrypted"), MemoryError()):
        def hook(pid, exc=exc):
            raise exc
        with pytest.raises(ForeignCheckpointError, match=r"hook\.pkl.*" + type(exc).__name__):
            restricted_load(_pk(_P(("storage", 1))), mode="placeholder", source="hook.pkl", persistent_load=hook)


def test_compressed_plain_files_are_capped(tmp_path, monkeypatch):
    """Finding 2b: joblib-compressed files inflate in chunks up to a cap (lowered here to 1 MiB)."""
    import bz2
    import gzip
    import lzma
    from gesture_jax.foreign import safe_pickle
    monkeypatch.setattr(safe_pickle, "_DECOMPRESS_MIN_CAP", 1 << 20, raising=False)
    payload = pickle.dumps(b"\0" * (8 << 20), protocol=4)
    small = pickle.dumps({"a": np.arange(3.0)}, protocol=4)
    for name, comp in (("gzip", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress), ("zlib", zlib.compress),
                       ("lzma", lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE))):
        p = tmp_path / f"bomb.{name}"
        p.write_bytes(comp(payload))
        with pytest.raises(ForeignCheckpointError, match=rf"{name}-compressed data inflating to more than") as e:
            load_plain(p)
        assert str(p) in str(e.value)
        ok = tmp_path / f"ok.{name}"
        ok.write_bytes(comp(small))
        np.testing.assert_array_equal(load_plain(ok)["a"], np.arange(3.0))
        trunc = tmp_path / f"trunc.{name}"
        trunc.write_bytes(comp(small)[:-8])
        with pytest.raises(ForeignCheckpointError, match="truncated or corrupt|not a pickle"):
            load_plain(trunc)


def test_expanded_and_negative_layouts(tmp_path):
    """Finding 3: stride 0 / overlapping strides may not turn a few bytes into terabytes; negative sizes are refused."""
    cases = {"stride0.pt": ({"w": _v2("0", 8, 0, (1 << 20, 1 << 20), (0, 0))}, 8, "repeats a storage of 8"),
             "overlap.pt": ({"w": _v2("0", 8192, 0, (4096, 4096), (1, 1))}, 8192, "repeats a storage of 8192"),
             "negative.pt": ({"w": _v2("0", 8, 0, (-1, 4), (4, 1))}, 8, "bad tensor layout"),
             "negative0.pt": ({"w": _v2("0", 8, 0, (-2, 0), (4, 1))}, 8, "bad tensor layout"),
             "hugedim.pt": ({"w": _v2("0", 8, 0, (0, 1 << 62), (1, 1))}, 8, "bad tensor layout")}
    for name, (tree, n, msg) in cases.items():
        p = _torch_zip(tmp_path / name, tree, {"0": _f32(n)})
        with pytest.raises(ForeignCheckpointError, match=msg) as e:
            state_dict(p)
        assert str(p) in str(e.value), name


def test_expand_written_by_torch_reads_back(tmp_path):
    torch = pytest.importorskip("torch")
    t = {"e": torch.arange(3.0).expand(4, 3), "one": torch.ones(1).expand(5)}
    torch.save(t, tmp_path / "e.pt")
    sd, _ = state_dict(tmp_path / "e.pt")
    for k, v in t.items():
        np.testing.assert_array_equal(sd[k], v.numpy())
        assert sd[k].flags.writeable, k   # materialised, not a read-only stride-0 view


def test_hashing_is_bounded():
    """Finding 4: a dict key / set item built as a tuple DAG hashes in 2**depth steps; refused (here
    depth 20, ~1M steps before the fix; depth 50, 370 bytes, ran for days)."""
    def dag(depth):
        body = bytearray(b"(N\x94")                     # MARK, None, MEMOIZE -> memo 0
        for i in range(depth):
            body += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86\x94"   # BINGET i x2, TUPLE2, MEMOIZE i+1
        return bytes(body + b"1"), b"h" + bytes([depth])  # POP_MARK; then BINGET of the top tuple

    build, top = dag(20)
    uses = {"setitem": b"}" + top + b"Ns", "setitems": b"}(" + top + b"Nu", "dict opcode": b"(" + top + b"Nd",
            "additems": b"\x8f(" + top + b"\x90", "frozenset opcode": b"(" + top + b"\x91",
            "builtins.set": b"cbuiltins\nset\n]" + top + b"a\x85R",
            "builtins.dict": b"cbuiltins\ndict\n](" + top + b"N\x86e\x85R",
            "OrderedDict": b"ccollections\nOrderedDict\n](" + top + b"N\x86e\x85R",
            "opaque setitem": b"cfoo\nBar\n)R" + top + b"Ns"}
    for name, use in uses.items():
        with pytest.raises(ForeignCheckpointError, match=r"dag\.pkl.*not accepted") as e:
            restricted_load(b"\x80\x04" + build + use + b".", mode="placeholder", source="dag.pkl")
        assert "dag.pkl" in str(e.value), name
    # wide instead of deep: 3 levels of 64-tuples of one shared tuple are 262144 values
    wide = bytearray(b"\x80\x04(N\x94")
    for i in range(3):
        wide += b"(" + (b"h" + bytes([i])) * 64 + b"t\x94"
    with pytest.raises(ForeignCheckpointError, match="not accepted"):
        restricted_load(bytes(wide + b"1}h\x03Ns."), mode="placeholder", source="wide.pkl")
    # plain keys still work: small tuples, numbers, bytes, None, numpy scalars
    obj = {(1, ("a", 2.5)): 1, b"k": 2, None: 3, 7: {frozenset([1, (2, 3)]), 4}, np.int64(3): 5}
    got, _ = restricted_load(pickle.dumps(obj, protocol=4), mode="plain", source="ok.pkl")
    assert got == obj


def test_error_messages_do_not_build_full_reprs(tmp_path, monkeypatch):
    """Finding 4: '{x!r:.80}' builds the whole repr first (2**depth for a DAG); messages are bounded."""
    calls = []
    orig = Opaque.__repr__
    monkeypatch.setattr(Opaque, "__repr__", lambda self: calls.append(1) or orig(self))
    items = tuple(_G("foo.Bar") for _ in range(2000))
    p = _torch_zip(tmp_path / "pid.pt", {"w": _R(_G("torch._utils._rebuild_tensor_v2"),
                                                 (_P(items), 0, (1,), (1,), False, None))}, {})
    with pytest.raises(ForeignCheckpointError, match="unsupported persistent id") as e:
        state_dict(p)
    assert len(calls) < 20 and len(str(e.value)) < len(str(p)) + 300
    calls.clear()
    p = _torch_zip(tmp_path / "top.pt", list(items), {})
    with pytest.raises(ForeignCheckpointError, match="the top level is") as e:
        state_dict(p)
    assert len(calls) < 20 and len(str(e.value)) < len(str(p)) + 300


def test_pipeline_with_an_array_step(tmp_path):
    """Finding 6: a Pipeline step that is an array (not an estimator, not 'passthrough')."""
    pytest.importorskip("sklearn")
    from sklearn.pipeline import Pipeline
    pipe = Pipeline([("x", np.array([1.0, 2.0]))])
    p = tmp_path / "pipe.pkl"
    p.write_bytes(pickle.dumps(pipe))
    with pytest.raises(ForeignCheckpointError, match="holds a Pipeline whose only step is a float64 array of shape"):
        read_scaler(p)


def test_big_endian_untyped_storage(tmp_path):
    """Finding 7: a big-endian archive's UntypedStorage (_rebuild_tensor_v3) is swapped for its dtype."""
    tree = {"u": _v3("0", 6, 0, (3,), (1,), "uint16"), "u2": _v3("0", 6, 1, (2,), (1,), "uint16"),
            "i": _v2("1", 2, 0, (2,), (1,), "IntStorage"), "c": _v3("2", 16, 0, (2,), (1,), "complex64")}
    storages = {"0": np.array([1, 2, 258], ">u2").tobytes(), "1": np.array([-5, 70000], ">i4").tobytes(),
                "2": np.array([1 + 2j, -3.5j], ">c8").tobytes()}
    sd, _ = state_dict(_torch_zip(tmp_path / "be.pt", tree, storages, big=True))
    np.testing.assert_array_equal(sd["u"], [1, 2, 258])
    np.testing.assert_array_equal(sd["u2"], [2, 258])
    np.testing.assert_array_equal(sd["i"], [-5, 70000])
    np.testing.assert_array_equal(sd["c"], [1 + 2j, -3.5j])
    assert sd["u"].dtype == np.uint16 and sd["c"].dtype == np.complex64


def test_report_and_errors_are_ascii_safe(tmp_path):
    """Finding 8: global names from the file reach a terminal: escaped, never raw control characters."""
    evil = b"\x80\x02cevil\x1b[2J\xc3\xa9\nX\x07\n)R."
    _, report = restricted_load(evil, mode="placeholder", source="esc.pkl")
    assert report and all(line.isascii() and line.isprintable() for line in report), report
    assert report == ["evil\\x1b[2J\\xe9.X\\x07 x1"]
    with pytest.raises(ForeignCheckpointError) as e:
        restricted_load(evil, mode="plain", source="esc.pkl")
    assert str(e.value).isascii() and str(e.value).isprintable()
    scaler = tmp_path / "esc.sav"
    scaler.write_bytes(b"\x80\x02csklearn.evil\x1b[2J\nX\n)R.")
    with pytest.raises(ForeignCheckpointError, match="holds a sklearn") as e:
        read_scaler(scaler)
    assert str(e.value).isascii() and str(e.value).isprintable()
    p = _torch_zip(tmp_path / "esc.pt", {"state_dict": {"w": _R(_G("evil\x1b[2J.X"))}}, {})
    with pytest.raises(ForeignCheckpointError) as e:
        state_dict(p)
    assert str(e.value).isascii() and str(e.value).isprintable()


def test_state_dict_reads_only_the_weights_storages(tmp_path, monkeypatch):
    """A Lightning file also holds the optimizer's moments (twice the weights for AdamW): state_dict
    never reads their records; read_torch_archive reads everything."""
    torch = pytest.importorskip("torch")
    from gesture_jax.foreign import torch_zip

    p = tmp_path / "with_optimizer.ckpt"
    torch.save({"state_dict": {"w": torch.arange(6.0).reshape(2, 3)},
                "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(1000), "exp_avg_sq": torch.ones(1000)}}}]},
               p)
    read: list[str] = []
    orig = torch_zip._Archive._record

    def spy(self, name, optional=False):
        read.append(name)
        return orig(self, name, optional)

    monkeypatch.setattr(torch_zip._Archive, "_record", spy)
    sd, _ = torch_zip.state_dict(p)
    np.testing.assert_array_equal(sd["w"], np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert len([n for n in read if n.startswith("data/")]) == 1
    read.clear()
    tree = torch_zip.read_torch_archive(p).tree
    assert len([n for n in read if n.startswith("data/")]) == 3
    np.testing.assert_array_equal(tree["optimizer_states"][0]["state"][0]["exp_avg"], np.ones(1000, np.float32))
