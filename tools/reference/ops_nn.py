"""Fixture for the softmax family and layer norm (tests/test_ops_nn.cpp):
tests/data/ops_nn.safetensors.

Inputs are f32; references are computed by PyTorch in f64 from those f32 inputs and stored as f32,
so the C++ f32 results are compared against values more accurate than an f32 PyTorch run.
Layer norm eps: params ln.eps.
"""
import torch
import torch.nn.functional as F

from ._common import as_double_leaf as _d, as_float as _f, randn, save

REQUIRES = ("torch", "numpy", "safetensors")
LN_EPS = 1e-5


def generate(out_dir):
    t = {}
    # softmax / log_softmax: odd sizes, last dim and dim 0; a row with huge values checks the
    # max subtraction.
    x = randn(5, 7, seed=1, scale=3.0)
    x[2] *= 300.0
    t["softmax_x"] = x
    xd = x.double()
    t["softmax_last"] = _f(torch.softmax(xd, -1))
    t["log_softmax_last"] = _f(torch.log_softmax(xd, -1))
    t["softmax_dim0"] = _f(torch.softmax(xd, 0))
    t["log_softmax_dim0"] = _f(torch.log_softmax(xd, 0))
    # logsumexp over [3, 4, 5]
    y = randn(3, 4, 5, seed=2, scale=2.0)
    t["lse_x"] = y
    yd = y.double()
    t["lse_last"] = _f(torch.logsumexp(yd, -1))
    t["lse_dim1_keep"] = _f(torch.logsumexp(yd, 1, keepdim=True))
    t["lse_dim0"] = _f(torch.logsumexp(yd, 0))
    # layer norm over an odd last dim, with and without affine; gradients for an upstream gy
    z = randn(2, 3, 9, seed=3, scale=2.0) + 1.5
    w = randn(9, seed=4) * 0.5 + 1.0
    b = randn(9, seed=5) * 0.5
    gy = randn(2, 3, 9, seed=6)
    t.update(ln_x=z, ln_w=w, ln_b=b, ln_gy=gy)
    zd, wd, bd = _d(z), _d(w), _d(b)
    out = F.layer_norm(zd, (9,), wd, bd, eps=LN_EPS)
    out.backward(gy.double())
    t.update(ln_y_affine=_f(out), ln_gx_affine=_f(zd.grad), ln_gw=_f(wd.grad), ln_gb=_f(bd.grad))
    zd = _d(z)
    out = F.layer_norm(zd, (9,), None, None, eps=LN_EPS)
    out.backward(gy.double())
    t.update(ln_y_plain=_f(out), ln_gx_plain=_f(zd.grad))
    save(out_dir, "ops_nn", t, {"ln": {"eps": LN_EPS}})

