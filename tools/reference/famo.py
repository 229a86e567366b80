"""FAMO reference (tests/test_famo.cpp): the official algorithm of Cranial-XIX/FAMO (famo.py:
get_weighted_loss, update), re-typed here in PyTorch, driven by a fixed synthetic sequence of
positive losses (K = 3, 20 steps). Records per step: the losses before/after, the weighted loss,
its gradient with respect to each loss, and the weights z before and after each update.
Writes tests/data/famo.safetensors; params: steps, objectives, and famo (OfficialFAMO's settings:
lr, weight_decay, betas, adam_eps of its Adam, eps inside the logs)."""
import torch
import torch.nn.functional as F

from ._common import save

REQUIRES = ("torch", "numpy", "safetensors")


class OfficialFAMO:
    """Follows famo.py's FAMO class (gamma = weight decay, w_lr = Adam lr; Adam's betas and eps
    are torch's defaults, written out; eps is the 1e-8 inside the logs)."""

    SETTINGS = {"lr": 0.025, "weight_decay": 0.01, "betas": [0.9, 0.999], "adam_eps": 1e-8,
                "eps": 1e-8}

    def __init__(self, n_tasks, gamma=SETTINGS["weight_decay"], w_lr=SETTINGS["lr"]):
        self.min_losses = torch.zeros(n_tasks)
        self.w = torch.tensor([0.0] * n_tasks, requires_grad=True)
        self.w_opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma,
                                      betas=tuple(self.SETTINGS["betas"]), eps=self.SETTINGS["adam_eps"])
        self.settings = dict(self.SETTINGS, lr=w_lr, weight_decay=gamma)

    def get_weighted_loss(self, losses):
        self.prev_loss = losses
        z = F.softmax(self.w, -1)
        D = losses - self.min_losses + self.settings["eps"]
        c = (z / D).sum().detach()
        return (D.log() * z / c).sum()

    def update(self, curr_loss):
        eps = self.settings["eps"]
        delta = (self.prev_loss - self.min_losses + eps).log() - (curr_loss - self.min_losses + eps).log()
        with torch.enable_grad():
            d = torch.autograd.grad(F.softmax(self.w, -1), self.w, grad_outputs=delta.detach())[0]
        self.w_opt.zero_grad()
        self.w.grad = d
        self.w_opt.step()


def generate(out_dir):
    g = torch.Generator().manual_seed(11)
    steps, k = 20, 3
    famo = OfficialFAMO(k)
    before = torch.rand(steps, k, generator=g) * 2 + 0.1
    # Objective 2 barely improves, objective 0 improves a lot: weight should move to objective 2.
    ratio = torch.tensor([0.80, 0.95, 0.999]) + 0.01 * torch.rand(steps, k, generator=g)
    after = before * ratio
    t = {"before": before, "after": after}
    wl, gl, zb, za = [], [], [], []
    for s in range(steps):
        L = before[s].clone().requires_grad_(True)
        zb.append(F.softmax(famo.w, -1).detach().clone())
        loss = famo.get_weighted_loss(L)
        (grad,) = torch.autograd.grad(loss, L, retain_graph=True)
        wl.append(loss.detach())
        gl.append(grad)
        famo.prev_loss = famo.prev_loss.detach()
        famo.update(after[s])
        za.append(F.softmax(famo.w, -1).detach().clone())
    t["weighted_loss"] = torch.stack(wl)
    t["grad_losses"] = torch.stack(gl)
    t["z_before"] = torch.stack(zb)
    t["z_after"] = torch.stack(za)
    save(out_dir, "famo", t, {"steps": steps, "objectives": k, "famo": famo.settings})
