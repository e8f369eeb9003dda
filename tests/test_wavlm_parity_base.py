"""Full WavLM Base+ shape (768 dims, 12 layers, 512-ch GroupNorm extractor, 128-tap pos conv):
every hidden state of the Flax port within 1e-4 of transformers' PyTorch WavLMModel
(random weights) on 3 s of real speech."""
from gesture_jax.audio.wavlm import base_plus
from wavlm_testlib import flax_from_hf, max_hidden_diff, random_hf_model, speech


def test_base_plus_shape_matches_torch_on_every_hidden_state():
    cfg = base_plus()
    hf = random_hf_model(cfg, seed=0)
    diffs = max_hidden_diff(hf, flax_from_hf(hf, cfg), speech(3.0))
    assert len(diffs) == 14  # 13 hidden states + last_hidden_state
    assert max(diffs) < 1e-4, diffs
