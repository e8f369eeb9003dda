"""The reference's parameter names and layouts, mapped onto our denoiser (both directions).

The reference's Lightning checkpoints keep the network under ``model.`` (layout in
../shared/reference/persona_gestor_state_dict.tsv, Trinity F = 75). How its tensors become ours:

  PyTorch                                       ours (nnx path)                    conversion
  motion_encoder.net.0.sequential.1.{weight,bias}  motion_in.conv.{kernel,bias}    conv (D,F,3) -> (3,F,D)
  style_encoder.1 / .3                          fuzzy.style_conv / style_norm      conv / LayerNorm
  down_sampler.1 / .3                           fuzzy.down_conv / down_norm        conv / LayerNorm
  diffusion_embedding.projection{1,2}           time_embed.proj{1,2}               Linear (out,in) -> (in,out)
  blocks.i.attn.0.module.layer_norm             blocks.i.attn.norm
  blocks.i.attn.0.module.attention.{query,key,value,pos,out}_proj.linear  ...attn.attention.{query,...}
  blocks.i.attn.0.module.attention.{u,v}_bias   ...attn.attention.{u,v}_bias       as is [H, D/H]
  blocks.i.attn.1.module.sequential.0 / .2 / .4 / .5 / .7   blocks.i.conv.norm / pointwise_in / depthwise /
                                                batch_norm (+ running stats) / pointwise_out
  blocks.i.mlp.fc{1,2}                          blocks.i.mlp.fc{1,2}
  blocks.i.adaLN_modulation.1 / .2              blocks.i.ada_norm / ada_linear     LayerNorm / Linear(D->6D)
  final_layer.output.net.1                      final.out                          conv k=1 (F,D,1) -> (D,F)
  final_layer.adaLN_modulation.1                final.ada_linear                   Linear(D->2D)

Not parameters of ours, checked instead of loaded:
  * ``motion_decoder.net.1.*`` is the same module as ``final_layer.output`` (the reference passes
    one decoder to both), so the state dict holds it twice; the two copies must be equal.
  * the 12 schedule buffers (``betas``, ``alphas_cumprod``, ...) must equal our schedule from
    ``cfg.diffusion`` (float32, to 1e-6 relative), else the run would sample another process;
  * ``positional_encoding.pe`` [1, max_len, D] must equal our sinusoid table (we compute it);
  * ``num_batches_tracked`` only matters to BatchNorm with momentum=None: skipped.
The step-feature table is not in the state dict (a non-persistent buffer); the importer computes
it with torch (``reference_step_table``) and stores it with the run.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from gesture_jax.errors import UserError

SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")
ANCHOR = "motion_encoder.net.0.sequential.1.weight"   # finds the network's prefix ("model." in Lightning files)
WAVLM_PREFIXES = ("wavLMEncoder.", "wavlm_encoder.", "wavlm.")  # the frozen WavLM some checkpoints embed


class ReferenceMismatch(UserError, ValueError):
    """A reference state dict that does not fit our model (the message names the key and both shapes)."""


# --------------------------------------------------------------------------- layout conversions
def _linear_in(w: np.ndarray) -> np.ndarray:      # torch Linear (out, in) -> ours (in, out)
    return w.T


def _conv_in(w: np.ndarray) -> np.ndarray:        # torch Conv1d (out, in, k) -> ours (k, in, out)
    return w.transpose(2, 1, 0)


def _pointwise_in(w: np.ndarray) -> np.ndarray:   # torch Conv1d k=1 (out, in, 1) -> our Linear (in, out)
    return w[:, :, 0].T


def _depthwise_in(w: np.ndarray) -> np.ndarray:   # torch depthwise (C, 1, k) -> ours (k, C)
    return w[:, 0, :].T


def _same(w: np.ndarray) -> np.ndarray:
    return w


INVERSE: dict[Callable, Callable] = {
    _linear_in: lambda a: a.T,
    _conv_in: lambda a: a.transpose(2, 1, 0),
    _pointwise_in: lambda a: a.T[:, :, None],
    _depthwise_in: lambda a: a.T[:, None, :],
    _same: lambda a: a,
}


# Rank of the reference tensor each conversion takes (layouts are checked before converting, so a
# tensor of the wrong rank is an error naming it, not a numpy exception).
RANKS: dict[Callable, Callable[[str], int]] = {
    _linear_in: lambda name: 2 if name.endswith(".weight") else 1,
    _conv_in: lambda name: 3,
    _pointwise_in: lambda name: 3,
    _depthwise_in: lambda name: 3,
    _same: lambda name: 2 if name.endswith(("u_bias", "v_bias")) else 1,
}


@dataclass(frozen=True)
class Entry:
    ref: str                      # name in the reference's state dict (without the prefix)
    ours: tuple                   # path in nnx.to_pure_dict(nnx.state(model))
    convert: Callable             # reference layout -> ours


def _norm(ref: str, ours: tuple, scale: str = "scale") -> list[Entry]:
    return [Entry(f"{ref}.weight", (*ours, scale), _same), Entry(f"{ref}.bias", (*ours, "bias"), _same)]


def _lin(ref: str, ours: tuple, bias: bool = True, convert: Callable = _linear_in) -> list[Entry]:
    out = [Entry(f"{ref}.weight", (*ours, "kernel"), convert)]
    return out + ([Entry(f"{ref}.bias", (*ours, "bias"), _same)] if bias else [])


def parameter_map(depth: int) -> list[Entry]:
    """Every reference parameter / statistic we load, in the reference's order."""
    e: list[Entry] = []
    e += _lin("motion_encoder.net.0.sequential.1", ("motion_in", "conv"), convert=_conv_in)
    e += _lin("style_encoder.1", ("fuzzy", "style_conv"), convert=_conv_in)
    e += _norm("style_encoder.3", ("fuzzy", "style_norm"))
    e += _lin("down_sampler.1", ("fuzzy", "down_conv"), convert=_conv_in)
    e += _norm("down_sampler.3", ("fuzzy", "down_norm"))
    e += _lin("diffusion_embedding.projection1", ("time_embed", "proj1"))
    e += _lin("diffusion_embedding.projection2", ("time_embed", "proj2"))
    for i in range(depth):
        b = f"blocks.{i}"
        att = f"{b}.attn.0.module"
        ours_att = ("blocks", i, "attn")
        e += _norm(f"{att}.layer_norm", (*ours_att, "norm"))
        e += [Entry(f"{att}.attention.u_bias", (*ours_att, "attention", "u_bias"), _same),
              Entry(f"{att}.attention.v_bias", (*ours_att, "attention", "v_bias"), _same)]
        for ref_name, our_name, bias in (("query", "query", True), ("key", "key", True), ("value", "value", True),
                                         ("pos", "pos", False), ("out", "out", True)):
            e += _lin(f"{att}.attention.{ref_name}_proj.linear", (*ours_att, "attention", our_name), bias=bias)
        conv = f"{b}.attn.1.module.sequential"
        ours_conv = ("blocks", i, "conv")
        e += _norm(f"{conv}.0", (*ours_conv, "norm"))
        e += _lin(f"{conv}.2.conv", (*ours_conv, "pointwise_in"), convert=_pointwise_in)
        e += [Entry(f"{conv}.4.conv.weight", (*ours_conv, "depthwise", "kernel"), _depthwise_in)]
        e += _norm(f"{conv}.5", (*ours_conv, "batch_norm"))
        e += [Entry(f"{conv}.5.running_mean", (*ours_conv, "batch_norm", "mean"), _same),
              Entry(f"{conv}.5.running_var", (*ours_conv, "batch_norm", "var"), _same)]
        e += _lin(f"{conv}.7.conv", (*ours_conv, "pointwise_out"), convert=_pointwise_in)
        e += _lin(f"{b}.mlp.fc1", ("blocks", i, "mlp", "fc1"))
        e += _lin(f"{b}.mlp.fc2", ("blocks", i, "mlp", "fc2"))
        e += _norm(f"{b}.adaLN_modulation.1", ("blocks", i, "ada_norm"))
        e += _lin(f"{b}.adaLN_modulation.2", ("blocks", i, "ada_linear"))
    e += _lin("final_layer.output.net.1", ("final", "out"), convert=_pointwise_in)
    e += _lin("final_layer.adaLN_modulation.1", ("final", "ada_linear"))
    return e


def checked_buffers(depth: int) -> list[str]:
    """Reference names that are checked, not loaded (see the module docstring)."""
    names = list(SCHEDULE_BUFFERS) + ["motion_decoder.net.1.weight", "motion_decoder.net.1.bias"]
    for i in range(depth):
        names += [f"blocks.{i}.attn.0.module.positional_encoding.pe",
                  f"blocks.{i}.attn.1.module.sequential.5.num_batches_tracked"]
    return names


# --------------------------------------------------------------------------- reading a state dict
def find_prefix(names: Iterable[str], where: str) -> str:
    """The prefix before the network's names ("model." in the reference's Lightning files, "" in a
    bare network state dict)."""
    hits = sorted(n[: -len(ANCHOR)] for n in names if n.endswith(ANCHOR))
    if not hits:
        raise ReferenceMismatch(f"{where}: no '{ANCHOR}' in the state dict: not a Persona-Gestor network "
                                f"(first keys: {sorted(names)[:5]})")
    if len(hits) > 1:
        raise ReferenceMismatch(f"{where}: several networks in one state dict (prefixes {hits})")
    return hits[0]


def infer_depth(names: Iterable[str], prefix: str, where: str) -> int:
    blocks = {int(n[len(prefix) + 7:].split(".")[0]) for n in names
              if n.startswith(prefix + "blocks.") and n[len(prefix) + 7:].split(".")[0].isdigit()}
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise ReferenceMismatch(f"{where}: blocks found: {sorted(blocks)[:20]}; expected {prefix}blocks.0 .. "
                                f"blocks.N-1")
    return len(blocks)


@dataclass
class Imported:
    """What a reference state dict gives our model."""
    arrays: "OrderedDict[tuple, np.ndarray]"      # our path -> value (our layout, float32)
    depth: int
    motion_dim: int
    audio_dim: int
    dim: int
    ignored: list[str] = field(default_factory=list)   # reference keys read but not loaded (why in the report)
    notes: list[str] = field(default_factory=list)


def read_reference(sd: Mapping[str, np.ndarray], where: str) -> Imported:
    """Map a reference state dict onto our names and layouts; every key is accounted for, every
    shape checked against the others (the caller checks against the model it builds)."""
    names = list(sd)
    prefix = find_prefix(names, where)
    depth = infer_depth(names, prefix, where)
    entries = parameter_map(depth)
    wanted = {prefix + e.ref for e in entries} | {prefix + n for n in checked_buffers(depth)}
    buffers_bare = set(SCHEDULE_BUFFERS)  # Lightning keeps the schedule on the LightningModule itself
    missing = [prefix + e.ref for e in entries if prefix + e.ref not in sd]
    wavlm = [n for n in names if any(n.startswith(prefix + p) for p in WAVLM_PREFIXES)]
    extra = [n for n in names if n not in wanted and n not in wavlm
             and not (n in buffers_bare or any(n == prefix + b for b in buffers_bare))]
    if missing:
        raise ReferenceMismatch(f"{where}: missing {len(missing)} reference parameter(s): {missing[:8]}"
                                f"{' ...' if len(missing) > 8 else ''}")
    if extra:
        raise ReferenceMismatch(f"{where}: {len(extra)} unexpected key(s) not in Persona-Gestor's layout: "
                                f"{extra[:8]}{' ...' if len(extra) > 8 else ''} (another model or another "
                                f"version of the reference?)")
    arrays: OrderedDict[tuple, np.ndarray] = OrderedDict()
    for e in entries:
        v = np.asarray(sd[prefix + e.ref])
        if not np.issubdtype(v.dtype, np.floating):
            raise ReferenceMismatch(f"{where}: {prefix + e.ref} has dtype {v.dtype}, expected floating point")
        if v.ndim != RANKS[e.convert](e.ref):
            raise ReferenceMismatch(f"{where}: {prefix + e.ref} has shape {v.shape}, expected a "
                                    f"{RANKS[e.convert](e.ref)}-d tensor")
        arrays[e.ours] = np.ascontiguousarray(e.convert(v.astype(np.float32, copy=False)))
    w_in = np.asarray(sd[prefix + ANCHOR])
    if w_in.ndim != 3:
        raise ReferenceMismatch(f"{where}: {prefix + ANCHOR} has shape {w_in.shape}, expected (D, F, k)")
    dim, motion_dim = int(w_in.shape[0]), int(w_in.shape[1])
    audio_dim = int(np.asarray(sd[prefix + "down_sampler.1.weight"]).shape[1])
    imp = Imported(arrays=arrays, depth=depth, motion_dim=motion_dim, audio_dim=audio_dim, dim=dim)
    imp.ignored += [n for n in names if n.endswith("num_batches_tracked")]
    if wavlm:
        imp.ignored += wavlm
        imp.notes.append(f"{len(wavlm)} WavLM tensors under {prefix}{wavlm[0][len(prefix):].split('.')[0]}. not "
                         f"loaded: features come from a converted WavLM (python -m data_prep.convert_wavlm)")
    dec = [prefix + "motion_decoder.net.1.weight", prefix + "motion_decoder.net.1.bias"]
    out = [prefix + "final_layer.output.net.1.weight", prefix + "final_layer.output.net.1.bias"]
    for d, o in zip(dec, out):
        if d in sd:
            a, b = np.asarray(sd[d]), np.asarray(sd[o])
            if a.shape != b.shape or not np.array_equal(a, b):
                raise ReferenceMismatch(f"{where}: {d} {a.shape} differs from {o} {b.shape}; the reference uses one "
                                        f"decoder for both, and our model has only the second")
            imp.ignored.append(d)
    return imp


def check_buffers(sd: Mapping[str, np.ndarray], prefix: str, depth: int, schedule: Any, max_len: int, dim: int,
                  where: str, rtol: float = 1e-6) -> list[str]:
    """Compare the reference's derived buffers with ours; returns the names checked. Our schedule is
    computed in float64 and stored in float32, as the reference's buffers."""
    from gesture_jax.models.embeddings import sinusoidal_positions

    checked = []
    for name in SCHEDULE_BUFFERS:
        key = name if name in sd else prefix + name if prefix + name in sd else None
        if key is None:
            continue
        ref = np.asarray(sd[key], np.float64)
        ours = np.asarray(getattr(schedule, name), np.float64)
        if ref.shape != ours.shape:
            raise ReferenceMismatch(f"{where}: {key} has shape {ref.shape}, our schedule {ours.shape} "
                                    f"(diffusion.num_steps)")
        tol = rtol * np.maximum(np.abs(ours), np.abs(ours).max() * 1e-3) + 1e-12
        bad = np.abs(ref - ours) > tol
        if bad.any():
            i = int(np.argmax(np.abs(ref - ours) - tol))
            raise ReferenceMismatch(f"{where}: {key}[{i}] = {ref[i]:.9g} but our schedule (diffusion.schedule/"
                                    f"beta_start/beta_end) gives {ours[i]:.9g}")
        checked.append(key)
    pe = sinusoidal_positions(max_len, dim)
    for i in range(depth):
        key = f"{prefix}blocks.{i}.attn.0.module.positional_encoding.pe"
        if key not in sd:
            continue
        ref = np.asarray(sd[key], np.float32)
        if ref.ndim != 3 or ref.shape[0] != 1 or ref.shape[2] != dim:
            raise ReferenceMismatch(f"{where}: {key} has shape {ref.shape}, expected (1, max_len, {dim})")
        ref = ref[0]
        n = min(ref.shape[0], pe.shape[0])
        if ref.shape[0] < max_len:
            raise ReferenceMismatch(f"{where}: {key} has {ref.shape[0]} positions; model.max_len is {max_len}")
        err = float(np.abs(ref[:n] - pe[:n]).max())
        if err > 1e-4:
            raise ReferenceMismatch(f"{where}: {key} differs from the sinusoid table by {err:.3g}: not the "
                                    f"reference's relative positional encoding")
        checked.append(key)
    return checked


# --------------------------------------------------------------------------- writing one (tests, parity)
def export_state_dict(arrays: Mapping[tuple, np.ndarray], depth: int, schedule: Any, max_len: int,
                      prefix: str = "model.") -> "OrderedDict[str, np.ndarray]":
    """Our parameters (path -> array, as nnx.to_pure_dict flattened) as the reference's state dict:
    names, layouts and the buffers it carries, in its order (the TSV's for the reference shape)."""
    from gesture_jax.models.embeddings import sinusoidal_positions

    # Array-agnostic (numpy or jax): jax.eval_shape of this gives the reference-shape layout abstractly.
    by_ref = {e.ref: INVERSE[e.convert](arrays[e.ours]) for e in parameter_map(depth)}
    dim = by_ref["down_sampler.1.weight"].shape[0]
    sd: OrderedDict[str, np.ndarray] = OrderedDict()
    for name in SCHEDULE_BUFFERS:
        sd[name] = np.asarray(getattr(schedule, name), np.float32)
    order = [e.ref for e in parameter_map(depth)]
    head = order[:2]  # motion_encoder first, then the (shared) motion decoder, as the reference registers them
    for n in head:
        sd[prefix + n] = by_ref[n]
    sd[prefix + "motion_decoder.net.1.weight"] = by_ref["final_layer.output.net.1.weight"]
    sd[prefix + "motion_decoder.net.1.bias"] = by_ref["final_layer.output.net.1.bias"]
    pe = sinusoidal_positions(max_len, dim)[None]
    for n in order[2:]:
        if n.endswith("attn.0.module.layer_norm.weight"):
            sd[prefix + n.replace("layer_norm.weight", "positional_encoding.pe")] = pe
        sd[prefix + n] = by_ref[n]
        if n.endswith("sequential.5.running_var"):
            sd[prefix + n.replace("running_var", "num_batches_tracked")] = np.zeros((), np.int64)
    return sd


def flatten(tree: Mapping, prefix: tuple = ()) -> "OrderedDict[tuple, Any]":
    """nnx.to_pure_dict output -> {path tuple: leaf} (RNG streams included; callers pick)."""
    out: OrderedDict[tuple, Any] = OrderedDict()
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def reference_step_table(rows: int, width: int) -> np.ndarray:
    """The reference's DiffusionEmbedding table, [rows, width] float32, evaluated by torch exactly as
    the reference builds it: steps [rows,1] (int64) * 10.0 ** (arange(width/2) * 4.0 / (width/2)),
    then [sin, cos]. Needs torch (a conversion-time dependency)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is in requirements-dev.txt
        raise UserError("the reference's exact step table is computed with torch (pip install torch==2.13.0 from "
                        "requirements-dev.txt): the importer needs it") from e
    half = width // 2
    steps = torch.arange(rows).unsqueeze(1)
    dims = torch.arange(half).unsqueeze(0)
    table = steps * 10.0 ** (dims * 4.0 / half)
    return torch.cat([torch.sin(table), torch.cos(table)], dim=1).numpy().astype(np.float32)
