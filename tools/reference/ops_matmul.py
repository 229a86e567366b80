"""Fixture for tests/test_ops_matmul.cpp: tests/data/ops_matmul.safetensors.

torch.matmul (rank 2 odd sizes, rank 4 batched, shared rank-2 b), F.linear (with and without
bias, 3-D input).
"""
import torch
import torch.nn.functional as F

from ._common import randn, save

REQUIRES = ("torch", "numpy", "safetensors")


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
