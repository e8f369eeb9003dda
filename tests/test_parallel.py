"""Mesh-shape parsing and sharding rules (pure logic: no extra devices needed)."""
from types import SimpleNamespace

import pytest
from jax.sharding import PartitionSpec as P

from gesture_jax.parallel import mesh as mesh_lib
from gesture_jax.parallel import sharding as shd


def test_parse_mesh_shape_fills_minus_one_and_defaults():
    assert mesh_lib.parse_mesh_shape("data:2,fsdp:2,tensor:2", 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert mesh_lib.parse_mesh_shape("data:-1,fsdp:2", 8) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert mesh_lib.parse_mesh_shape("fsdp:-1", 8) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert mesh_lib.parse_mesh_shape("data:-1,fsdp:1,tensor:1", 1) == {"data": 1, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize("spec,match", [
    ("data:3", "asks for 3 devices"), ("model:2", "NAME:SIZE with NAME in"), ("data:-1,fsdp:-1", "only one axis"),
    ("data:x", "not an integer"), ("data:-1,fsdp:3", "not divisible"), ("data:2,data:4", "given twice"),
])
def test_parse_mesh_shape_errors(spec, match):
    with pytest.raises(mesh_lib.MeshConfigError, match=match):
        mesh_lib.parse_mesh_shape(spec, 8)


def _mesh(data=1, fsdp=1, tensor=1):
    return SimpleNamespace(shape={"data": data, "fsdp": fsdp, "tensor": tensor})


def test_default_rules_shard_weights_and_replicate_small_or_1d():
    m = _mesh(2, 2, 2)
    rules = shd.DEFAULT_RULES
    # dense [in, out]: out over tensor, in over fsdp
    assert shd.spec_for("blocks/0/mlp/fc1/kernel", (1280, 5120), m, rules) == P("fsdp", "tensor")
    # conv [k, in, out]: largest remaining dim (in) over fsdp
    assert shd.spec_for("fuzzy/down_conv/kernel", (201, 768, 1280), m, rules) == P(None, "fsdp", "tensor")
    assert shd.spec_for("blocks/0/mlp/fc1/bias", (5120,), m, rules) == P()
    assert shd.spec_for("blocks/0/mlp/fc1/kernel", (16, 16), m, rules, min_size=1024) == P()
    # optimizer moments share the parameter's placement (path suffix)
    assert shd.spec_for("opt_state/1/0/mu/blocks/0/mlp/fc1/kernel", (1280, 5120), m, rules) == P("fsdp", "tensor")


def test_axes_that_do_not_divide_are_dropped():
    m = _mesh(1, 4, 2)
    rules = shd.DEFAULT_RULES
    # 75 output features (Trinity motion): not divisible by tensor=2 -> fsdp takes the input dim
    assert shd.spec_for("final/out/kernel", (1280, 75), m, rules) == P("fsdp")
    # 3 x 5: nothing divides
    assert shd.spec_for("x/kernel", (3, 5), m, rules) == P()
    explicit = [(r"kernel$", "-,fsdp+tensor")]
    assert shd.spec_for("a/kernel", (6, 8), m, explicit) == P(None, ("fsdp", "tensor"))
    assert shd.spec_for("a/kernel", (6, 6), m, explicit) == P()


def test_bad_rules_are_reported():
    with pytest.raises(shd.ShardingRuleError, match="unknown mesh axis"):
        shd.spec_for("a/kernel", (4, 4), _mesh(), [(r".*", "fsdp,model")])
    with pytest.raises(shd.ShardingRuleError, match="2 entries"):
        shd.spec_for("a/kernel", (4, 4, 4), _mesh(), [(r".*", "fsdp,tensor")])
    with pytest.raises(shd.ShardingRuleError, match="bad regex"):
        shd.rules_from_config({"rules": [("(", "fsdp")]})
