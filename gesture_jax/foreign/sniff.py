"""What kind of file a checkpoint is, from its first bytes, before anything parses it.

A Python pickle (an old ``torch.save`` file), a zip archive (a PyTorch .pt/.pth checkpoint,
TorchScript, a Keras 3 .keras file) or an empty file is refused by the tensor-file readers with
a one-line error naming it: unpickling can run code. Where a format is itself a pickle (PyTorch
zip checkpoints, scikit-learn scalers), safe_pickle.py reads it without executing anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gesture_jax.foreign import ForeignCheckpointError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def sniff(path: str | Path) -> str:
    """'hdf5', 'zip' (.pt / TorchScript / .keras), 'pickle', 'empty' or 'unknown' from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
        if not head:
            return "empty"
        if head == HDF5_SIGNATURE:
            return "hdf5"
        for off in (512, 1024, 2048):   # HDF5 allows a user block before the superblock
            f.seek(off)
            if f.read(8) == HDF5_SIGNATURE:
                return "hdf5"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def refuse(path: str | Path, kind: str, what: str) -> ForeignCheckpointError:
    """The error for a file of ``kind`` (from :func:`sniff`) where ``what`` was expected; any kind
    but zip, pickle and empty reads as "not an HDF5 file" (only the HDF5 reader refuses those)."""
    if kind == "zip":
        why = ("a zip archive (a PyTorch .pt/.pth checkpoint, TorchScript or a Keras 3 .keras file); "
               "only tensors are read here, never pickles or TorchScript")
    elif kind == "pickle":
        why = "a Python pickle (e.g. an old torch.save file); refusing to unpickle it (that can run code)"
    elif kind == "empty":
        why = "an empty file"
    else:
        why = "not an HDF5 file (no HDF5 signature)"
    return ForeignCheckpointError(f"{path}: {why}; expected {what}")


def file_info(path: str | Path) -> dict[str, Any]:
    """{"path", "bytes", "sha256"} of a source file, for a conversion's record."""
    from gesture_jax.training.verify import sha256_file

    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
