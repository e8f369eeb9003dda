"""Multi-process start-up: one JAX process per host (TPU pod, SLURM node) or per GPU.

``initialize()`` must run before anything touches a JAX device. It connects the processes
when a multi-process run is requested, explicitly or by the environment:

* explicit: ``GESTURE_JAX_COORDINATOR=host:port GESTURE_JAX_NUM_PROCESSES=N
  GESTURE_JAX_PROCESS_ID=i`` (what the local two-process test and plain ``ssh`` launches use);
* SLURM with more than one task, a multi-host TPU slice, or ``GESTURE_JAX_DISTRIBUTED=1``
  (any cluster jax can discover: TPU pods, SLURM, Open MPI): ``jax.distributed.initialize()``
  finds coordinator and ranks itself.

On CPU the cross-process collectives need gloo (JAX's default CPU backend has none), so it
is switched on before initialization.
"""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)
_initialized = False


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def requested_multiprocess() -> bool:
    """True when the environment asks for more than one JAX process."""
    if os.environ.get("GESTURE_JAX_COORDINATOR") or os.environ.get("GESTURE_JAX_DISTRIBUTED") == "1":
        return True
    if (_env_int("SLURM_NTASKS") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return True
    # Multi-host Cloud TPU: the metadata lists several workers.
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID")
    return bool(hosts) and "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, platform: str | None = None) -> None:
    """Connect this process to the others (no-op for a single-process run)."""
    global _initialized
    if _initialized:
        return
    coordinator = coordinator or os.environ.get("GESTURE_JAX_COORDINATOR") or None
    num_processes = num_processes if num_processes is not None else _env_int("GESTURE_JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("GESTURE_JAX_PROCESS_ID")
    if coordinator is None and not requested_multiprocess():
        return
    platform = platform or os.environ.get("JAX_PLATFORMS", "")
    if platform.startswith("cpu") or not platform and _cpu_only():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is not None:
        if num_processes is None or process_id is None:
            raise ValueError("GESTURE_JAX_COORDINATOR is set: also set GESTURE_JAX_NUM_PROCESSES "
                             "and GESTURE_JAX_PROCESS_ID (this process's rank, 0-based)")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()  # SLURM / TPU: discovered from the environment
    _initialized = True
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def _cpu_only() -> bool:
    """Whether this install has no accelerator plugin (decided without initializing a backend)."""
    try:
        import importlib.util
        return not any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu"))
    except (ImportError, ValueError):
        return True


def is_primary() -> bool:
    """Process 0 writes the shared files (config.json, metrics, TensorBoard)."""
    return jax.process_index() == 0
