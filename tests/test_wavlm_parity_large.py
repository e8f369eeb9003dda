"""WavLM Large shape (1024 dims, 16 heads, 4096 FFN, layer-norm-first, LayerNorm after every
conv, 512-ch extractor) at reduced depth: Flax == transformers within 1e-4 on 3 s of speech.
Depth does not change the code path beyond layer 1 (layer 0 owns the position embedding)."""
from gesture_jax.audio.wavlm import large
from gesture_jax.audio.wavlm.config import WavLMConfig
from wavlm_testlib import flax_from_hf, max_hidden_diff, random_hf_model, speech


def test_large_shape_reduced_depth_matches_torch():
    full = large()
    assert full.do_stable_layer_norm and full.feat_extract_norm == "layer" and full.num_hidden_layers == 24
    cfg = WavLMConfig(**{**full.to_dict(), "num_hidden_layers": 3})
    hf = random_hf_model(cfg, seed=0)
    diffs = max_hidden_diff(hf, flax_from_hf(hf, cfg), speech(3.0))
    assert len(diffs) == 5
    # last_hidden_state carries the encoder's final LayerNorm; hidden_states[-1] does not (transformers 5).
    assert max(diffs) < 1e-4, diffs
