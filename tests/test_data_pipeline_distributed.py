"""Two real JAX processes (jax.distributed on CPU, gloo) read disjoint, equal halves of a split.

Slow (two interpreters with JAX and a gloo rendezvous). The same code path and the same
assertions run fast in tests/test_data_pipeline.py::test_process_index_and_count_default_to_jax,
with jax.process_index/process_count patched; what only this test adds is that
jax.distributed's real process index reaches the pipeline (JAX's code, not this project's).
"""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_data_pipeline import make_prepared

REPO = Path(__file__).resolve().parents[1]
WORKER = """
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[1], num_processes=2,
                           process_id=int(sys.argv[2]))
sys.path.insert(0, "tests")
from pathlib import Path
from test_data_pipeline import _cfg, _ids
from gesture_jax.data import pipeline
it = pipeline.make_iterator(_cfg(Path(sys.argv[3])), "train", batch_size=1, seed=5, num_epochs=1)
print(json.dumps({"process": jax.process_index(), "ids": [_ids(b)[0] for b in it]}))
"""


@pytest.mark.slow
def test_two_jax_processes_read_disjoint_halves(tmp_path):
    make_prepared(tmp_path / "d")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, port, str(i), str(tmp_path / "d")], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    a, b = sorted(outs, key=lambda o: o["process"])
    assert (a["process"], b["process"]) == (0, 1)
    assert len(a["ids"]) == len(b["ids"]) == 18 and not set(a["ids"]) & set(b["ids"])
