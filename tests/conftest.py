"""Shared test fixtures: paths to the real samples in ../shared/data (skipped when absent), the
trained demo run shared by every module that needs one (``demo_run``), and jax's persistent
compilation cache for modules that compile the same programs many times (``compile_cache``)."""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GESTURE_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(rel: str) -> Path:
    """Path of a real sample file, or skip the test with the reason when it is absent."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"real sample {p} is absent (../shared/data is not beside this checkout)")
    return p


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: real-data tests need ../shared/data beside the checkout")
    return SHARED_DATA


# ------------------------------------------------------------------ the trained demo run

FIXTURE_TRAIN_STEPS = 800


def run_module(args, **kw):
    """``python ARGS`` in the repository; an AssertionError with the output's tail when it fails."""
    p = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> dict:
    """{"workdir": trained run, "src": corpus folder with demo_test_*.wav/.bvh}.

    The real pipeline on a small synthetic corpus (data_prep.synthetic -> data_prep.prepare ->
    gesture_jax.train: the demo config with fewer, shorter files and FIXTURE_TRAIN_STEPS training
    steps), trained once per session: tests/test_generate_trained.py, test_streaming.py and
    test_distill.py read it (a test that changes it works on a copy). Set
    GESTURE_JAX_DEMO_RUN=runs/demo/run (a workdir from `make demo`) to use the full demo model."""
    env = os.environ.get("GESTURE_JAX_DEMO_RUN")
    if env:
        wd = Path(env)
        cfg = json.loads((wd / "config.json").read_text())
        return {"workdir": wd, "src": Path(cfg["data"]["root"])}
    from data_prep import synthetic

    root = tmp_path_factory.mktemp("demo")
    src, data, wd = root / "src", root / "data", root / "run"
    synthetic.generate_corpus(src, num_train=6, num_test=2, duration_s=16.0, seed=0)
    ov = [f"--config.data.root={src}", f"--config.data.out={data}"]
    run_module(["-m", "data_prep.prepare", "--config=configs/demo.py", *ov, "--config.data.num_workers=1"])
    run_module(["-m", "gesture_jax.train", "--config=configs/demo.py", *ov, f"--workdir={wd}",
                f"--config.train.num_steps={FIXTURE_TRAIN_STEPS}",
                f"--config.train.checkpoint_every={FIXTURE_TRAIN_STEPS}", "--config.train.eval_every=0"])
    return {"workdir": wd, "src": src}


# ------------------------------------------------------- persistent compilation cache

_CACHE_FLAGS = {"jax_compilation_cache_dir": None,  # set to the folder
                "jax_enable_compilation_cache": True,
                "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": 0}


@contextlib.contextmanager
def persistent_compilation_cache(path: Path):
    """jax's persistent compilation cache in ``path``, in this process and in the python
    processes started meanwhile (through the JAX_* environment variables); restored after.

    A program compiled once (in any of those processes) is loaded from the cache when it is
    compiled again: the same XLA executable, serialized, instead of a fresh compile of the same
    HLO. The code that builds, traces and lowers the program still runs every time; only the
    XLA compile is skipped. Processes of a jax.distributed job read the entries process 0 wrote."""
    import jax
    from jax._src import compilation_cache as cc

    want = dict(_CACHE_FLAGS, jax_compilation_cache_dir=str(path))
    old = {k: getattr(jax.config, k) for k in want}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in want.items():
            mp.setenv(k.upper(), str(v).lower() if isinstance(v, bool) else str(v))
        for k, v in want.items():
            jax.config.update(k, v)
        cc.reset_cache()  # the next compile initializes it with the folder above
        try:
            yield path
        finally:
            for k, v in old.items():
                jax.config.update(k, v)
            cc.reset_cache()


@pytest.fixture(scope="session")
def compile_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax_compilation_cache")


@pytest.fixture(scope="module")
def compile_cache(compile_cache_dir):
    """The persistent compilation cache for one module: ``pytestmark = pytest.mark.usefixtures("compile_cache")``."""
    with persistent_compilation_cache(compile_cache_dir) as p:
        yield p


# ------------------------------------------------------------------ a local GCS bucket

@pytest.fixture(scope="module")
def gcs_bucket():
    """A GCS emulator with the bucket ``gs://test-bucket`` for one test module, the client
    variables set in this process and inherited by the processes it starts
    (tests/gcs_emulator.py); skipped with the reason when the emulator cannot start."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gcs_emulator
    try:
        with gcs_emulator.running("test-bucket") as env:
            yield env
    except gcs_emulator.EmulatorUnavailable as e:
        pytest.skip(f"no GCS emulator: {e}")
