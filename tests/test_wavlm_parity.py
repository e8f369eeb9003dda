"""Flax WavLM == transformers' PyTorch WavLMModel (random weights, real speech), small shapes.

The full Base+ shape is in test_wavlm_parity_base.py and the Large shape in
test_wavlm_parity_large.py (separate files keep each under a minute on a shared CPU).
"""
import numpy as np
import pytest

from gesture_jax.audio.wavlm.model import jitted_forward, relative_position_buckets
from wavlm_testlib import flax_from_hf, max_hidden_diff, random_hf_model, speech, tiny_config

TOL = 1e-4


@pytest.fixture(scope="module")
def wave3s():
    return speech(3.0)


def test_tiny_post_norm_group_extractor_matches_torch(wave3s):
    cfg = tiny_config()  # Base+ variant: GroupNorm extractor, post-norm layers
    hf = random_hf_model(cfg, seed=1)
    model = flax_from_hf(hf, cfg)
    diffs = max_hidden_diff(hf, model, wave3s)
    assert max(diffs) < TOL, diffs

    # Feature extraction of layer L runs only L layers and gives the same numbers.
    full = jitted_forward(model, output_hidden_states=True)(wave3s[None])
    part = jitted_forward(model, output_hidden_states=True, num_layers=2)(wave3s[None])
    assert len(part.hidden_states) == 3
    for x, y in zip(full.hidden_states[:3], part.hidden_states):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(part.last_hidden_state), np.asarray(part.hidden_states[2]))


def test_tiny_layer_norm_first_layer_extractor_conv_bias_matches_torch(wave3s):
    cfg = tiny_config(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                      num_conv_pos_embeddings=15, hidden_act="gelu_new")  # odd pos kernel: no frame dropped
    hf = random_hf_model(cfg, seed=2)
    diffs = max_hidden_diff(hf, flax_from_hf(hf, cfg), wave3s)
    assert max(diffs) < TOL, diffs


@pytest.mark.parametrize("num_buckets,max_distance", [(320, 800), (64, 128)])
def test_relative_position_buckets_match_torch(num_buckets, max_distance):
    import torch
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    att = WavLMAttention(8, 2, num_buckets=num_buckets, max_distance=max_distance)
    length = 3000
    rel = torch.arange(-(length - 1), length)
    ref = att._relative_positions_bucket(rel).numpy()
    np.testing.assert_array_equal(relative_position_buckets(length, num_buckets, max_distance), ref)


def test_shorter_than_one_frame_is_rejected():
    from flax import nnx

    from gesture_jax.audio.wavlm import WavLM

    model = nnx.eval_shape(lambda: WavLM(tiny_config(num_hidden_layers=1), nnx.Rngs(0)))
    with pytest.raises(ValueError, match="shorter than one encoder frame"):
        model(np.zeros((1, 399), np.float32))
