"""A restricted unpickler: reads pickles written by other projects without running their code.

Persona-Gestor's released files are pickles: Lightning checkpoints whose ``hyper_parameters``
hold configs and ``functools.partial(torch.optim.AdamW, ...)``, and scikit-learn / PyMO scalers
and pipelines saved with pickle or joblib. ``pickle.load`` on such a file imports and calls
whatever the file names (``os.system`` included), so nothing here ever imports or calls a global
the pickle names. Instead every class or function it asks for becomes an :class:`Opaque` record
(name, the arguments it would have been called with, the state it would have received), and only
a short allowlist is rebuilt *by our own code* from plain values: builtin containers,
``collections.OrderedDict``, numpy arrays / dtypes / scalars (from their raw bytes), the bytes
encoding protocol-2 pickles use, joblib's array wrappers, and any handlers a caller adds (e.g.
torch_zip.py's tensor rebuilders).

Two modes: ``placeholder`` turns every other global into an Opaque (Lightning checkpoints: the
report says what was skipped); ``plain`` (scalers, pipelines) accepts only globals from the
modules such files legitimately name (sklearn, pymo, pandas, numpy, ...) and refuses anything
else (``os.system``, ``builtins.eval``, ``functools.partial`` ...) with a
:class:`~gesture_jax.foreign.ForeignCheckpointError` naming the file and the global.

The pure-Python ``pickle._Unpickler`` is subclassed and every opcode that could call, construct,
set attributes or look up a global (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ, BUILD, APPEND(S),
SETITEM(S), ADDITEMS, GLOBAL, STACK_GLOBAL, EXT*) is replaced, so no code path of the base class
reaches an object the pickle chose.

Crafted files cost bounded time and memory: dict keys and set / frozenset items (hashed, so a
tuple DAG built from memo references would cost 2**depth steps) are limited to plain scalars,
numpy scalars, Opaque records, frozensets and small tuples of those (:func:`_check_key`); error
messages and reports format pickle-supplied values with a bounded, ascii-safe repr; joblib-
compressed files are inflated in chunks up to max(2 GiB, 50x the file's size).
"""
from __future__ import annotations

import _compat_pickle
import bz2
import copyreg
import gzip
import io
import lzma
import pickle
import re
import reprlib
import struct
import zlib
from collections import Counter, OrderedDict
from itertools import islice
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Sequence

import numpy as np

from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign.sniff import sniff

__all__ = ["Opaque", "Known", "restricted_load", "load_plain", "ScalerNumbers", "read_scaler",
           "PLAIN_ALLOWED", "MODES"]

MODES = ("placeholder", "plain")

# Globals a scaler / pipeline file may name in mode="plain" (dotted prefixes of module.QualName);
# they become Opaque records, never imported or called.
PLAIN_ALLOWED: tuple[str, ...] = ("sklearn", "pymo", "pandas", "numpy", "joblib.numpy_pickle.NumpyArrayWrapper")


@dataclass(eq=False)
class Opaque:
    """Inert record of an object the pickle asked for but we never built or called."""
    name: str                                     # "module.QualName" the pickle named (class or function)
    args: tuple = ()                              # what it would have been called / constructed with
    kwargs: dict = field(default_factory=dict)    # NEWOBJ_EX / __newobj_ex__ keyword arguments
    state: Any = None                             # what BUILD / __setstate__ would have received
    items: list = field(default_factory=list)     # APPEND(S) onto it (e.g. a list subclass)
    setitems: dict = field(default_factory=dict)  # SETITEM(S) onto it (e.g. an OrderedDict subclass)

    def __call__(self, *args: Any, **kwargs: Any) -> "Opaque":
        """Calling a placeholder records the call in a new placeholder; nothing runs."""
        return Opaque(self.name, tuple(args), dict(kwargs))

    def __repr__(self) -> str:
        # bounded and ascii-safe: names and keys come from the file
        parts = [_show(self.name)]
        if self.args:
            parts.append(f"args={len(self.args)}")
        if self.kwargs:
            parts.append("kwargs=" + ",".join(_key_text(k) for k in islice(self.kwargs, 8)))
        if isinstance(self.state, dict):
            parts.append("state=" + ",".join(_key_text(k) for k in islice(self.state, 8)))
        elif self.state is not None:
            parts.append(f"state={type(self.state).__name__}")
        if self.items:
            parts.append(f"items={len(self.items)}")
        if self.setitems:
            parts.append(f"setitems={len(self.setitems)}")
        return f"Opaque({' '.join(parts)})"


class Known(Opaque):
    """A global on the allowlist: ``fn`` (our own code, given the already-unpickled arguments)
    replaces it when the pickle calls it; ``fn=None`` marks a name that is only ever an argument
    (e.g. ``numpy.ndarray`` for ``_reconstruct``, a torch dtype) and is not reported. Left in the
    tree it reads like any other Opaque."""

    def __init__(self, name: str, fn: Callable[..., Any] | None = None, tag: Any = None):
        super().__init__(name)
        self.fn = fn
        self.tag = tag        # free slot for the owner (e.g. the numpy dtype a torch dtype means)


class _Pending:
    """An object whose value is only known after its BUILD (a numpy array from ``_reconstruct``,
    a numpy dtype, a joblib array wrapper); BUILD replaces it on the stack and in the memo."""

    def build(self, up: "_RestrictedUnpickler", state: Any) -> Any:
        raise NotImplementedError

    def final(self) -> Any:
        """Its value if no BUILD ever came."""
        raise NotImplementedError


class _PicklePayloadError(Exception):
    """Raised inside the unpickler; restricted_load adds the file name."""


# ------------------------------------------------------------------------------ numpy
_DTYPE_STR = re.compile(r"^[<>|=]?[a-zA-Z?]{1,2}\d{0,3}(\[\d*[a-zA-Z]{1,2}\])?$")


def _native(a: np.ndarray) -> np.ndarray:
    """The array in native byte order (values unchanged); multi-byte big-endian data is swapped."""
    if a.dtype.byteorder in ("<", ">") and not a.dtype.isnative:
        return a.astype(a.dtype.newbyteorder("="))
    return a


class _PendingDType(_Pending):
    """``numpy.dtype(obj, align, copy)`` then BUILD (version, endian, subarray, names, fields,
    elsize, alignment, flags[, metadata]): only simple dtypes (no structured / subarray ones)."""

    def __init__(self, base: np.dtype):
        self.base = base

    def build(self, up: "_RestrictedUnpickler", state: Any) -> np.dtype:
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise _PicklePayloadError(f"numpy dtype state is a {type(state).__name__}, not the 8/9-tuple numpy writes")
        version, endian, subarray, names, fields, elsize, _alignment, _flags = state[:8]
        if subarray is not None or names is not None or fields is not None:
            raise _PicklePayloadError(f"structured or subarray numpy dtype ({self.base}) is not supported")
        if endian not in ("<", ">", "|", "="):
            raise _PicklePayloadError(f"numpy dtype byte order {_short(endian)}")
        base = self.base
        if base.type in (np.bytes_, np.str_, np.void) and isinstance(elsize, int) and elsize > 0:
            n = elsize // 4 if base.kind == "U" else elsize
            base = np.dtype(f"{base.kind}{n}")
        if base.kind in "mM" and len(state) == 9 and isinstance(state[8], tuple) and len(state[8]) == 2:
            unit = state[8][1]
            if (isinstance(unit, tuple) and len(unit) == 4 and isinstance(unit[0], (bytes, str))
                    and isinstance(unit[1], int)):
                u = unit[0].decode("ascii") if isinstance(unit[0], bytes) else unit[0]
                if not re.fullmatch(r"[a-zA-Z]{1,2}", u):
                    raise _PicklePayloadError(f"numpy datetime unit {_short(u)}")
                base = np.dtype(f"{base.kind}8[{unit[1] if unit[1] != 1 else ''}{u}]")
        if endian in ("<", ">") and base.itemsize > 1 and base.kind not in "OV":
            base = base.newbyteorder(endian)
        return base

    def final(self) -> np.dtype:
        return self.base


def _as_dtype(d: Any, what: str) -> np.dtype:
    if isinstance(d, np.dtype):
        return d
    if isinstance(d, _PendingDType):
        return d.base
    raise _PicklePayloadError(f"{what}: expected a numpy dtype, found {_describe(d)}")


def _np_dtype(obj: Any, align: Any = False, copy: Any = True) -> _PendingDType:
    if isinstance(obj, Known) and isinstance(obj.tag, np.dtype):
        return _PendingDType(obj.tag)            # e.g. ml_dtypes.bfloat16
    if not isinstance(obj, str) or not _DTYPE_STR.match(obj):
        raise _PicklePayloadError(f"numpy.dtype({_describe(obj)}) is not a simple dtype code")
    try:
        return _PendingDType(np.dtype(obj))
    except TypeError as e:
        raise _PicklePayloadError(f"numpy.dtype({_short(obj)}): {_show(str(e))}") from None


def _as_bytes(data: Any, what: str) -> bytes | bytearray:
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, str):                    # a Python 2 pickle's str, read as latin-1
        return data.encode("latin-1")
    raise _PicklePayloadError(f"{what}: expected raw bytes, found {_describe(data)}")


def _array_from(raw: Any, dtype: np.dtype, shape: tuple, fortran: bool, what: str) -> np.ndarray:
    """An array of ``shape`` rebuilt from ``raw`` (bytes, or a list of objects for dtype O)."""
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise _PicklePayloadError(f"{what}: bad array shape {_short(shape)}")
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype.hasobject:
        if dtype != np.dtype(object) or not isinstance(raw, list) or len(raw) != n:
            raise _PicklePayloadError(f"{what}: an object array needs a list of {n} items")
        flat = np.empty(n, dtype=object)
        for i, v in enumerate(raw):
            flat[i] = v
    else:
        raw = _as_bytes(raw, what)
        if len(raw) != n * dtype.itemsize:
            raise _PicklePayloadError(f"{what}: {len(raw)} bytes for {n} x {dtype} ({n * dtype.itemsize} bytes)")
        flat = np.frombuffer(raw, dtype=dtype, count=n)
        if not isinstance(raw, bytearray):
            flat = flat.copy()
    arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    return _native(arr)


class _PendingArray(_Pending):
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` then BUILD
    (version, shape, dtype, is_fortran, rawdata)."""

    def build(self, up: "_RestrictedUnpickler", state: Any) -> np.ndarray:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _PicklePayloadError(f"numpy array state is a {_describe(state)}, not the tuple numpy writes")
        if len(state) == 5:
            _version, shape, dtype, fortran, raw = state
        else:
            shape, dtype, fortran, raw = state
        return _array_from(raw, _as_dtype(dtype, "numpy array"), shape, bool(fortran), "numpy array")

    def final(self) -> np.ndarray:
        return np.empty((0,), np.uint8)


def _np_reconstruct(subtype: Any, shape: Any = (0,), code: Any = b"b") -> Any:
    if isinstance(subtype, Known) and subtype.name in ("numpy.ndarray", "numpy.core.multiarray.ndarray",
                                                       "numpy._core.multiarray.ndarray"):
        return _PendingArray()
    # an ndarray subclass (matrix, memmap, ...): keep it as a record; BUILD stores its state
    return Opaque(getattr(subtype, "name", repr(subtype)), (shape, code))


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    return _array_from(buf, _as_dtype(dtype, "numpy _frombuffer"), tuple(shape), order == "F", "numpy _frombuffer")


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    dtype = _as_dtype(dtype, "numpy scalar")
    if dtype.hasobject:
        return data
    raw = _as_bytes(data, "numpy scalar")
    if len(raw) != dtype.itemsize:
        raise _PicklePayloadError(f"numpy scalar: {len(raw)} bytes for a {dtype}")
    return np.frombuffer(raw, dtype=dtype, count=1)[0]


class _PendingJoblibArray(_Pending):
    """joblib.dump writes each array as a NumpyArrayWrapper whose BUILD state gives dtype, shape
    and order, followed by the array's raw bytes in the stream (after a padding byte and padding
    when ``numpy_array_alignment_bytes`` is set; a nested pickle for object arrays)."""

    def build(self, up: "_RestrictedUnpickler", state: Any) -> np.ndarray:
        if not isinstance(state, dict):
            raise _PicklePayloadError(f"joblib NumpyArrayWrapper state is a {_describe(state)}")
        dtype = _as_dtype(state.get("dtype"), "joblib array")
        shape, order = state.get("shape"), state.get("order", "C")
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise _PicklePayloadError(f"joblib array: bad shape {_short(shape)}")
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if dtype.hasobject:
            inner = up.nested_load()
            if not isinstance(inner, np.ndarray):
                raise _PicklePayloadError(f"joblib object array: the nested pickle holds {_describe(inner)}")
            return inner
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = up.read_raw(1)[0]
            up.read_raw(pad)
        raw = bytearray(up.read_raw(n * dtype.itemsize))
        return _array_from(raw, dtype, shape, order == "F", "joblib array")

    def final(self) -> Opaque:
        return Opaque("joblib.numpy_pickle.NumpyArrayWrapper")


# ------------------------------------------------------------------------------ builtins
_PLAIN = (str, bytes, int, float, bool, complex, type(None))


def _show(s: Any, limit: int = 200) -> str:
    """A name from the file (a global, a record, a key) fit for a terminal: ascii only, control
    characters escaped, at most ``limit`` characters (then "...")."""
    if not isinstance(s, str):
        return _short(s, limit)
    return ascii(s[:limit])[1:-1] + ("..." if len(s) > limit else "")


def _key_text(k: Any) -> str:
    return _show(k, 40) if isinstance(k, str) else _short(k, 40)


def _describe(v: Any) -> str:
    if isinstance(v, Opaque):
        return f"a {_show(v.name)} object"
    if isinstance(v, np.ndarray):
        return f"a {v.dtype} array of shape {_short(v.shape)}"
    return f"a {type(v).__name__}"


class _BoundedRepr(reprlib.Repr):
    """reprlib with small limits that never calls a pickle-supplied object's full repr: a shared
    sub-tuple DAG or a huge container costs a bounded number of steps (``{x!r:.80}`` builds the
    whole repr first, which for ``t[i+1] = (t[i], t[i])`` takes 2**depth steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = 4
        self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxstring = 60
        self.maxlong = 40
        self.maxother = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:            # str() of a huge int is slow, or refused by Python
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(bytes(x[:self.maxstring])) + ("..." if len(x) > self.maxstring else "")

    repr_bytearray = repr_bytes

    def repr_dict(self, x: dict, level: int) -> str:     # reprlib sorts every key first: not here
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in islice(x.items(), self.maxdict)]
        return "{" + ", ".join(pieces + (["..."] if len(x) > self.maxdict else [])) + "}"

    def repr_set(self, x: Any, level: int) -> str:
        if not x:
            return f"{type(x).__name__}()"
        if level <= 0:
            return "{...}"
        pieces = [self.repr1(v, level - 1) for v in islice(x, self.maxset)]
        inner = ", ".join(pieces + (["..."] if len(x) > self.maxset else []))
        return "{" + inner + "}" if type(x) is set else f"frozenset({{{inner}}})"

    repr_frozenset = repr_set

    def repr_instance(self, x: Any, level: int) -> str:
        if isinstance(x, (float, complex, bool, type(None), np.dtype)) or (
                isinstance(x, np.generic) and x.dtype.kind not in "OV"):
            r = repr(x)
        elif isinstance(x, Opaque):
            r = Opaque.__repr__(x)
        else:
            return f"<{_describe(x)[2:]}>"
        return r if len(r) <= self.maxother else r[:self.maxother] + "..."


_BOUNDED = _BoundedRepr()


def _short(v: Any, limit: int = 80) -> str:
    """A bounded, ascii-safe repr of a pickle-supplied value for an error message."""
    try:
        r = _BOUNDED.repr(v)
    except Exception:                       # noqa: BLE001 - a description is enough
        r = f"<{_describe(v)[2:]}>"
    r = ascii(r)[1:-1] if not r.isascii() or not r.isprintable() else r
    return r if len(r) <= limit else r[:limit] + "..."


# Dict keys, set and frozenset items are hashed (and compared) as they are inserted; a tuple DAG
# built with memo references (t[i+1] = (t[i], t[i])) hashes in 2**depth steps, so only values
# whose hash costs a bounded amount are accepted: plain scalars, numpy scalars and dtypes,
# Opaque records (hashed by identity), frozensets (their items were checked when they were built
# here, and a frozenset caches its hash) and tuples of those nested at most _KEY_MAX_DEPTH deep with
# at most _KEY_MAX_VALUES values in all (a shared sub-tuple counted each time it appears).
_KEY_MAX_DEPTH = 8
_KEY_MAX_VALUES = 4096


def _check_key(k: Any, where: str) -> None:
    t = type(k)
    if t is str or t is int:
        return
    budget = _KEY_MAX_VALUES
    todo = [(k, 0)]
    while todo:
        o, depth = todo.pop()
        t = type(o)
        if t in _PLAIN or t is frozenset or isinstance(o, (Opaque, np.dtype)) or (
                isinstance(o, np.generic) and o.dtype.kind not in "OV"):
            continue
        if t is tuple:
            budget -= len(o)
            if depth >= _KEY_MAX_DEPTH or budget < 0:
                raise _PicklePayloadError(f"{where}: a tuple nested more than {_KEY_MAX_DEPTH} deep or holding more "
                                          f"than {_KEY_MAX_VALUES} values in all is not accepted (hashing it could "
                                          f"take unbounded time)")
            todo.extend((v, depth + 1) for v in o)
            continue
        raise _PicklePayloadError(f"{where}: {_describe(o)} is not accepted (only str, bytes, numbers, None, "
                                  f"numpy scalars, frozensets and small tuples of those)")


def _check_keys(items: Any, where: str) -> None:
    for k in items:
        _check_key(k, where)


def _plain_args(name: str, args: tuple, kinds: tuple) -> None:
    for a in args:
        if not isinstance(a, kinds):
            raise _PicklePayloadError(f"{name}() with {_describe(a)} argument is not rebuilt")


def _seq(name: str, args: tuple) -> list:
    if len(args) > 1:
        raise _PicklePayloadError(f"{name}() with {len(args)} arguments")
    if not args:
        return []
    a = args[0]
    if isinstance(a, (list, tuple, set, frozenset)):
        return list(a)
    if isinstance(a, (dict, OrderedDict)):
        return list(a)
    raise _PicklePayloadError(f"{name}() of {_describe(a)} is not rebuilt")


def _b_set(*args: Any) -> set:
    items = _seq("set", args)
    _check_keys(items, "a set item")
    return set(items)


def _b_frozenset(*args: Any) -> frozenset:
    items = _seq("frozenset", args)
    _check_keys(items, "a frozenset item")
    return frozenset(items)


def _b_list(*args: Any) -> list:
    return _seq("list", args)


def _b_tuple(*args: Any) -> tuple:
    return tuple(_seq("tuple", args))


def _pairs(name: str, args: tuple, kwargs: dict) -> list:
    if len(args) > 1:
        raise _PicklePayloadError(f"{name}() with {len(args)} arguments")
    out: list = []
    if args:
        a = args[0]
        if isinstance(a, dict):
            out = list(a.items())
        elif isinstance(a, (list, tuple)):
            for p in a:
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    raise _PicklePayloadError(f"{name}() of a sequence holding {_describe(p)}, not (key, value) pairs")
                out.append((p[0], p[1]))
        else:
            raise _PicklePayloadError(f"{name}() of {_describe(a)} is not rebuilt")
    out.extend(kwargs.items())
    _check_keys((k for k, _ in out), f"a {name}() key")
    return out


def _b_dict(*args: Any, **kwargs: Any) -> dict:
    return dict(_pairs("dict", args, kwargs))


def _c_ordered_dict(*args: Any, **kwargs: Any) -> OrderedDict:
    return OrderedDict(_pairs("collections.OrderedDict", args, kwargs))


def _b_complex(*args: Any) -> complex:
    _plain_args("complex", args, (int, float))
    return complex(*args)


def _b_int(*args: Any) -> int:
    _plain_args("int", args, (int, float, str, bytes) if len(args) == 1 else (str, bytes, int))
    return int(*args)


def _b_float(*args: Any) -> float:
    _plain_args("float", args, (int, float, str))
    return float(*args)


def _b_str(*args: Any) -> str:
    _plain_args("str", args, (str,))
    return str(*args)


def _b_bool(*args: Any) -> bool:
    _plain_args("bool", args, (int, bool))
    return bool(*args)


_TEXT_CODECS = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "ascii", "utf-8", "utf8"}


def _codecs_encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, 'latin1')``: a pure encode."""
    if not isinstance(obj, str) or not isinstance(encoding, str) or encoding.lower() not in _TEXT_CODECS:
        raise _PicklePayloadError(f"_codecs.encode({_describe(obj)}, {_short(encoding)}) is not rebuilt")
    return obj.encode(encoding, "strict")


def _b_bytes(*args: Any) -> bytes:
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    if len(args) == 1 and isinstance(args[0], list) and all(isinstance(i, int) and 0 <= i < 256 for i in args[0]):
        return bytes(args[0])
    if len(args) in (2, 3) and isinstance(args[0], str):
        return _codecs_encode(*args)
    raise _PicklePayloadError(f"bytes({', '.join(_describe(a) for a in args)}) is not rebuilt")


def _b_bytearray(*args: Any) -> bytearray:
    return bytearray(_b_bytes(*args))


def _b_slice(*args: Any) -> slice:
    _plain_args("slice", args, (int, type(None)))
    return slice(*args)


def _b_range(*args: Any) -> range:
    _plain_args("range", args, (int,))
    return range(*args)


# --------------------------------------------------------------------------- the unpickler
def _builtin_table(up: "_RestrictedUnpickler") -> dict[str, Callable[..., Any] | None]:
    """name -> our replacement (None: a marker that is only ever an argument)."""
    t: dict[str, Callable[..., Any] | None] = {
        "builtins.set": _b_set, "builtins.frozenset": _b_frozenset, "builtins.list": _b_list,
        "builtins.tuple": _b_tuple, "builtins.dict": _b_dict, "builtins.complex": _b_complex,
        "builtins.int": _b_int, "builtins.float": _b_float, "builtins.str": _b_str, "builtins.bool": _b_bool,
        "builtins.bytes": _b_bytes, "builtins.bytearray": _b_bytearray, "builtins.slice": _b_slice,
        "builtins.range": _b_range, "builtins.object": None,
        "collections.OrderedDict": _c_ordered_dict, "_codecs.encode": _codecs_encode,
        "copyreg._reconstructor": up._reconstructor, "copyreg.__newobj__": up._newobj_fn,
        "copyreg.__newobj_ex__": up._newobj_ex_fn,
        "joblib.numpy_pickle.NumpyArrayWrapper": lambda *a, **k: _PendingJoblibArray(),
    }
    for core in ("numpy.core", "numpy._core"):
        t[f"{core}.multiarray._reconstruct"] = _np_reconstruct
        t[f"{core}.multiarray.scalar"] = _np_scalar
        t[f"{core}.numeric._frombuffer"] = _np_frombuffer
        t[f"{core}.multiarray.ndarray"] = None
    t["numpy.ndarray"] = None
    t["numpy.dtype"] = _np_dtype
    return t


def _ml_dtypes_markers() -> dict[str, Known]:
    try:
        import ml_dtypes
    except ImportError:   # pragma: no cover - ml_dtypes ships with jax
        return {}
    out = {}
    for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3b11fnuz"):
        if hasattr(ml_dtypes, n):
            out[f"ml_dtypes.{n}"] = Known(f"ml_dtypes.{n}", None, np.dtype(getattr(ml_dtypes, n)))
    return out


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[misc,name-defined]
    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: BinaryIO, *, mode: str, persistent_load: Callable[[Any], Any] | None,
                 handlers: Mapping[str, Callable[..., Any] | None] | None, extra_allowed: Sequence[str],
                 counts: Counter | None = None, referenced: dict | None = None):
        super().__init__(file, encoding="latin1")
        self._file = file
        self.mode = mode
        self._persistent = persistent_load
        self._extra_allowed = tuple(extra_allowed)
        self._handlers = dict(handlers or {})
        self._table = _builtin_table(self)
        self._known: dict[str, Known] = _ml_dtypes_markers()
        self.counts: Counter = counts if counts is not None else Counter()   # Opaque instances per name
        self.referenced: dict[str, Opaque] = referenced if referenced is not None else {}  # name -> the global
        self.pending_keys: dict[int, list[int]] = {}
        self.pending_leaked = False
        self.pending_count = 0
        self.pending_built = 0

    # ------------------------------------------------------------ globals
    def find_class(self, module: str, name: str) -> Opaque:  # noqa: D401 - pickle's hook
        if self.proto < 3 and self.fix_imports:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in self._known:
            return self._known[full]
        if full in self._handlers:
            k = Known(full, self._handlers[full])
        elif full in self._table:
            k = Known(full, self._table[full])
        else:
            if self.mode == "plain" and not any(full == p or full.startswith(p + ".")
                                                for p in PLAIN_ALLOWED + self._extra_allowed):
                raise _PicklePayloadError(f"refusing global {_show(full)}: only {', '.join(PLAIN_ALLOWED)} classes, "
                                          f"builtin containers and numpy arrays may appear in this file")
            k = self.referenced.get(full) or Opaque(full)
            self.referenced[full] = k
            return k
        self._known[full] = k
        return k

    def get_extension(self, code: int) -> None:
        # the base class caches find_class results in pickle's module-wide table: bypass it
        key = copyreg._inverted_registry.get(code)
        if not key:
            raise _PicklePayloadError(f"unregistered pickle extension code {code}")
        self.append(self.find_class(*key))

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise _PicklePayloadError("the pickle refers to external (persistent) objects; this file kind has none")
        return self._persistent(pid)

    # ------------------------------------------------------------ calls
    def call(self, func: Any, args: Any, kwargs: Any = None, how: str = "called") -> Any:
        """What REDUCE / NEWOBJ / INST / OBJ produce: our own code for an allowlisted global,
        a new Opaque recording the call for any other; nothing the pickle chose runs."""
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(args, tuple):
            if isinstance(args, list):
                args = tuple(args)
            else:
                raise _PicklePayloadError(f"arguments of a {how} object are {_describe(args)}, not a tuple")
        if not isinstance(kwargs, dict):
            raise _PicklePayloadError(f"keyword arguments are {_describe(kwargs)}, not a dict")
        if isinstance(func, Known) and func.fn is not None:
            try:
                return func.fn(*args, **kwargs)
            except (ForeignCheckpointError, _PicklePayloadError):
                raise
            except (TypeError, ValueError, OverflowError, KeyError, IndexError) as e:
                raise _PicklePayloadError(f"{_show(func.name)} {how} with unexpected arguments ({_show(str(e))})") from None
        if isinstance(func, Opaque):
            self.counts[func.name] += 1
            return Opaque(func.name, args, dict(kwargs))
        raise _PicklePayloadError(f"the pickle {how} {_describe(func)}, which is no class or function it named")

    def _reconstructor(self, cls: Any, base: Any, state: Any = None) -> Any:
        # copyreg._reconstructor(cls, base, state): protocol 0/1 objects; base.__new__ never runs
        return self.call(cls, () if state is None else (state,), None, "reconstructed")

    def _newobj_fn(self, cls: Any, *args: Any) -> Any:
        return self.call(cls, args, None, "constructed")

    def _newobj_ex_fn(self, cls: Any, args: Any = (), kwargs: Any = None) -> Any:
        return self.call(cls, args, kwargs, "constructed")

    def _track(self, obj: Any) -> Any:
        if isinstance(obj, _Pending):
            self.pending_count += 1
        return obj

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._track(self.call(self.stack[-1], args))
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._track(self.call(cls, args, None, "constructed")))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._track(self.call(cls, args, kwargs, "constructed")))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: list) -> None:
        self.append(self._track(self.call(klass, tuple(args), None, "instantiated")))

    # ------------------------------------------------------------ memo bookkeeping for _Pending
    def _note_put(self, key: int) -> None:
        v = self.memo.get(key)
        if isinstance(v, _Pending):
            self.pending_keys.setdefault(id(v), []).append(key)

    def _memo_put(self, i: int) -> None:
        if i < 0:
            raise _PicklePayloadError("negative memo index")
        self.memo[i] = self.stack[-1]
        self._note_put(i)

    def load_put_(self) -> None:
        self._memo_put(int(self.readline()[:-1]))
    dispatch[pickle.PUT[0]] = load_put_

    def load_binput_(self) -> None:
        self._memo_put(self.read(1)[0])
    dispatch[pickle.BINPUT[0]] = load_binput_

    def load_long_binput_(self) -> None:
        self._memo_put(struct.unpack("<I", self.read(4))[0])
    dispatch[pickle.LONG_BINPUT[0]] = load_long_binput_

    def load_memoize_(self) -> None:
        self._memo_put(len(self.memo))
    dispatch[pickle.MEMOIZE[0]] = load_memoize_

    def _got(self) -> None:
        if isinstance(self.stack[-1], _Pending):
            self.pending_leaked = True   # referenced before its BUILD: fixed up at the end

    def load_get_(self) -> None:
        super().load_get()
        self._got()
    dispatch[pickle.GET[0]] = load_get_

    def load_binget_(self) -> None:
        super().load_binget()
        self._got()
    dispatch[pickle.BINGET[0]] = load_binget_

    def load_long_binget_(self) -> None:
        super().load_long_binget()
        self._got()
    dispatch[pickle.LONG_BINGET[0]] = load_long_binget_

    def load_dup_(self) -> None:
        super().load_dup()
        self._got()
    dispatch[pickle.DUP[0]] = load_dup_

    # ------------------------------------------------------------ state and items
    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, _Pending):
            value = inst.build(self, state)
            inst._value = value           # type: ignore[attr-defined]
            self.pending_built += 1
            self.stack[-1] = value
            for k in self.pending_keys.pop(id(inst), []):
                if self.memo.get(k) is inst:
                    self.memo[k] = value
            return
        if isinstance(inst, Opaque):
            if inst.state is None:
                inst.state = state
            elif isinstance(inst.state, dict) and isinstance(state, dict):
                inst.state.update(state)
            else:
                inst.state = (inst.state, state)
            return
        if isinstance(inst, OrderedDict) and isinstance(state, dict):
            # torch's state_dict OrderedDict carries its modules' versions in ``_metadata``; no
            # other attribute is set (an instance attribute could shadow a method)
            if "_metadata" in state:
                inst._metadata = state["_metadata"]      # type: ignore[attr-defined]
            return
        raise _PicklePayloadError(f"the pickle sets the state of {_describe(inst)}, which has none")
    dispatch[pickle.BUILD[0]] = load_build

    def load_append(self) -> None:
        value = self.stack.pop()
        self._extend(self.stack[-1], [value])
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._extend(self.stack[-1], items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def _extend(self, target: Any, items: list) -> None:
        if type(target) is list:
            target.extend(items)
        elif isinstance(target, Opaque):
            target.items.extend(items)
        else:
            raise _PicklePayloadError(f"the pickle appends to {_describe(target)}")

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._setitems(self.stack[-1], [key, value])
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._setitems(self.stack[-1], items)
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def _setitems(self, target: Any, items: list) -> None:
        if type(target) in (dict, OrderedDict):
            d = target
        elif isinstance(target, Opaque):
            d = target.setitems
        else:
            raise _PicklePayloadError(f"the pickle sets items of {_describe(target)}")
        for i in range(0, len(items), 2):
            _check_key(items[i], "a dict key")
            d[items[i]] = items[i + 1]

    def load_dict(self) -> None:
        items = self.pop_mark()
        d: dict = {}
        for i in range(0, len(items), 2):
            _check_key(items[i], "a dict key")
            d[items[i]] = items[i + 1]
        self.append(d)
    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise _PicklePayloadError(f"the pickle adds set items to {_describe(target)}")
        _check_keys(items, "a set item")
        target.update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        _check_keys(items, "a frozenset item")
        self.append(frozenset(items))
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    # ------------------------------------------------------------ raw reads (joblib)
    def read_raw(self, n: int) -> bytes:
        data = self.read(n) if n else b""
        if len(data) != n:
            raise _PicklePayloadError(f"file ends inside array data ({len(data)} of {n} bytes)")
        return data

    def nested_load(self) -> Any:
        up = _RestrictedUnpickler(self._file, mode=self.mode, persistent_load=None, handlers=self._handlers,
                                  extra_allowed=self._extra_allowed, counts=self.counts, referenced=self.referenced)
        up._known = self._known
        return up.load_all()

    def load_all(self) -> Any:
        obj = self.load()
        if self.pending_leaked or self.pending_count != self.pending_built:
            obj = _resolve_pending(obj)
        return obj


def _resolve_pending(root: Any) -> Any:
    """Replace every _Pending still in the tree by its value (rare: a pickle that referenced
    one before its BUILD, or never built it)."""
    seen: dict[int, Any] = {}

    def fix(o: Any) -> Any:
        if isinstance(o, _Pending):
            return o._value if hasattr(o, "_value") else o.final()
        if isinstance(o, (str, bytes, int, float, complex, type(None), np.ndarray, np.generic)):
            return o
        i = id(o)
        if i in seen:
            return seen[i]
        if isinstance(o, tuple):
            seen[i] = o
            new = tuple(fix(v) for v in o)
            out = new if any(a is not b for a, b in zip(new, o)) else o
            seen[i] = out
            return out
        seen[i] = o
        if isinstance(o, list):
            for j, v in enumerate(o):
                o[j] = fix(v)
        elif isinstance(o, dict):
            for k in list(o):
                o[k] = fix(o[k])
        elif isinstance(o, (set, frozenset)):
            new_items = [fix(v) for v in o]
            if isinstance(o, set):
                o.clear()
                o.update(new_items)
        elif isinstance(o, Opaque):
            o.args = tuple(fix(v) for v in o.args)
            o.state = fix(o.state)
            for j, v in enumerate(o.items):
                o.items[j] = fix(v)
            for k in list(o.kwargs):
                o.kwargs[k] = fix(o.kwargs[k])
            for k in list(o.setitems):
                o.setitems[k] = fix(o.setitems[k])
        return o

    return fix(root)


def _report(up: _RestrictedUnpickler) -> list[str]:
    # the names come from the file and end up on a terminal: ascii only, control characters escaped
    lines = [f"{_show(name)} x{n}" for name, n in sorted(up.counts.items())]
    lines += [f"{_show(name)} (referenced, never called)" for name in sorted(up.referenced) if name not in up.counts]
    return lines


def restricted_load(file: bytes | bytearray | BinaryIO, *, mode: str, source: str,
                    persistent_load: Callable[[Any], Any] | None = None,
                    handlers: Mapping[str, Callable[..., Any] | None] | None = None,
                    extra_allowed: Sequence[str] = ()) -> tuple[Any, list[str]]:
    """(object tree, report) of a pickle, executing nothing it names.

    The tree holds only builtin values and containers (dict, list, tuple, set, frozenset, str,
    bytes, int, float, bool, None, complex, slice, range), ``collections.OrderedDict``, numpy arrays
    and scalars (rebuilt from their raw bytes by our code), :class:`Opaque` records and whatever
    ``handlers`` return. ``report`` has one line per class/function turned into an Opaque:
    ``"name xN"`` (N objects made from it) or ``"name (referenced, never called)"``.

    ``mode="placeholder"``: every global outside the allowlist becomes an Opaque. ``mode="plain"``:
    only globals under :data:`PLAIN_ALLOWED` (plus ``extra_allowed`` dotted prefixes, e.g. a
    vendored pymo package) may appear, as Opaque records; any other raises. ``handlers`` maps
    "module.QualName" to our own function replacing that global when the pickle calls it (None:
    an inert marker, not reported), in both modes. ``persistent_load`` resolves persistent ids
    (torch storages). Any refusal, truncation or corruption raises ForeignCheckpointError naming
    ``source``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    f = io.BytesIO(file) if isinstance(file, (bytes, bytearray, memoryview)) else file
    up = _RestrictedUnpickler(f, mode=mode, persistent_load=persistent_load, handlers=handlers,
                              extra_allowed=extra_allowed)
    try:
        obj = up.load_all()
    except ForeignCheckpointError:
        raise
    except _PicklePayloadError as e:
        raise ForeignCheckpointError(f"{source}: {e}") from None
    except EOFError:
        raise ForeignCheckpointError(f"{source}: the pickle ends early (truncated file)") from None
    except (pickle.UnpicklingError, ValueError, TypeError, LookupError, AttributeError, struct.error,
            UnicodeError, ArithmeticError, RuntimeError, MemoryError, BufferError, OSError) as e:
        # RuntimeError covers RecursionError and NotImplementedError (e.g. from a persistent_load
        # hook); MemoryError a size the file claims
        raise ForeignCheckpointError(f"{source}: not a readable pickle, truncated or corrupt "
                                     f"({type(e).__name__}: {_show(str(e))})") from None
    return obj, _report(up)


# ------------------------------------------------------------------------------ plain files
_COMPRESSED = (  # joblib.dump(..., compress=...) formats, decompressed with the standard library
    (b"\x1f\x8b", "gzip", lambda b: gzip.GzipFile(fileobj=b)),
    (b"BZh", "bz2", bz2.BZ2File),
    (b"\xfd7zXZ\x00", "xz", lzma.LZMAFile),
    (b"]\x00\x00", "lzma", lzma.LZMAFile),
)

# A compressed file inflates to at most max(_DECOMPRESS_MIN_CAP, _DECOMPRESS_RATIO x its size):
# real joblib-compressed scalers and pipelines are far below both (they hold a few arrays of
# features; float data compresses 1-3x), while a crafted gzip/bz2/xz stream can claim terabytes
# (gzip reaches ~1000x, bz2 and xz far more). Decompression is streamed, so a file over the cap
# costs the cap in RAM, then is refused.
_DECOMPRESS_MIN_CAP = 2 << 30
_DECOMPRESS_RATIO = 50
_CHUNK = 1 << 20


def _inflate(path: Path, name: str, data: bytes, opener: Callable[[BinaryIO], Any] | None) -> bytes:
    cap = max(_DECOMPRESS_MIN_CAP, _DECOMPRESS_RATIO * len(data))
    parts: list[bytes] = []
    total = 0

    def add(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        if total > cap:
            raise ForeignCheckpointError(
                f"{path}: {name}-compressed data inflating to more than {cap} bytes (the limit: "
                f"{_DECOMPRESS_RATIO}x the file's size or {_DECOMPRESS_MIN_CAP >> 20} MiB, whichever is larger); "
                f"refusing it as a decompression bomb")
        parts.append(chunk)

    if opener is None:                      # zlib: a bare stream, no file wrapper in the stdlib
        d = zlib.decompressobj()
        buf = data
        while not d.eof:
            chunk = d.decompress(buf, _CHUNK)
            add(chunk)
            buf = d.unconsumed_tail
            if not buf and not chunk:
                raise zlib.error("incomplete or truncated stream")
    else:
        with opener(io.BytesIO(data)) as r:
            while chunk := r.read(_CHUNK):
                add(chunk)
    return b"".join(parts)


def _plain_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ForeignCheckpointError(f"{path}: no such file; expected a pickled scikit-learn / PyMO object")
    kind = sniff(path)
    data = path.read_bytes()
    if kind == "pickle":
        return data
    if kind == "empty":
        raise ForeignCheckpointError(f"{path}: an empty file; expected a pickled scikit-learn / PyMO object")
    if kind == "zip":
        raise ForeignCheckpointError(f"{path}: a zip archive (e.g. a torch.save checkpoint), not a pickled "
                                     f"scikit-learn / PyMO object; torch files are read by foreign.torch_zip")
    comp: list[tuple[str, Any]] = [(name, fn) for magic, name, fn in _COMPRESSED if data.startswith(magic)]
    if not comp and data[:1] == b"\x78" and len(data) > 1 and (data[0] * 256 + data[1]) % 31 == 0:
        comp = [("zlib", None)]
    if comp:
        name, opener = comp[0]
        try:
            out = _inflate(path, name, data, opener)
        except ForeignCheckpointError:
            raise
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, MemoryError) as e:
            raise ForeignCheckpointError(f"{path}: {name}-compressed (joblib compress=) but truncated or corrupt "
                                         f"({e})") from None
        if out[:1] == b"\x80" and len(out) > 1 and 2 <= out[1] <= 5:
            return out
        raise ForeignCheckpointError(f"{path}: {name}-compressed data that is not a pickle")
    raise ForeignCheckpointError(f"{path}: not a pickle (protocol 2-5; no pickle header), nor a joblib "
                                 f"compressed pickle; expected a pickled scikit-learn / PyMO object")


def load_plain(path: str | Path, *, extra_allowed: Sequence[str] = ()) -> Any:
    """The object tree of a pickled scaler / pipeline file (pickle.dump or joblib.dump, also
    joblib's zlib/gzip/bz2/lzma/xz compression), in mode="plain": arrays and plain values only,
    every class an Opaque record; a file naming any other global is refused."""
    path = Path(path)
    return restricted_load(_plain_bytes(path), mode="plain", source=str(path), extra_allowed=extra_allowed)[0]


# ------------------------------------------------------------------------------ scalers
@dataclass
class ScalerNumbers:
    """The numbers of a fitted scikit-learn StandardScaler: x_scaled = (x - mean) / scale."""
    kind: str                  # "StandardScaler"
    mean: np.ndarray | None    # mean_ (None when with_mean=False)
    scale: np.ndarray | None   # scale_ (None when with_std=False)
    var: np.ndarray | None     # var_
    n_features: int


def _is(o: Any, cls: str) -> bool:
    return isinstance(o, Opaque) and o.name.startswith("sklearn.") and o.name.rsplit(".", 1)[-1] == cls


def _array_or_none(state: dict, key: str, path: Path) -> np.ndarray | None:
    v = state.get(key)
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, (int, float, np.generic)):
        return np.asarray(v)
    raise ForeignCheckpointError(f"{path}: StandardScaler.{key} is {_describe(v)}, not an array")


def read_scaler(path: str | Path, *, extra_allowed: Sequence[str] = ()) -> ScalerNumbers:
    """mean_ / scale_ / var_ of a pickled (pickle or joblib) scikit-learn StandardScaler, or of a
    Pipeline whose only real step is one. Anything else is an error naming what the file holds."""
    path = Path(path)
    obj = load_plain(path, extra_allowed=extra_allowed)
    found = _describe(obj)
    if _is(obj, "Pipeline") and isinstance(obj.state, dict) and isinstance(obj.state.get("steps"), list):
        steps = [s for s in obj.state["steps"] if isinstance(s, tuple) and len(s) == 2]
        real = [s for s in steps if s[1] is not None and not (isinstance(s[1], str) and s[1] == "passthrough")]
        if len(real) == 1:
            obj = real[0][1]
            found = f"a Pipeline whose only step is {_describe(obj)}"
        else:
            found = "a Pipeline with steps " + ", ".join(f"{_key_text(n)}={_describe(e)}" for n, e in steps[:8])
    if not _is(obj, "StandardScaler"):
        if isinstance(obj, Opaque) and obj.name.endswith("Scaler"):
            found = f"a {_show(obj.name)} (only StandardScaler is supported)"
        raise ForeignCheckpointError(f"{path}: holds {found}; expected a fitted scikit-learn StandardScaler")
    state = obj.state if isinstance(obj.state, dict) else {}
    if "scale_" not in state and "mean_" not in state and "n_features_in_" not in state:
        raise ForeignCheckpointError(f"{path}: the StandardScaler was never fitted (no mean_, scale_ in it)")
    mean = _array_or_none(state, "mean_", path)
    scale = _array_or_none(state, "scale_", path)
    var = _array_or_none(state, "var_", path)
    if state.get("with_mean") is False:
        mean = None
    n = state.get("n_features_in_")
    if not isinstance(n, (int, np.integer)):
        ref = next((a for a in (mean, scale, var) if a is not None), None)
        if ref is None:
            raise ForeignCheckpointError(f"{path}: StandardScaler without n_features_in_, mean_ or scale_")
        n = ref.shape[-1]
    for key, a in (("mean_", mean), ("scale_", scale), ("var_", var)):
        if a is not None and a.shape != (int(n),):
            raise ForeignCheckpointError(f"{path}: StandardScaler.{key} has shape {a.shape}, expected ({int(n)},)")
    return ScalerNumbers("StandardScaler", mean, scale, var, int(n))
