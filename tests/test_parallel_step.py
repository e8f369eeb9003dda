"""A sharded train step equals the unsharded one (DESIGN.md pitfall: silently wrong shardings).

The check runs in a subprocess with 8 host CPU devices (the device count is fixed when jax
starts). The tiny reference-block model (attention, conformer conv with BatchNorm, dropout,
fuzzy convs) takes two AdamW steps on the same batches on one device and on each mesh;
losses and every parameter must agree to 1e-5 relative (float32).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = Path(__file__).resolve().parent / "parallel_checks.py"


def run_check(name: str, *args: str, devices: int = 8, timeout: int = 900) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, str(CHECKS), name, *args], capture_output=True, text=True,
                       env=env, timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _assert_equal(res: dict):
    for spec, r in res.items():
        assert r["sharded_leaves"] > 10, f"{spec}: parameters were not actually sharded: {r}"
        assert r["loss_rel"] < 1e-5, f"{spec}: loss differs from the unsharded step: {r}"
        assert r["gnorm_rel"] < 1e-5, f"{spec}: gradient norm differs: {r}"
        assert r["param_rel_max"] < 1e-5, f"{spec}: parameters differ (worst {r['worst_leaf']}): {r}"


def test_sharded_step_equals_unsharded_2x2x2_and_fsdp_with_grad_accum():
    # Every code path of the sharded step: the plain step on the 3-axis mesh, the accumulating
    # one (per-micro-batch resharding in the scan) with FSDP and tensor parallelism.
    _assert_equal(run_check("sharded_equality", "data:2,fsdp:2,tensor:2", "fsdp:4,tensor:2@2"))


@pytest.mark.slow
def test_sharded_step_equals_unsharded_more_meshes():
    # The same code as the fast test above on more mesh shapes.
    _assert_equal(run_check("sharded_equality", "data:8", "fsdp:8", "data:4,tensor:2", "data:2,fsdp:2,tensor:2@2"))
