"""Convert PyTorch WavLM weights into a Flax checkpoint the feature extractor loads.

    python -m data_prep.convert_wavlm --source=microsoft/wavlm-base-plus --out=checkpoints/wavlm-base-plus
    python -m data_prep.convert_wavlm --source=/models/wavlm-large --out=checkpoints/wavlm-large
    python -m data_prep.convert_wavlm --source=/models/WavLM-Base+.pt --out=checkpoints/wavlm-base-plus

--source is one of
  * a Hugging Face Hub id (downloaded through huggingface_hub's cache; needs network),
  * a local transformers directory: config.json + model.safetensors or pytorch_model.bin
    (sharded indexes too; preprocessor_config.json's do_normalize is honoured),
  * Microsoft's original WavLM-Base+.pt / WavLM-Large.pt ({'cfg', 'model'}).
--out receives config.json and an Orbax params/ tree (see gesture_jax/audio/wavlm/checkpoint.py);
loading it needs no torch. With --verify the converted model is run against transformers'
PyTorch WavLMModel on a few seconds of noise and the largest difference is printed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m data_prep.convert_wavlm",
                                 description=__doc__.split("\n\n", 1)[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="Hub id, transformers directory, or WavLM-*.pt file")
    ap.add_argument("--out", required=True, help="output checkpoint directory")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing converted checkpoint in --out")
    ap.add_argument("--trust_pickle", action="store_true",
                    help="allow torch.load to unpickle arbitrary objects (only for files you trust); "
                         "by default only tensors and plain containers are read")
    ap.add_argument("--verify", action="store_true",
                    help="compare the converted model with transformers' PyTorch WavLMModel (needs torch)")
    return ap


def convert(source: str, out: str | Path, *, overwrite: bool = False, trust_pickle: bool = False,
            verify: bool = False) -> tuple[Path, float | None]:
    """Convert `source` into a checkpoint at `out`.

    Returns (checkpoint directory, max |Flax - PyTorch| over every hidden state when
    `verify`, else None).
    """
    from gesture_jax.audio.wavlm.checkpoint import save_checkpoint
    from gesture_jax.audio.wavlm.convert import load_source, transformers_to_flax

    cfg, sd, kind = load_source(source, trust_pickle=trust_pickle)
    params = transformers_to_flax(sd, cfg)
    path = save_checkpoint(out, cfg, params, overwrite=overwrite,
                           source={"source": str(source), "kind": kind,
                                   "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return path, (verify_against_torch(path, sd) if verify else None)


def verify_against_torch(ckpt_dir: Path, state_dict: dict, seconds: float = 4.0) -> float:
    """Max |Flax - PyTorch| over all hidden states, on seeded noise.

    The reference is transformers' WavLMModel holding the *source* tensors (after the
    unilm renaming, independent of the Flax mapping table); the Flax side is the
    checkpoint as written to disk.
    """
    import numpy as np
    import torch
    from transformers import WavLMConfig as HFConfig
    from transformers import WavLMModel

    from gesture_jax.audio.wavlm.checkpoint import load_checkpoint
    from gesture_jax.audio.wavlm.convert import _strip_prefix
    from gesture_jax.audio.wavlm.model import jitted_forward

    model = load_checkpoint(ckpt_dir)
    hf = WavLMModel(HFConfig(**model.config.to_transformers_dict())).eval()
    rename = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}
    sd = {}
    for k, v in _strip_prefix(state_dict).items():
        for old, new in rename.items():
            if k.endswith(old) and "pos_conv_embed" in k:
                k = k[: -len(old)] + new
        sd[k] = torch.from_numpy(np.ascontiguousarray(v, np.float32))
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "masked_spec_embed" not in m]
    if missing or unexpected:
        raise RuntimeError(f"cannot load the source tensors into transformers: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    wave = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000))).astype(np.float32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(wave)[None], output_hidden_states=True).hidden_states
    got = jitted_forward(model, output_hidden_states=True)(wave[None]).hidden_states
    return float(max(np.abs(r.numpy() - np.asarray(g)).max() for r, g in zip(ref, got)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gesture_jax.audio.wavlm.checkpoint import CheckpointError, read_metadata
    from gesture_jax.audio.wavlm.convert import ConversionError

    try:
        out, err = convert(args.source, args.out, overwrite=args.overwrite, trust_pickle=args.trust_pickle,
                           verify=args.verify)
    except (ConversionError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = read_metadata(out)
    c = meta["wavlm"]
    print(f"wrote {out}: WavLM {c['num_hidden_layers']} layers x {c['hidden_size']}, "
          f"{'layer-norm-first' if c['do_stable_layer_norm'] else 'post-norm'}, {c['feat_extract_norm']}-norm "
          f"extractor, normalize_waveform={c['normalize_waveform']}, {meta['num_params']:,} parameters "
          f"(from {meta['source']['kind']})")
    if err is not None:
        print(f"verify: max |flax - torch| over all hidden states = {err:.2e}")
        if err > 1e-3:
            print("error: converted model does not match PyTorch", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
