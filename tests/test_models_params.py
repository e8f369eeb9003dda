"""Parameter counts of the reference shape, abstractly (jax.eval_shape: nothing is allocated)."""
import ast
import math
from pathlib import Path

import jax
import pytest
from flax import nnx

from configs import beat
from gesture_jax.models import build_denoiser

TSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "persona_gestor_state_dict.tsv"
BUFFERS = (".pe", ".running_mean", ".running_var", ".num_batches_tracked")


def _abstract_params(motion_dim: int, null_cond: bool = True) -> int:
    cfg = beat.get_config()
    with cfg.unlocked():
        cfg.model.null_cond = null_cond
    model = nnx.eval_shape(lambda: build_denoiser(cfg.model, motion_dim, 768, 400, nnx.Rngs(0)))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _tsv_trainable() -> int:
    """Trainable reference parameters: model.* minus buffers, minus the final layer's alias of the motion decoder."""
    if not TSV.exists():
        pytest.skip(f"{TSV} is absent")
    total = 0
    for line in TSV.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split("\t")
        if not name.startswith("model.") or name.endswith(BUFFERS):
            continue
        if name.startswith("model.final_layer.output."):  # same module object as model.motion_decoder
            continue
        total += math.prod(ast.literal_eval(shape))
    return total


def test_beat_reference_shape_has_934m_params():
    n = _abstract_params(156)
    assert abs(n - 934e6) <= 2e6, n


def test_trinity_shape_matches_reference_state_dict_exactly():
    expected = _tsv_trainable()
    assert expected == 934_105_419
    assert _abstract_params(75, null_cond=False) == expected
    assert _abstract_params(75, null_cond=True) == expected + 1280  # + the CFG null embedding
