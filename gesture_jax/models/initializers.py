"""PyTorch-default parameter initializers, so a fresh model starts where the reference starts.

The reference (Persona-Gestor, PyTorch) never re-initializes its Linear/Conv layers except the
motion in/out convolutions (Kaiming normal) and the conformer attention projections (Xavier
uniform weights, zero biases). PyTorch's default for Linear/Conv is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both weight and bias; JAX's defaults differ
(LeCun normal weights, zero biases), which would change the early training dynamics.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.nn import initializers

Initializer = initializers.Initializer

# kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)) == variance_scaling(1/3, fan_in, uniform).
torch_weight_init: Initializer = initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# torch.nn.init.kaiming_normal_(mode="fan_in", nonlinearity="leaky_relu") with a=0: std = sqrt(2/fan_in).
kaiming_normal_init: Initializer = initializers.variance_scaling(2.0, "fan_in", "normal")
xavier_uniform_init: Initializer = initializers.xavier_uniform()
zeros_init: Initializer = initializers.zeros


def torch_bias_init(fan_in: int) -> Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's Linear/Conv bias default (fan_in = in * kernel)."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init
