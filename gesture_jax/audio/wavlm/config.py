"""WavLM architecture hyper-parameters, and how the two published formats spell them.

A converted checkpoint stores this dataclass as JSON beside the Orbax parameters, so
loading the Flax model never needs torch or transformers. Field names follow
transformers' `WavLMConfig` (the format most users download); `from_unilm_cfg` maps
Microsoft's original `WavLM-*.pt` `cfg` dict onto the same fields.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from typing import Any, Mapping

from gesture_jax.storage import Path

FEAT_EXTRACT_NORMS = ("group", "layer")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


@dataclasses.dataclass(frozen=True)
class WavLMConfig:
    """Shape and variant of a WavLM encoder (defaults = WavLM Base+)."""

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    # "group": GroupNorm(C groups) after the first conv only (unilm extractor_mode "default", Base+);
    # "layer": LayerNorm over channels after every conv (unilm "layer_norm", Large).
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    num_buckets: int = 320
    max_bucket_distance: int = 800
    # False: post-norm layers, encoder LayerNorm before the layers (Base+).
    # True: layer-norm-first layers, encoder LayerNorm after the last layer (Large).
    do_stable_layer_norm: bool = False
    layer_norm_eps: float = 1e-5
    # Whole-clip zero-mean/unit-variance waveform normalization the checkpoint was trained
    # with (unilm cfg "normalize"; transformers' feature extractor "do_normalize"). Large: True.
    normalize_waveform: bool = False

    def __post_init__(self) -> None:
        # Tuples, never lists: the config is a static (hashed) part of the jitted model.
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        n = len(self.conv_dim)
        if len(self.conv_kernel) != n or len(self.conv_stride) != n:
            raise ValueError(f"conv_dim/conv_kernel/conv_stride lengths differ: {n}, "
                             f"{len(self.conv_kernel)}, {len(self.conv_stride)}")
        if self.feat_extract_norm not in FEAT_EXTRACT_NORMS:
            raise ValueError(f"feat_extract_norm must be one of {FEAT_EXTRACT_NORMS}, got {self.feat_extract_norm!r}")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ValueError(f"{name} {getattr(self, name)!r} is not supported (one of {ACTIVATIONS})")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}")

    # ---- geometry -----------------------------------------------------------------------
    @property
    def receptive_field(self) -> int:
        """Samples seen by one encoder frame (400 for the standard conv stack)."""
        rf, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride):
            rf += (k - 1) * jump
            jump *= s
        return rf

    @property
    def hop(self) -> int:
        """Samples between consecutive encoder frames (320 = 20 ms at 16 kHz)."""
        h = 1
        for s in self.conv_stride:
            h *= s
        return h

    def num_frames(self, num_samples: int) -> int:
        """Encoder frames for a waveform of `num_samples` (exactly what the conv stack gives)."""
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1
            if n <= 0:
                return 0
        return n

    # ---- serialization ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("conv_dim", "conv_kernel", "conv_stride"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WavLMConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown WavLMConfig fields: {sorted(unknown)}")
        kw = dict(d)
        for k in ("conv_dim", "conv_kernel", "conv_stride"):
            if k in kw:
                kw[k] = tuple(int(v) for v in kw[k])
        return cls(**kw)

    def save_json(self, path: str | Path, **extra: Any) -> None:
        """Write the config (plus provenance fields under "source") as JSON."""
        Path(path).write_text(json.dumps({"wavlm": self.to_dict(), **extra}, indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> "WavLMConfig":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: cannot read WavLM config JSON ({e})") from e
        if "wavlm" not in d:
            raise ValueError(f"{p}: not a converted WavLM config (no 'wavlm' key)")
        return cls.from_dict(d["wavlm"])

    # ---- the two published formats ------------------------------------------------------
    @classmethod
    def from_transformers_dict(cls, d: Mapping[str, Any], *, normalize_waveform: bool | None = None) -> "WavLMConfig":
        """From a transformers `config.json` / `WavLMConfig.to_dict()` (extra keys ignored)."""
        if d.get("model_type", "wavlm") != "wavlm":
            raise ValueError(f"config.json describes a {d.get('model_type')!r} model, not WavLM")
        if d.get("add_adapter"):
            raise ValueError("WavLM checkpoints with an adapter (add_adapter=True) are not supported")
        base = cls()
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in d and d[f.name] is not None:
                kw[f.name] = d[f.name]
        for k in ("conv_dim", "conv_kernel", "conv_stride"):
            if k in kw:
                kw[k] = tuple(int(v) for v in kw[k])
        if normalize_waveform is not None:
            kw["normalize_waveform"] = bool(normalize_waveform)
        else:
            # transformers keeps this in preprocessor_config.json; Large-style models normalize.
            kw["normalize_waveform"] = bool(kw.get("do_stable_layer_norm", base.do_stable_layer_norm))
        return cls(**kw)

    @classmethod
    def from_unilm_cfg(cls, cfg: Mapping[str, Any]) -> "WavLMConfig":
        """From the `cfg` dict of Microsoft's original WavLM-Base+.pt / WavLM-Large.pt."""
        def get(key: str, default: Any) -> Any:
            v = cfg.get(key, default)
            return default if v is None else v

        layers = parse_conv_feature_layers(get("conv_feature_layers",
                                               "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))
        mode = get("extractor_mode", "default")
        norm = {"default": "group", "layer_norm": "layer"}.get(mode)
        if norm is None:
            raise ValueError(f"unilm extractor_mode {mode!r} is not supported (default or layer_norm)")
        if not get("relative_position_embedding", True):
            raise ValueError("unilm checkpoints without relative_position_embedding are not WavLM-style")
        if not get("gru_rel_pos", True):
            raise ValueError("unilm checkpoints with gru_rel_pos=False are not supported")
        act = get("activation_fn", "gelu")
        return cls(
            conv_dim=tuple(int(l[0]) for l in layers),
            conv_kernel=tuple(int(l[1]) for l in layers),
            conv_stride=tuple(int(l[2]) for l in layers),
            conv_bias=bool(get("conv_bias", False)),
            feat_extract_norm=norm,
            feat_extract_activation="gelu",
            hidden_size=int(get("encoder_embed_dim", 768)),
            num_hidden_layers=int(get("encoder_layers", 12)),
            num_attention_heads=int(get("encoder_attention_heads", 12)),
            intermediate_size=int(get("encoder_ffn_embed_dim", 3072)),
            hidden_act=act,
            num_conv_pos_embeddings=int(get("conv_pos", 128)),
            num_conv_pos_embedding_groups=int(get("conv_pos_groups", 16)),
            num_buckets=int(get("num_buckets", 320)),
            max_bucket_distance=int(get("max_distance", 800)),
            do_stable_layer_norm=bool(get("layer_norm_first", False)),
            normalize_waveform=bool(get("normalize", False)),
        )

    def to_transformers_dict(self) -> dict[str, Any]:
        """Keyword arguments for transformers' `WavLMConfig` with the same architecture (tests)."""
        d = self.to_dict()
        d.pop("normalize_waveform")
        return d


def parse_conv_feature_layers(spec: str | list) -> list[tuple[int, int, int]]:
    """Evaluate unilm's `conv_feature_layers` string, e.g. "[(512,10,5)] + [(512,3,2)] * 4".

    Only list/tuple literals of ints, `+` and `*` are allowed: the string comes from a
    downloaded file and must never be passed to `eval`.
    """
    if isinstance(spec, (list, tuple)):
        return [tuple(int(v) for v in t) for t in spec]

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            vals = [ev(e) for e in node.elts]
            return vals if isinstance(node, ast.List) else tuple(vals)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(f"unsupported syntax in conv_feature_layers: {ast.dump(node)}")

    try:
        layers = ev(ast.parse(spec, mode="eval"))
    except SyntaxError as e:
        raise ValueError(f"cannot parse conv_feature_layers {spec!r}: {e}") from e
    if not isinstance(layers, list) or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise ValueError(f"conv_feature_layers {spec!r} is not a list of (dim, kernel, stride)")
    return [tuple(int(v) for v in t) for t in layers]


def base_plus() -> WavLMConfig:
    """WavLM Base+ (microsoft/wavlm-base-plus): 12 layers, 768 dims, post-norm, GroupNorm extractor."""
    return WavLMConfig()


def large() -> WavLMConfig:
    """WavLM Large (microsoft/wavlm-large): 24 layers, 1024 dims, layer-norm-first, LayerNorm extractor."""
    return WavLMConfig(feat_extract_norm="layer", hidden_size=1024, num_hidden_layers=24,
                       num_attention_heads=16, intermediate_size=4096, do_stable_layer_norm=True,
                       normalize_waveform=True)


PRESETS = {"base_plus": base_plus, "large": large}
