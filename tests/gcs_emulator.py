"""A local Google Cloud Storage emulator for tests (the `gcp-storage-emulator` package, with
the generation headers TensorStore needs: tests/gcs_emulator_server.py).

:func:`running` starts it in a subprocess on a free port with one in-memory bucket and
returns the environment that points both GCS clients at it: gcsfs (epath's backend for
gs:// files) reads ``STORAGE_EMULATOR_HOST``; TensorStore (Orbax's arrays) reads
``TENSORSTORE_GCS_HTTP_URL`` and takes ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` instead of real
credentials. Subprocesses the test starts inherit the same variables.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


class EmulatorUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(url: str) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GOOGLE_CLOUD_PROJECT": "test",
            # gcsfs otherwise asks GCS's control plane (absent here) whether each bucket is
            # zonal, on every call, and logs a warning each time it cannot
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


@contextlib.contextmanager
def running(bucket: str = "test-bucket", timeout_s: float = 30.0) -> Iterator[dict[str, str]]:
    """Start the emulator, create ``bucket``, set the variables in this process too, and
    yield them; everything is stopped and restored afterwards."""
    import importlib.util
    for mod in ("gcp_storage_emulator", "gcsfs"):   # found, not imported: gcsfs reads env at import
        if importlib.util.find_spec(mod) is None:
            raise EmulatorUnavailable(f"{mod} is not installed (pip install -r requirements-dev.txt)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("gcs_emulator_server.py")), str(port), bucket],
        stdout=open(os.environ.get("GCS_EMULATOR_LOG", os.devnull), "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise EmulatorUnavailable(f"the GCS emulator did not start on port {port} "
                                          f"(exit code {proc.poll()})")
            time.sleep(0.1)
    env = env_for(url)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _forget_filesystems()
    try:
        yield env
    finally:
        proc.kill()
        proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_filesystems()


def _forget_filesystems() -> None:
    """fsspec caches filesystem instances (with their endpoint); a new emulator on a new
    port needs fresh ones."""
    try:
        import gcsfs
        gcsfs.GCSFileSystem.clear_instance_cache()
    except ImportError:
        pass
