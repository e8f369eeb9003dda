"""Persona-Gestor's network forward in PyTorch, reading the reference's state-dict names in
PyTorch's own layouts (Linear (out, in), Conv1d (out, in, k)): the parity reference for the
importer's name map and layout conversions (tests/test_pg_reference_map.py). Written from the
reference's structure (DESIGN.md, "The reference, in figures"; its TrinityEpsilonTheta and
Conformer modules): a swapped name, a missing transpose or a wrong split in our map changes the
numbers here and not in our model. Inference mode: no dropout, BatchNorm on running statistics.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x, sd, name, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps)


def _plain_ln(x, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], None, None, eps)


def _lin(x, sd, name, bias=True):
    return F.linear(x, sd[name + ".weight"], sd[name + ".bias"] if bias else None)


def _relative_shift(s):
    b, h, t1, t2 = s.shape
    padded = torch.cat([s.new_zeros(b, h, t1, 1), s], dim=-1).view(b, h, t2 + 1, t1)
    return padded[:, :, 1:].reshape(b, h, t1, t2)


def _rel_attention(x, sd, p, heads):
    b, t, d = x.shape
    dh = d // heads
    q = _lin(x, sd, p + "query_proj.linear").view(b, t, heads, dh)
    k = _lin(x, sd, p + "key_proj.linear").view(b, t, heads, dh).permute(0, 2, 1, 3)
    v = _lin(x, sd, p + "value_proj.linear").view(b, t, heads, dh).permute(0, 2, 1, 3)
    pe = sd[p.replace("attention.", "positional_encoding.pe")][:, :t].repeat(b, 1, 1)
    pos = _lin(pe, sd, p + "pos_proj.linear", bias=False).view(b, t, heads, dh)
    content = torch.matmul((q + sd[p + "u_bias"]).transpose(1, 2), k.transpose(2, 3))
    position = _relative_shift(torch.matmul((q + sd[p + "v_bias"]).transpose(1, 2), pos.permute(0, 2, 3, 1)))
    score = (content + position) / math.sqrt(d)
    mask = torch.ones(t, t, dtype=torch.bool).triu(0)             # the reference: self and future hidden
    attn = torch.softmax(score.masked_fill(mask, -1e9), dim=-1)
    ctx = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
    return _lin(ctx, sd, p + "out_proj.linear")


def _conv_module(x, sd, p):
    h = _ln(x, sd, p + "0").transpose(1, 2)                            # [B, D, T]
    h = F.conv1d(h, sd[p + "2.conv.weight"], sd[p + "2.conv.bias"])
    a, g = h.chunk(2, dim=1)
    h = a * g.sigmoid()                                                # GLU over channels
    w = sd[p + "4.conv.weight"]
    h = F.conv1d(F.pad(h, ((w.shape[-1] - 1) // 2,) * 2, mode="replicate"), w, groups=h.shape[1])
    h = F.batch_norm(h, sd[p + "5.running_mean"], sd[p + "5.running_var"], sd[p + "5.weight"], sd[p + "5.bias"],
                     training=False, eps=1e-5)
    h = h * h.sigmoid()                                                # Swish
    return F.conv1d(h, sd[p + "7.conv.weight"], sd[p + "7.conv.bias"]).transpose(1, 2)


def reference_forward(sd: dict, noisy, step, wavlm, table, *, heads: int, dilation: int = 2, stride: int = 2,
                      prefix: str = "model."):
    """sd: reference names -> torch tensors; noisy [B,T,F], step [B] long, wavlm [B,Ta,A] (Ta giving
    exactly T tokens and one style token), table [rows, width] -> output [B,T,F]."""
    P = prefix
    g = lambda n: sd[P + n]
    # fuzzy feature extractor: style token + down-sampler
    wt = wavlm.transpose(1, 2)
    style = F.conv1d(wt, g("style_encoder.1.weight"), g("style_encoder.1.bias"), dilation=dilation).transpose(1, 2)
    style = F.layer_norm(style, style.shape[-1:], g("style_encoder.3.weight"), g("style_encoder.3.bias"), 1e-5)
    assert style.shape[1] == 1, style.shape
    cond = F.conv1d((wavlm + style).transpose(1, 2), g("down_sampler.1.weight"), g("down_sampler.1.bias"),
                    stride=stride).transpose(1, 2)
    cond = F.leaky_relu(F.layer_norm(cond, cond.shape[-1:], g("down_sampler.3.weight"), g("down_sampler.3.bias"),
                                     1e-5), 0.2)
    t_emb = F.silu(F.linear(F.silu(F.linear(table[step], g("diffusion_embedding.projection1.weight"),
                                                  g("diffusion_embedding.projection1.bias"))),
                            g("diffusion_embedding.projection2.weight"), g("diffusion_embedding.projection2.bias")))
    c = t_emb[:, None] + cond
    # motion encoder: replicate-padded Conv1d k=3
    w = g("motion_encoder.net.0.sequential.1.weight")
    x = F.conv1d(F.pad(noisy.transpose(1, 2), ((w.shape[-1] - 1) // 2,) * 2, mode="replicate"), w,
                 g("motion_encoder.net.0.sequential.1.bias")).transpose(1, 2)
    i = 0
    while P + f"blocks.{i}.mlp.fc1.weight" in sd:
        b = P + f"blocks.{i}."
        mod = _lin(_ln(F.silu(c), sd, b + "adaLN_modulation.1"), sd, b + "adaLN_modulation.2")
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=2)
        m = _plain_ln(x) * (1 + sc1) + sh1
        h = m + _rel_attention(_ln(m, sd, b + "attn.0.module.layer_norm"), sd, b + "attn.0.module.attention.", heads)
        h = h + _conv_module(h, sd, b + "attn.1.module.sequential.")
        x = x + g1 * h
        y = _plain_ln(x) * (1 + sc2) + sh2
        x = x + g2 * _lin(F.gelu(_lin(y, sd, b + "mlp.fc1"), approximate="tanh"), sd, b + "mlp.fc2")
        i += 1
    shift, scale = _lin(F.silu(c), sd, P + "final_layer.adaLN_modulation.1").chunk(2, dim=2)
    x = _plain_ln(x) * (1 + scale) + shift
    return F.conv1d(x.transpose(1, 2), g("final_layer.output.net.1.weight"),
                    g("final_layer.output.net.1.bias")).transpose(1, 2)
