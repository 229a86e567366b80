"""Files written by safetensors.torch for the reader's tests (tests/test_safetensors.cpp).

safetensors_torch.safetensors           F32, BF16, F16, F64, I64, I32, empty and 0-d tensors + metadata
safetensors_torch_expected.safetensors  the same values converted by torch: floats as F32 (bf16/f16 ->
                                        f32 is exact, f64 -> f32 rounds to nearest), integers as they
                                        are, and <name>_as_bf16 = torch's f32/f64 -> bf16 rounding
safetensors_torch_nonfinite.safetensors NaN/Inf in F32, F16, BF16 (rejected unless allow_non_finite)
All three are safetensors.torch's bytes (_common.save only sorts their __metadata__).
"""
import torch

from ._common import randn, save

REQUIRES = ("torch", "numpy", "safetensors")


def _finite_f16_sweep():
    # Every 29th f16 bit pattern (all exponents, subnormals included) plus the edges, finite only.
    bits = list(range(0, 1 << 16, 29)) + [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00]
    bits = [b for b in bits if (b >> 10) & 0x1F != 0x1F]
    return torch.tensor(bits, dtype=torch.int32).to(torch.int16).view(torch.float16)


def _finite_bf16_sweep():
    bits = list(range(0, 1 << 16, 31)) + [0x0001, 0x8001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x3F80]
    bits = [b for b in bits if (b >> 7) & 0xFF != 0xFF]
    return torch.tensor(bits, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)


def generate(out_dir):
    f32 = torch.cat([randn(15, seed=1, scale=3.0),
                     torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38])])
    f64 = torch.cat([randn(9, seed=2, scale=1e3).double() / 7.0,
                     torch.tensor([1e-300, -1e-46, 0.1, 3.4028235e38, -3.4028234663852886e38], dtype=torch.float64)])
    tensors = {
        "f32": f32.reshape(2, 11),
        "bf16": _finite_bf16_sweep(),
        "bf16_matrix": (randn(3, 4, seed=3) * 10).to(torch.bfloat16),
        "f16": _finite_f16_sweep(),
        "f64": f64,
        "i64": torch.tensor([[0, -1, 2**40, -(2**62)], [2**63 - 1, -(2**63), 5, 7]], dtype=torch.int64),
        "i32": torch.tensor([1, -2, 2**31 - 1, -(2**31)], dtype=torch.int32),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(-2.75),
        "layer.0.weight": randn(3, 5, seed=4),
    }
    save(out_dir, "safetensors_torch", tensors,
         extra_metadata={"format": "pt", "writer": "safetensors.torch", "unicode": "\u00e9\u4e2d"})

    expected = {}
    for name, t in tensors.items():
        expected[name] = t.float() if t.is_floating_point() else t
    expected["f32_as_bf16"] = tensors["f32"].to(torch.bfloat16)
    expected["f64_as_bf16"] = tensors["f64"].to(torch.bfloat16)
    expected["f16_as_bf16"] = tensors["f16"].to(torch.bfloat16)
    save(out_dir, "safetensors_torch_expected", expected)

    nan, inf = float("nan"), float("inf")
    save(out_dir, "safetensors_torch_nonfinite", {
        "a_f32": torch.tensor([1.0, 2.0, nan, 4.0]),
        "b_f16": torch.tensor([0.5, -inf, inf, nan], dtype=torch.float16),
        "c_bf16": torch.tensor([nan, 2.0], dtype=torch.bfloat16),
    })
