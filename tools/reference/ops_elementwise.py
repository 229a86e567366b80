"""Fixture for elementwise, reduction and shape ops, and bf16 rounding (tests/test_ops_elementwise.cpp,
tests/test_tensor.cpp): tests/data/ops_elementwise.safetensors."""
import torch
import torch.nn.functional as F

from ._common import randn, save

REQUIRES = ("torch", "numpy", "safetensors")


def generate(out_dir):
    t = {}
    a = randn(3, 1, 5, seed=1)
    b = randn(4, 5, seed=2)
    pos = randn(2, 7, seed=3).abs() + 0.5
    x = randn(2, 7, seed=4)
    t["a"], t["b"], t["pos"], t["x"] = a, b, pos, x
    t["add"], t["sub"], t["mul"] = a + b, a - b, a * b
    t["div"] = a / (b.abs() + 0.5)
    t["exp"], t["log"], t["sqrt"] = x.exp(), pos.log(), pos.sqrt()
    t["gelu"] = F.gelu(x)  # erf form, as nn.GELU
    t["relu"], t["abs"], t["square"] = F.relu(x), x.abs(), x * x
    r = randn(2, 3, 4, seed=5)
    t["r"] = r
    t["sum_1"] = r.sum(1)
    t["mean_02_keep"] = r.mean((0, 2), keepdim=True)
    t["sum_all"] = r.sum()
    t["permute_201"] = r.permute(2, 0, 1).contiguous()
    t["narrow_2_1_2"] = r.narrow(2, 1, 2).contiguous()
    t["concat_1"] = torch.cat([r, r[:, :2] * 2], dim=1)
    # bf16: values near rounding boundaries, denormals, large magnitudes.
    xs = torch.cat([randn(256, seed=6) * 10, torch.tensor([1.00390625, 1.01171875, -1.00390625,
                    3.0e38, 1e-40, -0.0, 65504.0, 1.0 + 2**-7 + 2**-9])]).float()
    t["bf16.input"] = xs
    t["bf16.rounded"] = xs.to(torch.bfloat16).float()
    save(out_dir, "ops_elementwise", t)
