"""BVH motion files: read any hierarchy/channel layout and write it back.

Why a hand-written parser: the datasets we train on disagree on nearly everything a BVH can
vary (Euler order per joint, 3- or 6-channel joints, every joint with positions in GENEA
2023, CRLF line ends, tabs, scientific notation), and a bad file must fail with the file
and line so a user can fix it. The MOTION block is parsed in one vectorised numpy pass
(the 3.8 MB ZEGGS sample loads in a fraction of a second).

Conventions kept by every module of `gesture_jax.motion`:
  * channel values are stored exactly as in the file: degrees for rotations, file units
    (centimetres in our datasets) for positions, in file column order;
  * a joint's rotation is the product of its rotation channels in file order
    (`Zrotation Yrotation Xrotation` means R = Rz @ Ry @ Rx, intrinsic);
  * a joint's position channels *replace* the matching OFFSET component (this is how
    ZEGGS and GENEA 2023 store their roots; see kinematics.py).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from gesture_jax import storage
from gesture_jax.errors import UserError

__all__ = ["BVHError", "Skeleton", "BVH", "read_bvh", "write_bvh", "parse_bvh_text", "format_bvh"]

VALID_CHANNELS = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")
_CHANNEL_CANON = {c.lower(): c for c in VALID_CHANNELS}


class BVHError(UserError, ValueError):
    """A malformed BVH file; the message names the file and (when known) the line."""

    def __init__(self, path: str | os.PathLike | None, message: str, line: int | None = None):
        where = str(path) if path is not None else "<bvh>"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


@dataclass
class Skeleton:
    """Joint hierarchy of a BVH file.

    names:    [J] joint names in file order (parents always precede children)
    parents:  [J] parent index, -1 for a root
    offsets:  [J,3] float64 rest offsets from the parent (file units)
    channels: per joint, channel names in file order
    end_sites: joint index -> End Site offset [3] (kept so files round-trip)
    """

    names: list[str]
    parents: list[int]
    offsets: np.ndarray
    channels: list[list[str]]
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.float64).reshape(len(self.names), 3)
        self.end_sites = {int(k): np.asarray(v, dtype=np.float64).reshape(3) for k, v in self.end_sites.items()}

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def num_channels(self) -> int:
        return sum(len(c) for c in self.channels)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"joint {name!r} is not in the skeleton") from None

    def channel_starts(self) -> list[int]:
        """Column of each joint's first channel in a frame row."""
        starts, c = [], 0
        for ch in self.channels:
            starts.append(c)
            c += len(ch)
        return starts

    def rotation_order(self, j: int) -> str:
        """Axes of joint j's rotation channels in file order, e.g. 'ZYX' ('' if none)."""
        return "".join(c[0] for c in self.channels[j] if c.endswith("rotation"))

    def position_axes(self, j: int) -> str:
        """Axes of joint j's position channels in file order, e.g. 'XYZ' ('' if none)."""
        return "".join(c[0] for c in self.channels[j] if c.endswith("position"))

    def children(self, j: int) -> list[int]:
        return [k for k, p in enumerate(self.parents) if p == j]

    def copy(self) -> "Skeleton":
        return Skeleton(list(self.names), list(self.parents), self.offsets.copy(),
                        [list(c) for c in self.channels], {k: v.copy() for k, v in self.end_sites.items()})


@dataclass
class BVH:
    """A BVH file in memory: skeleton plus channel values.

    frames: [N, C] float64, columns in file channel order (degrees / file units)
    frame_time: seconds per frame
    """

    skeleton: Skeleton
    frames: np.ndarray
    frame_time: float
    path: str | None = None  # where it was read from (for error messages); not written

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.float64)
        if self.frames.ndim != 2 or self.frames.shape[1] != self.skeleton.num_channels:
            raise ValueError(f"frames must be [N, {self.skeleton.num_channels}], got {self.frames.shape}")
        self.frame_time = float(self.frame_time)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def joint_channels(self, j: int) -> np.ndarray:
        """[N, len(channels[j])] values of joint j."""
        s = self.skeleton.channel_starts()[j]
        return self.frames[:, s:s + len(self.skeleton.channels[j])]


# ------------------------------------------------------------------------------------- reading

class _Tokens:
    """Whitespace tokens of the HIERARCHY part with their 1-based line numbers."""

    def __init__(self, lines: list[str], start: int, stop: int, path):
        self.toks: list[tuple[str, int]] = []
        for i in range(start, stop):
            for t in lines[i].split():
                self.toks.append((t, i + 1))
        self.i = 0
        self.path = path
        self.last_line = stop

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def line(self) -> int:
        return self.toks[self.i][1] if self.i < len(self.toks) else self.last_line

    def next(self, what: str) -> tuple[str, int]:
        if self.i >= len(self.toks):
            raise BVHError(self.path, f"unexpected end of HIERARCHY while reading {what} (truncated file?)",
                           self.last_line)
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, word: str) -> int:
        t, ln = self.next(repr(word))
        if t.upper() != word.upper():
            raise BVHError(self.path, f"expected {word!r}, found {t!r}", ln)
        return ln

    def number(self, what: str) -> float:
        t, ln = self.next(what)
        try:
            v = float(t)
        except ValueError:
            raise BVHError(self.path, f"expected a number for {what}, found {t!r}", ln) from None
        if not math.isfinite(v):
            raise BVHError(self.path, f"non-finite value {t!r} in {what}", ln)
        return v


def _parse_hierarchy(tk: _Tokens) -> Skeleton:
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    end_sites: dict[int, np.ndarray] = {}
    path = tk.path

    def parse_joint(parent: int, name_line: int) -> None:
        # name: every token up to the '{' (a name may contain spaces in some exporters)
        parts = []
        while tk.peek() is not None and tk.peek() != "{":
            t, ln = tk.next("joint name")
            if ln != name_line:
                raise BVHError(path, f"expected '{{' after joint name, found {t!r}", ln)
            parts.append(t)
        if not parts:
            raise BVHError(path, "joint without a name", name_line)
        name = " ".join(parts)
        if name in names:
            raise BVHError(path, f"duplicate joint name {name!r}", name_line)
        tk.expect("{")
        j = len(names)
        names.append(name)
        parents.append(parent)
        tk.expect("OFFSET")
        offsets.append([tk.number(f"OFFSET of {name}") for _ in range(3)])
        chans: list[str] = []
        if (tk.peek() or "").upper() == "CHANNELS":
            tk.next("CHANNELS")
            t, ln = tk.next(f"channel count of {name}")
            try:
                n = int(t)
            except ValueError:
                raise BVHError(path, f"expected a channel count for {name}, found {t!r}", ln) from None
            if not 0 <= n <= 6:
                raise BVHError(path, f"joint {name} has {n} channels (0..6 allowed)", ln)
            for _ in range(n):
                c, ln = tk.next(f"channels of {name}")
                canon = _CHANNEL_CANON.get(c.lower())
                if canon is None:
                    raise BVHError(path, f"unknown channel {c!r} for joint {name} "
                                         f"(expected one of {', '.join(VALID_CHANNELS)})", ln)
                if canon in chans:
                    raise BVHError(path, f"channel {canon} repeated for joint {name}", ln)
                chans.append(canon)
        channels.append(chans)
        while True:
            t = tk.peek()
            if t is None:
                tk.next(f"the body of joint {name}")  # raises "truncated"
            u = t.upper()
            if u == "}":
                tk.next("}")
                return
            if u == "JOINT":
                _, ln = tk.next("JOINT")
                parse_joint(j, ln)
            elif u == "END":
                _, ln = tk.next("End Site")
                tk.expect("Site")
                tk.expect("{")
                tk.expect("OFFSET")
                end_sites[j] = np.array([tk.number(f"End Site offset of {name}") for _ in range(3)])
                tk.expect("}")
            else:
                raise BVHError(path, f"unexpected {t!r} in joint {name} (expected JOINT, End Site or '}}')",
                               tk.line())

    tk.expect("HIERARCHY")
    while tk.peek() is not None:
        t, ln = tk.next("ROOT")
        if t.upper() != "ROOT":
            raise BVHError(path, f"expected ROOT, found {t!r}", ln)
        parse_joint(-1, ln)
    if not names:
        raise BVHError(path, "HIERARCHY holds no joints", tk.last_line)
    return Skeleton(names, parents, np.array(offsets, dtype=np.float64), channels, end_sites)


def _parse_motion(lines: list[str], start: int, skel: Skeleton, path) -> tuple[np.ndarray, float]:
    """Parse 'Frames:', 'Frame Time:' and the frame rows after the MOTION line (index start-1)."""
    n_lines = len(lines)
    i = start
    # skip blank lines
    while i < n_lines and not lines[i].strip():
        i += 1
    if i >= n_lines:
        raise BVHError(path, "empty MOTION section (no 'Frames:' line)", n_lines)
    head = lines[i].strip()
    if not head.lower().startswith("frames:"):
        raise BVHError(path, f"expected 'Frames: N', found {head[:40]!r}", i + 1)
    try:
        n_frames = int(head.split(":", 1)[1])
    except ValueError:
        raise BVHError(path, f"bad frame count {head!r}", i + 1) from None
    i += 1
    while i < n_lines and not lines[i].strip():
        i += 1
    if i >= n_lines:
        raise BVHError(path, "truncated MOTION section (no 'Frame Time:' line)", n_lines)
    ft_line = lines[i].strip()
    if not ft_line.lower().replace(" ", "").startswith("frametime:"):
        raise BVHError(path, f"expected 'Frame Time: T', found {ft_line[:40]!r}", i + 1)
    try:
        frame_time = float(ft_line.split(":", 1)[1])
    except ValueError:
        raise BVHError(path, f"bad frame time {ft_line!r}", i + 1) from None
    if not (math.isfinite(frame_time) and frame_time > 0):
        raise BVHError(path, f"frame time must be a positive number, got {frame_time}", i + 1)
    if n_frames <= 0:
        raise BVHError(path, f"empty MOTION section (Frames: {n_frames})", i)
    i += 1
    C = skel.num_channels
    rows = lines[i:]
    # drop trailing blank lines only (a blank line inside the block is an error below)
    while rows and not rows[-1].strip():
        rows.pop()
    if not rows:
        raise BVHError(path, f"empty MOTION section: 'Frames: {n_frames}' but no frame rows", i)
    split = [r.split() for r in rows]
    counts = np.fromiter((len(s) for s in split), dtype=np.int64, count=len(split))
    bad = np.nonzero(counts != C)[0]
    if bad.size:
        k = int(bad[0])
        if k == len(rows) - 1 and counts[k] < C and len(rows) <= n_frames:
            raise BVHError(path, f"truncated file: the last frame row has {counts[k]} of {C} values "
                                 f"({k} complete frames of {n_frames} declared)", i + k + 1)
        raise BVHError(path, f"frame {k} has {counts[k]} values, expected {C} (one per channel)", i + k + 1)
    if len(rows) < n_frames:
        raise BVHError(path, f"truncated file: 'Frames: {n_frames}' declared but only {len(rows)} "
                             f"frame rows present", i + len(rows))
    if len(rows) > n_frames:
        raise BVHError(path, f"'Frames: {n_frames}' declared but {len(rows)} frame rows present",
                       i + n_frames + 1)
    flat = [t for s in split for t in s]
    try:
        data = np.array(flat, dtype=np.float64).reshape(n_frames, C)
    except ValueError:
        for k, s in enumerate(split):  # slow path only to find the offending line
            for t in s:
                try:
                    float(t)
                except ValueError:
                    raise BVHError(path, f"frame {k}: {t!r} is not a number", i + k + 1) from None
        raise
    finite = np.isfinite(data)
    if not finite.all():
        k, c = map(int, np.argwhere(~finite)[0])
        j = int(np.searchsorted(np.cumsum([len(ch) for ch in skel.channels]), c, side="right"))
        raise BVHError(path, f"frame {k}: non-finite value {data[k, c]} in channel "
                             f"{skel.names[j]}.{skel.channels[j][c - skel.channel_starts()[j]]}", i + k + 1)
    return data, frame_time


def parse_bvh_text(text: str, path: str | os.PathLike | None = None) -> BVH:
    """Parse BVH text (any line ends, tabs, scientific notation)."""
    lines = text.splitlines()
    m = None
    for k, ln in enumerate(lines):
        s = ln.strip()
        if s.upper() == "MOTION":
            m = k
            break
    if m is None:
        if not lines or not any(l.strip() for l in lines):
            raise BVHError(path, "file is empty", 1)
        # parse the hierarchy anyway for a precise message (truncated mid-hierarchy)
        skel = _parse_hierarchy(_Tokens(lines, 0, len(lines), path))
        raise BVHError(path, "no MOTION section (truncated file?)", len(lines))
    skel = _parse_hierarchy(_Tokens(lines, 0, m, path))
    frames, frame_time = _parse_motion(lines, m + 1, skel, path)
    return BVH(skel, frames, frame_time, path=None if path is None else str(path))


def read_bvh(path: str | os.PathLike) -> BVH:
    """Read a BVH file (local or in a bucket, gs://...); raises BVHError naming the file and
    line for malformed input."""
    p = storage.path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise BVHError(path, f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_bvh_text(text, path)


# ------------------------------------------------------------------------------------- writing

def _fmt(v: float, precision: int) -> str:
    s = f"{v:.{precision}f}"
    return "0." + "0" * precision if s.lstrip("-").strip("0.") == "" else s  # no '-0.000000'


def format_bvh(bvh: BVH, precision: int = 6) -> str:
    """BVH text (tabs, LF). `precision` decimals keep a read->write->read error < 1e-6."""
    sk = bvh.skeleton
    out: list[str] = ["HIERARCHY"]
    children = [[] for _ in sk.names]
    roots = []
    for j, p in enumerate(sk.parents):
        (roots if p < 0 else children[p]).append(j)
    # joints must be written in an order whose depth-first traversal reproduces file order
    order: list[int] = []

    def emit(j: int, depth: int) -> None:
        order.append(j)
        ind = "\t" * depth
        kind = "ROOT" if sk.parents[j] < 0 else "JOINT"
        out.append(f"{ind}{kind} {sk.names[j]}")
        out.append(f"{ind}{{")
        o = sk.offsets[j]
        out.append(f"{ind}\tOFFSET {_fmt(o[0], precision)} {_fmt(o[1], precision)} {_fmt(o[2], precision)}")
        if sk.channels[j]:
            out.append(f"{ind}\tCHANNELS {len(sk.channels[j])} {' '.join(sk.channels[j])}")
        for c in children[j]:
            emit(c, depth + 1)
        if j in sk.end_sites:
            e = sk.end_sites[j]
            out.extend([f"{ind}\tEnd Site", f"{ind}\t{{",
                        f"{ind}\t\tOFFSET {_fmt(e[0], precision)} {_fmt(e[1], precision)} {_fmt(e[2], precision)}",
                        f"{ind}\t}}"])
        out.append(f"{ind}}}")

    for r in roots:
        emit(r, 0)
    if order != list(range(sk.num_joints)):
        raise ValueError("skeleton joints are not in depth-first order; cannot write a faithful BVH")
    frames = np.asarray(bvh.frames, dtype=np.float64)
    if not np.isfinite(frames).all():
        bad = int(np.argwhere(~np.isfinite(frames))[0, 0])
        raise ValueError(f"refusing to write a BVH with non-finite values (frame {bad})")
    out += ["MOTION", f"Frames: {frames.shape[0]}", f"Frame Time: {float(bvh.frame_time)!r}"]
    frames = np.where(np.abs(frames) < 0.5 * 10.0 ** -precision, 0.0, frames)  # no '-0.000000'
    row_fmt = " ".join([f"%.{precision}f"] * frames.shape[1])
    out += [row_fmt % tuple(r) for r in frames.tolist()]
    return "\n".join(out) + "\n"


def write_bvh(path: str | os.PathLike, bvh: BVH, precision: int = 6) -> None:
    """Write `bvh` to `path`, local or in a bucket (parent folders are created). Atomic
    (``storage.write_atomic``): a reader never sees part of the file."""
    storage.write_atomic(path, format_bvh(bvh, precision))
