"""Fixture for tests/test_ops_attention.cpp: tests/data/ops_attention.safetensors.

F.scaled_dot_product_attention, B=2 H=3 N=7 D=4 (odd N), and B=1 H=1 N=197 D=64 (a ViT token
count), each with scale 1 / sqrt(D) (params: small.scale, vit.scale). The N=197 inputs are
rounded to bf16 and stored as bf16 (exact when read back as f32) to keep the file small; the
reference output is computed from the rounded values.
"""
import math

import torch
import torch.nn.functional as F

from ._common import randn, save

REQUIRES = ("torch", "numpy", "safetensors")


def generate(out_dir):
    t = {}
    small_scale, vit_scale = 1 / math.sqrt(4), 1 / math.sqrt(64)
    q, k, v = (randn(2, 3, 7, 4, seed=s) for s in (10, 11, 12))
    t["small_q"], t["small_k"], t["small_v"] = q, k, v
    t["small_out"] = F.scaled_dot_product_attention(q, k, v, scale=small_scale)

    q, k, v = (randn(1, 1, 197, 64, seed=s).to(torch.bfloat16) for s in (13, 14, 15))
    t["vit_q"], t["vit_k"], t["vit_v"] = q, k, v
    t["vit_out"] = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=vit_scale)
    save(out_dir, "ops_attention", t, {"small": {"scale": small_scale}, "vit": {"scale": vit_scale}})
