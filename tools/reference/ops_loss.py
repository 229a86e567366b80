"""Fixture for the losses (tests/test_ops_loss.cpp): tests/data/ops_loss.safetensors.

Inputs are f32; references are computed by PyTorch in f64 from those f32 inputs and stored as f32,
so the C++ f32 results are compared against values more accurate than an f32 PyTorch run.
params: ce.label_smoothing (one case per value: ce, ce_ls), kl.temperatures (kl_T<T>),
smooth_l1.beta.
"""
import torch
import torch.nn.functional as F

from ._common import as_double_leaf as _d, as_float as _f, gen, randn, save

REQUIRES = ("torch", "numpy", "safetensors")
SMOOTHING = {"ce": 0.0, "ce_ls": 0.1}
TEMPERATURES = (1, 4)
SL1_BETA = 0.5


def generate(out_dir):
    t = {}
    B, C = 6, 5
    logits = randn(B, C, seed=10, scale=2.0)
    labels = torch.randint(0, C, (B,), generator=gen(11))
    t.update(ce_logits=logits, ce_labels=labels)
    for name, s in SMOOTHING.items():
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
    for T in TEMPERATURES:
        sd = _d(student)
        td = teacher.double()
        loss = F.kl_div(F.log_softmax(sd / T, -1), F.softmax(td / T, -1),
                        reduction="batchmean") * T * T
        loss.backward()
        t[f"kl_T{T}_loss"] = _f(loss)
        t[f"kl_T{T}_grad"] = _f(sd.grad)

    # smooth-L1 with beta SL1_BETA: |a - b| falls on both sides of beta
    a = randn(4, 7, seed=15)
    b = randn(4, 7, seed=16)
    t.update(sl1_a=a, sl1_b=b)
    ad, bd = _d(a), _d(b)
    loss = F.smooth_l1_loss(ad, bd, beta=SL1_BETA)
    loss.backward()
    t.update(sl1_loss=_f(loss), sl1_grad_a=_f(ad.grad), sl1_grad_b=_f(bd.grad))
    diff = (a - b).abs()
    assert (diff < SL1_BETA).any() and (diff > SL1_BETA).any()

    ad, bd = _d(a), _d(b)
    loss = F.mse_loss(ad, bd)
    loss.backward()
    t.update(mse_loss=_f(loss), mse_grad_a=_f(ad.grad), mse_grad_b=_f(bd.grad))
    params = {"ce": {"label_smoothing": SMOOTHING}, "kl": {"temperatures": list(TEMPERATURES)},
              "smooth_l1": {"beta": SL1_BETA}}
    save(out_dir, "ops_loss", t, params)
