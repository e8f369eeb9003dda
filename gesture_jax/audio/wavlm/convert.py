"""PyTorch WavLM weights -> parameters of the Flax `WavLM` module.

Three sources hold the same tensors under different names:
  * transformers `WavLMModel` state dicts (a Hub id, or a local directory with
    `config.json` and `model.safetensors` / `pytorch_model.bin`, possibly sharded; keys may
    carry a `wavlm.` prefix when saved from a task head such as `WavLMForCTC`);
  * Microsoft's original `WavLM-Base+.pt` / `WavLM-Large.pt` (a dict with `cfg` and
    `model`; names listed in ../shared/reference/wavlm_unilm_state_dict.tsv).
The unilm names are first renamed to transformers names, then one table maps those to
the Flax tree (transposing Linear/Conv weights to JAX layout). Weight norm is accepted as
`weight_g`/`weight_v` (torch < 2.1, unilm) or `parametrizations.weight.original0/1`
(transformers 5).

torch (and huggingface_hub) are imported only inside the functions that read PyTorch
files, so loading a converted checkpoint never needs them.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gesture_jax.audio.wavlm.config import WavLMConfig
from gesture_jax.errors import UserError


class ConversionError(UserError, ValueError):
    """A checkpoint that cannot be converted (message names the source and the problem)."""


# ---- unilm (Microsoft's original) names -> transformers names ----------------------------

_UNILM_IGNORED = re.compile(r"^(mask_emb|label_embs_concat|final_proj\..*|project_q\..*|quantizer\..*)$")


def unilm_to_transformers(sd: Mapping[str, Any], cfg: WavLMConfig) -> dict[str, Any]:
    """Rename an original WavLM state dict to transformers `WavLMModel` names.

    Tensors that inference does not use (`mask_emb`, pre-training heads) are dropped;
    any other unknown name raises, so a different architecture is not silently half-read.
    """
    out: dict[str, Any] = {}
    unknown = []
    for key, value in sd.items():
        if _UNILM_IGNORED.match(key):
            continue
        new = _rename_unilm_key(key, cfg)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ConversionError(f"unrecognized parameter names in the unilm checkpoint: {unknown[:8]}"
                              + (" ..." if len(unknown) > 8 else ""))
    return out


def _rename_unilm_key(key: str, cfg: WavLMConfig) -> str | None:
    m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(.+)", key)
    if m:
        i, rest = m.group(1), m.group(2)
        table = {"0.weight": "conv.weight", "0.bias": "conv.bias"}
        if cfg.feat_extract_norm == "group":
            table.update({"2.weight": "layer_norm.weight", "2.bias": "layer_norm.bias"})
        else:  # Sequential(TransposeLast, LayerNorm, TransposeLast) at index 2
            table.update({"2.1.weight": "layer_norm.weight", "2.1.bias": "layer_norm.bias"})
        return f"feature_extractor.conv_layers.{i}.{table[rest]}" if rest in table else None
    m = re.fullmatch(r"(layer_norm|post_extract_proj)\.(weight|bias)", key)
    if m:
        mod = {"layer_norm": "feature_projection.layer_norm",
               "post_extract_proj": "feature_projection.projection"}[m.group(1)]
        return f"{mod}.{m.group(2)}"
    m = re.fullmatch(r"encoder\.pos_conv\.0\.(bias|weight_g|weight_v|weight)", key)
    if m:
        return f"encoder.pos_conv_embed.conv.{m.group(1)}"
    m = re.fullmatch(r"encoder\.layer_norm\.(weight|bias)", key)
    if m:
        return key
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key)
    if m:
        i, rest = m.group(1), m.group(2)
        simple = {
            "self_attn.grep_a": "attention.gru_rel_pos_const",
            "self_attn.relative_attention_bias.weight": "attention.rel_attn_embed.weight",
        }
        if rest in simple:
            return f"encoder.layers.{i}.{simple[rest]}"
        mm = re.fullmatch(r"(self_attn\.(?:k_proj|v_proj|q_proj|out_proj|grep_linear)|self_attn_layer_norm|fc1|fc2|"
                          r"final_layer_norm)\.(weight|bias)", rest)
        if mm:
            mod = {
                "self_attn.k_proj": "attention.k_proj", "self_attn.v_proj": "attention.v_proj",
                "self_attn.q_proj": "attention.q_proj", "self_attn.out_proj": "attention.out_proj",
                "self_attn.grep_linear": "attention.gru_rel_pos_linear",
                "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
                "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm",
            }[mm.group(1)]
            return f"encoder.layers.{i}.{mod}.{mm.group(2)}"
    return None


# ---- transformers names -> Flax parameter tree ---------------------------------------------

def _strip_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a task model's `wavlm.` prefix and its head tensors; keep WavLMModel keys."""
    if any(k.startswith("wavlm.") for k in sd):
        return {k[len("wavlm."):]: v for k, v in sd.items() if k.startswith("wavlm.")}
    return dict(sd)


def _weight_norm_tensors(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(g [K], v [C, C/G, K]) of the positional conv under either weight-norm naming."""
    for g_name, v_name in ((f"{prefix}.parametrizations.weight.original0", f"{prefix}.parametrizations.weight.original1"),
                           (f"{prefix}.weight_g", f"{prefix}.weight_v")):
        if g_name in sd and v_name in sd:
            return sd[g_name], sd[v_name]
    if f"{prefix}.weight" in sd:
        # Weight norm already folded in: represent it exactly with g = ||v|| per tap.
        v = sd[f"{prefix}.weight"]
        return np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=(0, 1))).astype(np.float32), v
    raise ConversionError(f"positional conv weights missing: expected {prefix}.parametrizations.weight.original0/1 "
                          f"or {prefix}.weight_g/weight_v")


def transformers_to_flax(sd: Mapping[str, Any], cfg: WavLMConfig) -> dict[str, Any]:
    """Map a transformers `WavLMModel` state dict (numpy arrays) to the Flax pure-dict tree.

    Raises ConversionError naming any missing tensor or shape mismatch, and lists unused
    tensors (other than training-only ones) so a wrong architecture is caught here.
    """
    sd = {k: np.asarray(v, dtype=np.float32) for k, v in _strip_prefix(sd).items()}
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in sd:
            raise ConversionError(f"missing parameter {name!r}")
        used.add(name)
        a = sd[name]
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ConversionError(f"parameter {name!r} has shape {tuple(a.shape)}, the config implies {tuple(shape)}")
        return a

    def linear(prefix: str, din: int, dout: int) -> dict[str, np.ndarray]:
        return {"kernel": take(f"{prefix}.weight", (dout, din)).T.copy(), "bias": take(f"{prefix}.bias", (dout,))}

    def norm(prefix: str, dim: int) -> dict[str, np.ndarray]:
        return {"scale": take(f"{prefix}.weight", (dim,)), "bias": take(f"{prefix}.bias", (dim,))}

    c, h = cfg.hidden_size, cfg.num_attention_heads
    convs: dict[int, Any] = {}
    cin = 1
    for i, (d, k) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel)):
        p = f"feature_extractor.conv_layers.{i}"
        layer: dict[str, Any] = {"kernel": take(f"{p}.conv.weight", (d, cin, k)).transpose(2, 1, 0).copy()}
        if cfg.conv_bias:
            layer["bias"] = take(f"{p}.conv.bias", (d,))
        if cfg.feat_extract_norm == "layer" or i == 0:
            layer["layer_norm"] = norm(f"{p}.layer_norm", d)
        convs[i] = layer
        cin = d

    p = "encoder.pos_conv_embed.conv"
    kpos, groups = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
    g, v = _weight_norm_tensors(sd, p)
    used.update(n for n in sd if n.startswith(p + "."))
    if v.shape != (c, c // groups, kpos):
        raise ConversionError(f"positional conv weight_v has shape {v.shape}, expected {(c, c // groups, kpos)}")
    if g.size != kpos:
        raise ConversionError(f"positional conv weight_g has {g.size} entries, expected {kpos} (weight norm over dim=2)")
    pos = {"weight_v": v.transpose(2, 1, 0).copy(), "weight_g": g.reshape(kpos).copy(), "bias": take(f"{p}.bias", (c,))}

    layers: dict[int, Any] = {}
    hd = c // h
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layers.{i}"
        att: dict[str, Any] = {name: linear(f"{p}.attention.{name}", c, c)
                               for name in ("k_proj", "v_proj", "q_proj", "out_proj")}
        att["gru_rel_pos_const"] = take(f"{p}.attention.gru_rel_pos_const", (1, h, 1, 1)).reshape(h).copy()
        att["gru_rel_pos_linear"] = linear(f"{p}.attention.gru_rel_pos_linear", hd, 8)
        if i == 0:
            att["rel_attn_embed"] = take(f"{p}.attention.rel_attn_embed.weight", (cfg.num_buckets, h))
        layers[i] = {
            "attention": att,
            "layer_norm": norm(f"{p}.layer_norm", c),
            "feed_forward": {
                "intermediate_dense": linear(f"{p}.feed_forward.intermediate_dense", c, cfg.intermediate_size),
                "output_dense": linear(f"{p}.feed_forward.output_dense", cfg.intermediate_size, c),
            },
            "final_layer_norm": norm(f"{p}.final_layer_norm", c),
        }

    d_last = cfg.conv_dim[-1]
    if "feature_projection.projection.weight" in sd or d_last != c:
        proj = linear("feature_projection.projection", d_last, c)
    else:  # unilm omits post_extract_proj when the conv and model widths agree
        proj = {"kernel": np.eye(c, dtype=np.float32), "bias": np.zeros((c,), np.float32)}
    tree = {
        "feature_extractor": {"conv_layers": convs},
        "feature_projection": {"layer_norm": norm("feature_projection.layer_norm", d_last), "projection": proj},
        "encoder": {"pos_conv_embed": pos, "layer_norm": norm("encoder.layer_norm", c), "layers": layers},
    }
    unused = sorted(n for n in sd if n not in used and n != "masked_spec_embed")
    if unused:
        raise ConversionError(f"{len(unused)} parameters do not fit the config (wrong architecture?): {unused[:8]}")
    return tree


# ---- reading sources -------------------------------------------------------------------

def _to_numpy(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):  # torch.Tensor
            v = v.detach().cpu().float().numpy()
        out[k] = np.asarray(v)
    return out


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    import torch  # lazy: only conversion needs torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        hint = ("" if trust_pickle else
                " If this file comes from a source you trust and holds non-tensor Python objects, "
                "rerun with --trust_pickle (this executes code stored in the file).")
        raise ConversionError(f"{path}: cannot be loaded by torch.load ({type(e).__name__}: {e}).{hint}") from e


def _read_weight_files(d: Path, trust_pickle: bool) -> dict[str, np.ndarray]:
    """All tensors of a transformers model directory (single or sharded, safetensors preferred)."""
    st_index, bin_index = d / "model.safetensors.index.json", d / "pytorch_model.bin.index.json"
    if (d / "model.safetensors").exists():
        files = [d / "model.safetensors"]
    elif st_index.exists():
        files = sorted({d / f for f in json.loads(st_index.read_text())["weight_map"].values()})
    elif (d / "pytorch_model.bin").exists():
        files = [d / "pytorch_model.bin"]
    elif bin_index.exists():
        files = sorted({d / f for f in json.loads(bin_index.read_text())["weight_map"].values()})
    else:
        raise ConversionError(f"{d}: no model.safetensors or pytorch_model.bin (nor a sharded index) found")
    sd: dict[str, np.ndarray] = {}
    for f in files:
        if not f.exists():
            raise ConversionError(f"{f}: weight shard listed in the index is missing")
        if f.suffix == ".safetensors":
            from safetensors.numpy import load_file

            try:
                sd.update(load_file(str(f)))
            except Exception as e:
                raise ConversionError(f"{f}: cannot read safetensors ({e})") from e
        else:
            obj = _torch_load(f, trust_pickle)
            if not isinstance(obj, Mapping):
                raise ConversionError(f"{f}: expected a state dict, got {type(obj).__name__}")
            sd.update(_to_numpy(obj))
    return sd


def load_transformers_dir(d: Path, *, trust_pickle: bool = False) -> tuple[WavLMConfig, dict[str, np.ndarray]]:
    """A local transformers WavLM directory -> (config, transformers-named numpy state dict)."""
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise ConversionError(f"{d}: no config.json (expected a transformers WavLM directory)")
    try:
        hf = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{cfg_path}: invalid JSON ({e})") from e
    normalize = None
    pre = d / "preprocessor_config.json"
    if pre.exists():
        try:
            normalize = bool(json.loads(pre.read_text()).get("do_normalize", False))
        except json.JSONDecodeError as e:
            raise ConversionError(f"{pre}: invalid JSON ({e})") from e
    try:
        cfg = WavLMConfig.from_transformers_dict(hf, normalize_waveform=normalize)
    except ValueError as e:
        raise ConversionError(f"{cfg_path}: {e}") from e
    return cfg, _read_weight_files(d, trust_pickle)


def load_unilm_checkpoint(path: Path, *, trust_pickle: bool = False) -> tuple[WavLMConfig, dict[str, np.ndarray]]:
    """Microsoft's WavLM-*.pt ({'cfg': dict, 'model': state dict}) -> (config, transformers-named dict)."""
    obj = _torch_load(path, trust_pickle)
    if not (isinstance(obj, Mapping) and "cfg" in obj and "model" in obj):
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise ConversionError(f"{path}: not an original WavLM checkpoint (expected keys 'cfg' and 'model', got {keys})")
    raw_cfg = obj["cfg"]
    if not isinstance(raw_cfg, Mapping):
        raw_cfg = vars(raw_cfg) if hasattr(raw_cfg, "__dict__") else dict(raw_cfg)
    try:
        cfg = WavLMConfig.from_unilm_cfg(raw_cfg)
        sd = unilm_to_transformers(_to_numpy(obj["model"]), cfg)
    except (ConversionError, ValueError) as e:
        raise ConversionError(f"{path}: {e}") from e
    return cfg, sd


def download_hub(repo_id: str) -> Path:
    """Fetch config and weights of a Hub model (cached by huggingface_hub) and return its folder."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - transformers depends on huggingface_hub
        raise ConversionError("huggingface_hub is needed to download Hub models") from e
    try:
        return Path(snapshot_download(
            repo_id=repo_id,
            allow_patterns=["config.json", "preprocessor_config.json", "*.safetensors",
                            "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json"]))
    except Exception as e:
        raise ConversionError(f"cannot download {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
                              "Without network access, download the model elsewhere and pass its local "
                              "directory (config.json + weights) as --source.") from e


def load_source(source: str, *, trust_pickle: bool = False) -> tuple[WavLMConfig, dict[str, np.ndarray], str]:
    """Any supported source -> (config, transformers-named numpy state dict, kind).

    kind is "transformers_dir", "unilm_pt" or "hub". A path that exists is read locally;
    anything else shaped like `owner/name` is treated as a Hub id.
    """
    p = Path(os.path.expanduser(source))
    if p.is_dir():
        cfg, sd = load_transformers_dir(p, trust_pickle=trust_pickle)
        return cfg, sd, "transformers_dir"
    if p.is_file():
        if p.suffix == ".safetensors" or p.name == "pytorch_model.bin":
            cfg, sd = load_transformers_dir(p.parent, trust_pickle=trust_pickle)
            return cfg, sd, "transformers_dir"
        cfg, sd = load_unilm_checkpoint(p, trust_pickle=trust_pickle)
        return cfg, sd, "unilm_pt"
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", source) and not source.startswith((".", "/")):
        cfg, sd = load_transformers_dir(download_hub(source), trust_pickle=trust_pickle)
        return cfg, sd, "hub"
    raise ConversionError(f"{source}: no such file or directory, and not a Hub id of the form owner/name")
