"""WavLM Base+ encoding throughput: Flax (this repo) vs transformers' PyTorch WavLMModel.

    python bench/wavlm_throughput.py [--seconds=20] [--repeats=3] [--batch=1] [--config=base_plus|large]

Both run the full encoder (feature encoder + all transformer layers, every hidden state
returned) on the same waveform with the same random weights (the PyTorch weights are
converted to Flax, and the largest difference between the two outputs is reported as a
sanity check). Runs alternate Flax / PyTorch so a background load shift hits both alike;
the median time is reported. Prints one JSON object:
    audio_s_per_s  seconds of audio encoded per second of compute (higher is better)
    speedup        flax audio_s_per_s / torch audio_s_per_s
Compile time (Flax) and the first PyTorch call are measured separately, not in the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="audio length per example (reference window: 20 s)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="base_plus", choices=["base_plus", "large"])
    args = ap.parse_args(argv)

    import jax
    import numpy as np
    import torch
    from transformers import WavLMConfig as HFConfig
    from transformers import WavLMModel

    from gesture_jax.audio.wavlm.checkpoint import model_from_params
    from gesture_jax.audio.wavlm.config import PRESETS
    from gesture_jax.audio.wavlm.convert import _to_numpy, transformers_to_flax
    from gesture_jax.audio.wavlm.model import jitted_forward

    cfg = PRESETS[args.config]()
    load_start = os.getloadavg()
    torch.manual_seed(0)
    hf = WavLMModel(HFConfig(**cfg.to_transformers_dict())).eval()
    flax_model = model_from_params(cfg, transformers_to_flax(_to_numpy(hf.state_dict()), cfg))
    forward = jitted_forward(flax_model, output_hidden_states=True)

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal((args.batch, int(args.seconds * 16000)))).astype(np.float32)
    wave_t = torch.from_numpy(wave)

    def run_flax():
        return jax.block_until_ready(forward(wave))

    def run_torch():
        with torch.inference_mode():
            return hf(wave_t, output_hidden_states=True)

    t0 = time.perf_counter()
    out_f = run_flax()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out_t = run_torch()
    torch_first_s = time.perf_counter() - t0
    max_diff = max(float(np.abs(a.numpy() - np.asarray(b)).max())
                   for a, b in zip(out_t.hidden_states, out_f.hidden_states))
    del out_f, out_t

    times = {"flax": [], "torch": []}
    for _ in range(args.repeats):
        for name, fn in (("flax", run_flax), ("torch", run_torch)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    audio_s = args.seconds * args.batch
    result = {
        "benchmark": "wavlm_throughput",
        "config": args.config,
        "hidden_size": cfg.hidden_size, "layers": cfg.num_hidden_layers,
        "audio_seconds_per_call": audio_s, "batch": args.batch, "repeats": args.repeats,
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "note": "CPU shared with other concurrent jobs; absolute figures vary with their load, "
                "the runs alternate so both frameworks see the same conditions",
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
    }
    for name in ("flax", "torch"):
        med = statistics.median(times[name])
        result[name] = {"seconds": [round(t, 3) for t in times[name]], "median_s": round(med, 3),
                        "audio_s_per_s": round(audio_s / med, 3)}
    result["flax"]["compile_and_first_call_s"] = round(compile_s, 2)
    result["torch"]["first_call_s"] = round(torch_first_s, 2)
    result["speedup"] = round(result["flax"]["audio_s_per_s"] / result["torch"]["audio_s_per_s"], 3)
    result["max_abs_diff_all_hidden_states"] = max_diff
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
