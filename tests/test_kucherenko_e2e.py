"""Kucherenko 2019 from the command line, as a user runs it: synthetic BVH + WAV -> positions +
MFCC shards -> the autoencoder stage -> the speech stage (killed with SIGKILL and resumed to the
same loss curve) -> generate BVH + MP4 for unseen audio; and the one-line errors of a wrong
dataset. configs/kucherenko_demo.py, shrunk (fewer, shorter files; 10-frame contexts, width 32,
a few dozen steps) so the module takes about a minute on 2 cores.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

CONFIG = "--config=configs/kucherenko_demo.py"
SMALL = ["--config.kucherenko.context=10", "--config.kucherenko.width=32",
         "--config.stages.speech.contexts_per_step=256", "--config.data.window_s=4.0",
         "--config.data.stride_s=1.0", "--config.data.test_stride_s=4.0"]
AE_STEPS, SPEECH_STEPS, EVERY = 30, 24, 4


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONUNBUFFERED="1")


def _cmd(module, *args):
    return [sys.executable, "-m", module, *args]


def _run(args, ok=True, **kw):
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=_env(), **kw)
    if ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    from data_prep import synthetic

    root = tmp_path_factory.mktemp("ka")
    src, data = root / "src", root / "data"
    synthetic.generate_corpus(src, num_train=5, num_test=1, duration_s=12.0, seed=0)
    ov = [f"--config.data.root={src}", f"--config.data.out={data}", *SMALL]
    _run(_cmd("data_prep.prepare", CONFIG, *ov, "--config.data.num_workers=1"))
    return {"root": root, "src": src, "data": data, "ov": ov}


def _train(prepared, wd, stage, steps, *extra):
    return _cmd("gesture_jax.train", CONFIG, *prepared["ov"], f"--workdir={wd}", f"--config.train.stage={stage}",
                f"--config.stages.{stage}.num_steps={steps}", f"--config.train.checkpoint_every={EVERY}",
                "--config.train.log_every=1", "--config.train.keep_checkpoints=20", *extra)


def _losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            out[int(r["step"])] = r["loss"]
    return out


def test_prepared_positions_and_mfcc(prepared):
    m = json.loads((prepared["data"] / "manifest.json").read_text())
    assert m["motion"]["representation"] == "positions"
    assert m["audio"]["feature"] == "mfcc" and m["audio"]["dim"] == 26
    names = m["motion"]["feature_names"]
    assert any(n.endswith("_px") for n in names) and any(n.endswith("_vx") for n in names)


def test_both_stages_from_the_command_line_resume_after_sigkill_and_generate(prepared, tmp_path):
    wd, ref = tmp_path / "run", tmp_path / "ref"
    # stage 1; a later invocation with more steps resumes it
    _run(_train(prepared, wd, "autoencoder", AE_STEPS))
    more = _run(_train(prepared, wd, "autoencoder", AE_STEPS + EVERY))
    assert re.search(rf"^resumed at step {AE_STEPS} from ", more.stdout, re.M), more.stdout[-2000:]
    ae_losses = _losses(wd / "stages" / "autoencoder")
    assert sorted(ae_losses) == list(range(1, AE_STEPS + EVERY + 1))
    shutil.copytree(wd / "stages" / "autoencoder", ref / "stages" / "autoencoder")
    shutil.copy(wd / "config.json", ref / "config.json")

    # stage 2: an uninterrupted reference beside a run killed after its first checkpoint
    r = subprocess.Popen(_train(prepared, ref, "speech", SPEECH_STEPS), cwd=REPO, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    v = subprocess.Popen(_train(prepared, wd, "speech", SPEECH_STEPS), cwd=REPO, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sp = wd / "stages" / "speech"
    deadline = time.time() + 600
    while not (sp / "checkpoints" / str(EVERY)).is_dir():
        assert v.poll() is None, "the speech stage ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    v.send_signal(signal.SIGKILL)
    v.wait()
    assert max(_losses(sp), default=0) < SPEECH_STEPS, "finished before it could be killed"
    resumed = _run(_train(prepared, wd, "speech", SPEECH_STEPS), timeout=900)
    said = re.findall(r"^resumed at step (\d+) from ", resumed.stdout, re.M)
    assert said and int(said[0]) >= EVERY, resumed.stdout[-2000:]
    assert r.wait(timeout=900) == 0, r.stderr.read()[-3000:]
    want, got = _losses(ref / "stages" / "speech"), _losses(sp)
    assert sorted(got) == sorted(want) == list(range(1, SPEECH_STEPS + 1))
    assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)]
    assert want[SPEECH_STEPS] < want[1], "the speech network did not learn"

    # generate for unseen audio: BVH + MP4, one frame per 1/20 s
    wav = next(prepared["src"].glob("demo_test_*.wav"))
    out = tmp_path / "out"
    g = _run(_cmd("gesture_jax.generate", f"--workdir={wd}", f"--audio={wav}", f"--out={out}", "--video"))
    written = json.loads(g.stdout[g.stdout.index("{"):])["written"]
    assert sorted(Path(p).suffix for p in written) == [".bvh", ".mp4"]
    from gesture_jax.audio.io import load_audio
    from gesture_jax.motion.bvh import read_bvh
    from gesture_jax.motion.kinematics import bvh_positions
    bvh = read_bvh(out / f"{wav.stem}.bvh")
    assert bvh.num_frames == int(np.floor(load_audio(wav, 16000).shape[0] * 20 / 16000))
    pos = bvh_positions(bvh)
    assert np.all(np.isfinite(pos)) and pos.std(axis=0).max() > 0.01  # it moves
    bad = _run(_cmd("gesture_jax.generate", f"--workdir={wd}", f"--audio={wav}", f"--out={out}", "--steps=10"),
               ok=False)
    assert bad.returncode == 2 and "regression model" in bad.stderr.strip().splitlines()[-1]


def test_mfcc_config_on_a_wavlm_prepared_dataset_is_a_one_line_error(prepared, tmp_path):
    data = tmp_path / "wavlm_data"
    shutil.copytree(prepared["data"], data)
    m = json.loads((data / "manifest.json").read_text())
    m["audio"] = {"feature": "wavlm", "dim": 768, "sample_rate": 16000, "layer": 12}
    (data / "manifest.json").write_text(json.dumps(m))
    p = _run(_train(prepared, tmp_path / "run", "autoencoder", 2, f"--config.data.out={data}"), ok=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
    assert "'wavlm'" in lines[0] and "'mfcc'" in lines[0] and "manifest.json" in lines[0]


def test_speech_stage_without_the_autoencoder_from_the_command_line(prepared, tmp_path):
    p = _run(_train(prepared, tmp_path / "run", "speech", 2), ok=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
    assert "--config.train.stage=autoencoder" in lines[0]


def test_unknown_method_from_the_command_line(prepared, tmp_path):
    p = _run(_train(prepared, tmp_path / "run", "speech", 2, "--config.method=kucherenk"), ok=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "unknown method 'kucherenk'" in lines[0], p.stderr[-2000:]
