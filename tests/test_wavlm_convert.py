"""Weight conversion: Microsoft's original WavLM-*.pt layout, local transformers directories,
the Hub code path, Orbax round trip, and clear errors (data_prep/convert_wavlm.py)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from data_prep import convert_wavlm
from gesture_jax.audio.wavlm import base_plus
from gesture_jax.audio.wavlm.checkpoint import CheckpointError, load_checkpoint, load_config
from gesture_jax.audio.wavlm.config import WavLMConfig, parse_conv_feature_layers
from gesture_jax.audio.wavlm.convert import (ConversionError, _to_numpy, load_source, transformers_to_flax,
                                             unilm_to_transformers)
from wavlm_testlib import max_hidden_diff, random_hf_model, speech, tiny_config

TSV = REPO.parent / "shared" / "reference" / "wavlm_unilm_state_dict.tsv"


def to_unilm_key(key: str, layer_norm_extractor: bool) -> str:
    """transformers WavLMModel name -> name in Microsoft's original checkpoint (the TSV's layout)."""
    rules = [
        (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
        (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)",
         r"feature_extractor.conv_layers.\1.2.1.\2" if layer_norm_extractor else r"feature_extractor.conv_layers.\1.2.\2"),
        (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
        (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
        (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
        (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
        (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
        (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const", r"encoder.layers.\1.self_attn.grep_a"),
        (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.(weight|bias)", r"encoder.layers.\1.self_attn.grep_linear.\2"),
        (r"encoder\.layers\.(\d+)\.attention\.rel_attn_embed\.weight",
         r"encoder.layers.\1.self_attn.relative_attention_bias.weight"),
        (r"encoder\.layers\.(\d+)\.attention\.(\w+_proj)\.(weight|bias)", r"encoder.layers.\1.self_attn.\2.\3"),
        (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
        (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", r"encoder.layers.\1.fc1.\2"),
        (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
        (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
        (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    ]
    for pat, rep in rules:
        if re.fullmatch(pat, key):
            return re.sub(pat, rep, key)
    raise KeyError(key)


def unilm_cfg(cfg: WavLMConfig) -> dict:
    """The `cfg` dict of an original checkpoint describing `cfg` (plus training-only fields)."""
    layers = " + ".join(f"[({d},{k},{s})]" for d, k, s in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride))
    return {
        "extractor_mode": "layer_norm" if cfg.feat_extract_norm == "layer" else "default",
        "encoder_layers": cfg.num_hidden_layers, "encoder_embed_dim": cfg.hidden_size,
        "encoder_ffn_embed_dim": cfg.intermediate_size, "encoder_attention_heads": cfg.num_attention_heads,
        "activation_fn": "gelu", "layer_norm_first": cfg.do_stable_layer_norm, "conv_feature_layers": layers,
        "conv_bias": cfg.conv_bias, "conv_pos": cfg.num_conv_pos_embeddings,
        "conv_pos_groups": cfg.num_conv_pos_embedding_groups, "relative_position_embedding": True,
        "num_buckets": cfg.num_buckets, "max_distance": cfg.max_bucket_distance, "gru_rel_pos": True,
        "normalize": cfg.normalize_waveform, "dropout": 0.1, "attention_dropout": 0.1, "encoder_layerdrop": 0.05,
        "mask_prob": 0.65, "feature_grad_mult": 0.1,
    }


def save_unilm(hf, cfg: WavLMConfig, path: Path) -> None:
    import torch

    sd = {to_unilm_key(k, cfg.feat_extract_norm == "layer"): v for k, v in hf.state_dict().items()
          if k != "masked_spec_embed"}
    sd["mask_emb"] = torch.zeros(cfg.hidden_size)  # present in the real files, unused at inference
    torch.save({"cfg": unilm_cfg(cfg), "model": sd}, path)


def assert_same_tree(a, b):
    import jax

    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (p, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(p))


def flax_params(model):
    from flax import nnx

    return nnx.to_pure_dict(nnx.state(model))


def test_unilm_checkpoint_converts_and_matches_torch(tmp_path, capsys):
    cfg = tiny_config(num_hidden_layers=2)
    hf = random_hf_model(cfg, seed=5)
    src = tmp_path / "WavLM-Tiny.pt"
    save_unilm(hf, cfg, src)
    out = tmp_path / "ckpt"
    assert convert_wavlm.main([f"--source={src}", f"--out={out}"]) == 0
    assert "from unilm_pt" in capsys.readouterr().out
    assert load_config(out) == cfg
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["kind"] == "unilm_pt" and meta["num_params"] == sum(
        p.numel() for n, p in hf.named_parameters() if n != "masked_spec_embed")
    model = load_checkpoint(out)
    diffs = max_hidden_diff(hf, model, speech(2.0))
    assert max(diffs) < 1e-4, diffs


def test_unilm_layer_norm_extractor_maps_like_transformers(tmp_path):
    cfg = tiny_config(num_hidden_layers=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                      normalize_waveform=True)
    hf = random_hf_model(cfg, seed=6)
    src = tmp_path / "WavLM-LargeTiny.pt"
    save_unilm(hf, cfg, src)
    got_cfg, sd, kind = load_source(str(src))
    assert kind == "unilm_pt" and got_cfg == cfg
    assert_same_tree(transformers_to_flax(sd, cfg), transformers_to_flax(_to_numpy(hf.state_dict()), cfg))


def test_unilm_names_of_the_reference_tsv_are_all_mapped():
    """Every tensor name of the real WavLM-Base+.pt (listed in the TSV) maps onto transformers'
    WavLMModel names, one to one, for the Base+ config built from the TSV's cfg description."""
    import torch
    from transformers import WavLMConfig as HFConfig
    from transformers import WavLMModel

    if not TSV.exists():
        pytest.skip(f"{TSV} is absent")
    rows = [l.split("\t") for l in TSV.read_text().splitlines() if l and not l.startswith("#")]
    names = {r[0]: tuple(int(x) for x in r[1].strip("()").split(",") if x.strip()) for r in rows}
    # The TSV lists layers 0-1 in full; layers 2-11 repeat layer 1's names.
    for key in [k for k in names if k.startswith("encoder.layers.1.")]:
        for i in range(2, 12):
            names[key.replace("encoder.layers.1.", f"encoder.layers.{i}.")] = names[key]
    cfg = WavLMConfig.from_unilm_cfg({"extractor_mode": "default", "encoder_layers": 12, "layer_norm_first": False})
    assert cfg == base_plus()
    renamed = unilm_to_transformers({k: np.zeros(0) for k in names}, cfg)
    with torch.device("meta"):
        hf = WavLMModel(HFConfig(**cfg.to_transformers_dict()))
    expected = {k.replace("parametrizations.weight.original0", "weight_g")
                 .replace("parametrizations.weight.original1", "weight_v"): tuple(v.shape)
                for k, v in hf.state_dict().items() if k != "masked_spec_embed"}
    assert set(renamed) == set(expected)
    back = {v: k for k, v in ((k, to_unilm_key(k.replace("weight_g", "parametrizations.weight.original0")
                                                .replace("weight_v", "parametrizations.weight.original1"), False))
                              for k in expected)}
    for unilm_name, shape in names.items():
        if unilm_name != "mask_emb":
            assert expected[back[unilm_name]] == shape, unilm_name


def test_transformers_directory_safetensors_and_bin(tmp_path):
    import torch

    cfg = tiny_config(num_hidden_layers=2)
    hf = random_hf_model(cfg, seed=7)
    want = transformers_to_flax(_to_numpy(hf.state_dict()), cfg)

    st_dir = tmp_path / "hf_safetensors"
    hf.save_pretrained(st_dir)
    assert (st_dir / "model.safetensors").exists()
    out = tmp_path / "ckpt_st"
    assert convert_wavlm.main([f"--source={st_dir}", f"--out={out}"]) == 0
    assert_same_tree(flax_params(load_checkpoint(out)), want)

    # pytorch_model.bin with the pre-parametrization weight-norm names and a task-head prefix.
    bin_dir = tmp_path / "hf_bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((st_dir / "config.json").read_text())
    (bin_dir / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    sd = {("wavlm." + k).replace("parametrizations.weight.original0", "weight_g")
          .replace("parametrizations.weight.original1", "weight_v"): v for k, v in hf.state_dict().items()}
    sd["lm_head.weight"] = torch.zeros(4, cfg.hidden_size)
    torch.save(sd, bin_dir / "pytorch_model.bin")
    got_cfg, got_sd, kind = load_source(str(bin_dir))
    assert kind == "transformers_dir" and got_cfg.normalize_waveform
    assert_same_tree(transformers_to_flax(got_sd, got_cfg), want)


def test_hub_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    """No network here: the download is replaced by a local folder; the rest of the path is real."""
    import huggingface_hub

    cfg = tiny_config(num_hidden_layers=1)
    hf = random_hf_model(cfg, seed=8)
    hf.save_pretrained(tmp_path / "snapshot")
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    got_cfg, sd, kind = load_source("microsoft/wavlm-tiny-test")
    assert kind == "hub" and calls[0][0] == "microsoft/wavlm-tiny-test" and "config.json" in calls[0][1]
    assert_same_tree(transformers_to_flax(sd, got_cfg), transformers_to_flax(_to_numpy(hf.state_dict()), cfg))

    def offline(repo_id, **kw):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConversionError, match="cannot download 'microsoft/wavlm-base-plus'.*local directory"):
        load_source("microsoft/wavlm-base-plus")


def test_errors_are_clear(tmp_path, capsys):
    import torch

    assert convert_wavlm.main([f"--source={tmp_path / 'nope.pt'}", f"--out={tmp_path / 'o'}"]) == 2
    assert "no such file or directory" in capsys.readouterr().err

    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}}, bad)
    assert convert_wavlm.main([f"--source={bad}", f"--out={tmp_path / 'o'}"]) == 2
    assert "expected keys 'cfg' and 'model'" in capsys.readouterr().err

    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    with pytest.raises(ConversionError, match="no config.json"):
        load_source(str(empty_dir))

    cfg = tiny_config(num_hidden_layers=1)
    sd = _to_numpy(random_hf_model(cfg).state_dict())
    wrong = WavLMConfig(**{**cfg.to_dict(), "hidden_size": 64})
    with pytest.raises(ConversionError, match="shape"):
        transformers_to_flax(sd, wrong)
    del sd["encoder.layers.0.attention.rel_attn_embed.weight"]
    with pytest.raises(ConversionError, match="missing parameter 'encoder.layers.0.attention.rel_attn_embed.weight'"):
        transformers_to_flax(sd, cfg)

    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "not_converted")


def test_conv_feature_layers_parser_is_safe():
    assert parse_conv_feature_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    with pytest.raises(ValueError):
        parse_conv_feature_layers("__import__('os').system('true')")
