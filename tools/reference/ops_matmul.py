"""Fixtures for tests/test_ops_matmul.cpp and tests/test_ops_attention.cpp.

ops_matmul.safetensors:    torch.matmul (rank 2 odd sizes, rank 4 batched, shared rank-2 b),
                           F.linear (with and without bias, 3-D input).
ops_attention.safetensors: F.scaled_dot_product_attention, B=2 H=3 N=7 D=4 (odd N), and
                           B=1 H=1 N=197 D=64 (a ViT token count). The N=197 inputs are rounded
                           to bf16 and stored as bf16 (exact when read back as f32) to keep the
                           file small; the reference output is computed from the rounded values.
"""
import math

import torch
import torch.nn.functional as F

from ._common import randn, save


def generate(out_dir):
    t = {}
    a = randn(3, 5, seed=1)
    b = randn(5, 7, seed=2)
    t["mm2_a"], t["mm2_b"], t["mm2_out"] = a, b, torch.matmul(a, b)

    a = randn(2, 3, 4, 5, seed=3)
    b = randn(2, 3, 5, 6, seed=4)
    t["mm4_a"], t["mm4_b"], t["mm4_out"] = a, b, torch.matmul(a, b)

    a = randn(2, 4, 5, seed=5)
    b = randn(5, 3, seed=6)
    t["mmshared_a"], t["mmshared_b"], t["mmshared_out"] = a, b, torch.matmul(a, b)

    x = randn(2, 5, 6, seed=7)
    w = randn(4, 6, seed=8)
    bias = randn(4, seed=9)
    t["lin_x"], t["lin_w"], t["lin_b"] = x, w, bias
    t["lin_out"] = F.linear(x, w, bias)
    t["lin_nobias_out"] = F.linear(x, w)
    save(out_dir, "ops_matmul", t)

    t = {}
    q, k, v = (randn(2, 3, 7, 4, seed=s) for s in (10, 11, 12))
    t["small_q"], t["small_k"], t["small_v"] = q, k, v
    t["small_out"] = F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(4))

    q, k, v = (randn(1, 1, 197, 64, seed=s).to(torch.bfloat16) for s in (13, 14, 15))
    t["vit_q"], t["vit_k"], t["vit_v"] = q, k, v
    t["vit_out"] = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                  scale=1 / math.sqrt(64))
    save(out_dir, "ops_attention", t)
