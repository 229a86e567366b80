"""Fixture for NHWC conv2d, batch_norm2d and pooling (tests/test_ops_conv.cpp):
tests/data/ops_conv.safetensors.

PyTorch computes in NCHW with OIHW weights; the fixture stores mokd's layouts: activations NHWC
(permute(0, 2, 3, 1)) and conv weights OHWI (permute(0, 2, 3, 1)). Gradients come from torch
autograd of L = sum(y * r) with r stored as "<case>.r" (NHWC).

params: conv.<case> (kernel, stride, padding, groups, bias), bn (momentum, eps) and pool.<case>
(op max|avg; kernel, stride, padding as [h, w]; count_include_pad for avg) for every "<case>.y"."""
import torch
import torch.nn.functional as F

from ._common import randn, save

REQUIRES = ("torch", "numpy", "safetensors")


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def nchw(t):
    return t.permute(0, 3, 1, 2).contiguous()


# name: (N, H, W, C, O, k, stride, pad, groups, bias)
CONV_CASES = {
    "conv_s1_p1_bias": (2, 5, 7, 3, 4, 3, 1, 1, 1, True),
    "conv_s2_p0": (2, 5, 7, 3, 4, 3, 2, 0, 1, False),
    "conv_s2_p1_g2": (2, 6, 5, 4, 6, 3, 2, 1, 2, True),
    "conv_depthwise": (2, 5, 7, 3, 6, 3, 1, 1, 3, True),  # groups = C, channel multiplier 2
    "conv_1x1_g2": (2, 4, 3, 6, 4, 1, 1, 0, 2, True),     # the im2col-free path
    "conv_7x7_s2_p3": (1, 11, 9, 3, 5, 7, 2, 3, 1, False),  # a ResNet stem shape
}


BN_MOMENTUM, BN_EPS = 0.1, 1e-5
# name: (op, kernel, stride, padding, count_include_pad), [h, w] each (count_include_pad: avg only)
POOL_CASES = {
    "maxpool_k3s2p1": ("max", [3, 3], [2, 2], [1, 1], None),
    "maxpool_k2s2p0": ("max", [2, 2], [2, 2], [0, 0], None),
    "avgpool_k3s2p1": ("avg", [3, 3], [2, 2], [1, 1], True),
    "avgpool_k3s2p1_nopad": ("avg", [3, 3], [2, 2], [1, 1], False),
    "avgpool_k3x2s1p1x0": ("avg", [3, 2], [1, 2], [1, 0], True),
}


def generate(out_dir):
    t = {}
    seed = 100
    for name, (n, h, w, c, o, k, s, p, g, has_bias) in CONV_CASES.items():
        seed += 10
        x = randn(n, c, h, w, seed=seed).requires_grad_(True)
        wt = randn(o, c // g, k, k, seed=seed + 1, scale=0.3).requires_grad_(True)
        b = randn(o, seed=seed + 2).requires_grad_(True) if has_bias else None
        y = F.conv2d(x, wt, b, stride=s, padding=p, groups=g)
        r = randn(*y.shape, seed=seed + 3)
        (y * r).sum().backward()
        t[f"{name}.x"], t[f"{name}.w"] = nhwc(x), nhwc(wt)
        t[f"{name}.y"], t[f"{name}.r"] = nhwc(y), nhwc(r)
        t[f"{name}.gx"], t[f"{name}.gw"] = nhwc(x.grad), nhwc(wt.grad)
        if has_bias:
            t[f"{name}.b"], t[f"{name}.gb"] = b, b.grad

    # Batch norm, training: output, the updated running stats, and gradients through the batch
    # statistics. Non-zero mean and non-unit scale so that the statistics matter.
    n, c, h, w = 3, 5, 4, 3
    x = (randn(n, c, h, w, seed=200) * 2.0 + 0.7).requires_grad_(True)
    wt = (randn(c, seed=201) * 0.5 + 1.0).requires_grad_(True)
    b = randn(c, seed=202).requires_grad_(True)
    rm0, rv0 = randn(c, seed=203) * 0.1, randn(c, seed=204).abs() + 0.5
    rm, rv = rm0.clone(), rv0.clone()
    y = F.batch_norm(x, rm, rv, wt, b, training=True, momentum=BN_MOMENTUM, eps=BN_EPS)
    r = randn(*y.shape, seed=205)
    (y * r).sum().backward()
    t.update({"bn_train.x": nhwc(x), "bn_train.w": wt, "bn_train.b": b, "bn_train.rm0": rm0,
              "bn_train.rv0": rv0, "bn_train.y": nhwc(y), "bn_train.rm1": rm, "bn_train.rv1": rv,
              "bn_train.r": nhwc(r), "bn_train.gx": nhwc(x.grad), "bn_train.gw": wt.grad,
              "bn_train.gb": b.grad})

    # Batch norm, evaluation with bn_train's weight, bias and initial running stats (rm0, rv0).
    x = randn(2, c, 3, 5, seed=210) * 1.5 + 0.3
    y = F.batch_norm(x, rm0, rv0, wt.detach(), b.detach(), training=False, eps=BN_EPS)
    t.update({"bn_eval.x": nhwc(x), "bn_eval.y": nhwc(y)})

    # Pooling: distinct values (a permutation) so that max pooling has no ties.
    n, c, h, w = 2, 3, 7, 6
    x = torch.randperm(n * c * h * w, generator=torch.Generator().manual_seed(220)).float()
    x = (x / (n * c * h * w) - 0.5).reshape(n, c, h, w)
    t["pool.x"] = nhwc(x)
    for name, (op, k, st, pd, include_pad) in POOL_CASES.items():
        if op == "max":
            y = F.max_pool2d(x, k, stride=st, padding=pd)
        else:
            y = F.avg_pool2d(x, k, stride=st, padding=pd, count_include_pad=include_pad)
        t[f"{name}.y"] = nhwc(y)
    t["gap.y"] = x.mean((2, 3))
    params = {
        "conv": {name: {"kernel": k, "stride": s, "padding": p, "groups": g, "bias": b}
                 for name, (_, _, _, _, _, k, s, p, g, b) in CONV_CASES.items()},
        "bn": {"momentum": BN_MOMENTUM, "eps": BN_EPS},
        "pool": {name: {"op": op, "kernel": k, "stride": st, "padding": pd,
                        **({} if inc is None else {"count_include_pad": inc})}
                 for name, (op, k, st, pd, inc) in POOL_CASES.items()},
    }
    save(out_dir, "ops_conv", t, params)
