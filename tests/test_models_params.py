"""Parameter counts of the reference shape, abstractly (jax.eval_shape: nothing is allocated)."""
import ast
import functools
import math
from pathlib import Path

import jax
import pytest
from flax import nnx

from configs import beat
from gesture_jax.models import build_denoiser

TSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "persona_gestor_state_dict.tsv"
BUFFERS = (".pe", ".running_mean", ".running_var", ".num_batches_tracked")


# Trainable parameters of the reference state dict at F = 75 (Trinity): model.* minus buffers and
# the final layer's alias of the motion decoder (see _tsv_trainable). Recorded here so the exact
# check runs without ../shared; the TSV test ties this constant to the file when it is present.
REFERENCE_PARAMS_F75 = 934_105_419


@functools.lru_cache(maxsize=None)
def _abstract_param_shapes(motion_dim: int, null_cond: bool = True,
                           depth: int | None = None) -> dict[str, tuple[int, ...]]:
    """{parameter path: shape} of the reference-shape denoiser (depth: blocks, None = the
    reference's), from nnx.eval_shape: no parameter memory is allocated.

    Cached: an abstract build of the full 934M model traces for seconds (more on a busy CPU),
    so each (motion_dim, null_cond) is built once per session."""
    cfg = beat.get_config()
    with cfg.unlocked():
        cfg.model.null_cond = null_cond
        if depth is not None:
            cfg.model.depth = depth
    model = nnx.eval_shape(lambda: build_denoiser(cfg.model, motion_dim, 768, 400, nnx.Rngs(0)))
    return {"/".join(map(str, path)): tuple(v.value.shape) for path, v in nnx.state(model, nnx.Param).flat_state()}


def _abstract_params(motion_dim: int, null_cond: bool = True) -> int:
    return sum(math.prod(s) for s in _abstract_param_shapes(motion_dim, null_cond).values())


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


def test_trinity_shape_has_the_exact_reference_count_without_the_tsv():
    """934,105,419 trainable parameters at F = 75 with model.null_cond=False, exactly.

    One full abstract build (null_cond=True, the default); null_cond=False is that model less
    its 1280-dim CFG null embedding, which a cheap 1-block build of both settings confirms is
    the only difference (so the 934M model is traced once, not twice)."""
    shapes = _abstract_param_shapes(75, null_cond=True)
    null = {k: v for k, v in shapes.items() if "null_cond" in k}
    assert list(null.values()) == [(1280,)], null
    assert _abstract_params(75, null_cond=True) - 1280 == REFERENCE_PARAMS_F75
    small_on, small_off = _abstract_param_shapes(75, True, 1), _abstract_param_shapes(75, False, 1)
    assert small_off == {k: v for k, v in small_on.items() if k not in null}


def test_trinity_shape_matches_reference_state_dict_exactly():
    """The recorded constant is the TSV's count (the model side is checked above)."""
    assert _tsv_trainable() == REFERENCE_PARAMS_F75
