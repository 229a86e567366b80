"""Fixtures for the softmax family, layer norm and the losses (tests/test_ops_nn.cpp and
tests/test_ops_loss.cpp).

Inputs are f32; references are computed by PyTorch in f64 from those f32 inputs and stored as f32,
so the C++ f32 results are compared against values more accurate than an f32 PyTorch run.
Writes tests/data/ops_nn.safetensors and tests/data/ops_loss.safetensors.
"""
import torch
import torch.nn.functional as F

from ._common import gen, randn, save


def _d(t):
    return t.detach().double().requires_grad_(True)


def _f(t):
    return t.detach().float()


def _nn(out_dir):
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
    out = F.layer_norm(zd, (9,), wd, bd, eps=1e-5)
    out.backward(gy.double())
    t.update(ln_y_affine=_f(out), ln_gx_affine=_f(zd.grad), ln_gw=_f(wd.grad), ln_gb=_f(bd.grad))
    zd = _d(z)
    out = F.layer_norm(zd, (9,), None, None, eps=1e-5)
    out.backward(gy.double())
    t.update(ln_y_plain=_f(out), ln_gx_plain=_f(zd.grad))
    save(out_dir, "ops_nn", t)


def _loss(out_dir):
    t = {}
    B, C = 6, 5
    logits = randn(B, C, seed=10, scale=2.0)
    labels = torch.randint(0, C, (B,), generator=gen(11))
    t.update(ce_logits=logits, ce_labels=labels)
    for name, s in (("ce", 0.0), ("ce_ls", 0.1)):
        xd = _d(logits)
        loss = F.cross_entropy(xd, labels, label_smoothing=s)
        loss.backward()
        t[f"{name}_loss"] = _f(loss)
        t[f"{name}_grad"] = _f(xd.grad)

    probs = torch.softmax(randn(B, C, seed=12, scale=1.5), -1)
    t["soft_probs"] = probs
    xd, pd = _d(logits), _d(probs)
    loss = F.cross_entropy(xd, pd)  # probabilities as targets
    loss.backward()
    t.update(soft_loss=_f(loss), soft_grad_logits=_f(xd.grad), soft_grad_probs=_f(pd.grad))

    student = randn(B, C, seed=13, scale=2.0)
    teacher = randn(B, C, seed=14, scale=3.0)
    t.update(kl_student=student, kl_teacher=teacher)
    for T in (1, 4):
        sd = _d(student)
        td = teacher.double()
        loss = F.kl_div(F.log_softmax(sd / T, -1), F.softmax(td / T, -1),
                        reduction="batchmean") * T * T
        loss.backward()
        t[f"kl_T{T}_loss"] = _f(loss)
        t[f"kl_T{T}_grad"] = _f(sd.grad)

    # smooth-L1 with beta 0.5: |a - b| falls on both sides of beta
    a = randn(4, 7, seed=15)
    b = randn(4, 7, seed=16)
    t.update(sl1_a=a, sl1_b=b)
    ad, bd = _d(a), _d(b)
    loss = F.smooth_l1_loss(ad, bd, beta=0.5)
    loss.backward()
    t.update(sl1_loss=_f(loss), sl1_grad_a=_f(ad.grad), sl1_grad_b=_f(bd.grad))
    diff = (a - b).abs()
    assert (diff < 0.5).any() and (diff > 0.5).any()

    ad, bd = _d(a), _d(b)
    loss = F.mse_loss(ad, bd)
    loss.backward()
    t.update(mse_loss=_f(loss), mse_grad_a=_f(ad.grad), mse_grad_b=_f(bd.grad))
    save(out_dir, "ops_loss", t)


def generate(out_dir):
    _nn(out_dir)
    _loss(out_dir)
