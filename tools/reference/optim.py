"""Fixtures for tests/test_optim.cpp: torch.optim trajectories (AdamW, Adam with L2, SGD),
clip_grad_norm_, timm/torch learning-rate schedules and timm's weight-decay grouping.

Writes tests/data/optim.safetensors:
  p0.<i>                 initial parameters (odd shapes)
  g.<t>.<i>              gradient of parameter i at step t (absent: no grad that step)
  <case>.p.<t>.<i>       parameter i after step t, from torch.optim (single-tensor path)
  adamw.lr_scale         per-step factor on the base lrs of the adamw case
  clip.g.<i>, clip.<small|large>.norm, clip.<small|large>.g.<i>
  sched.<name>           lr for steps 0..len-1
  groups.<name>          i64 [is_decay, *shape] per parameter of a tiny timm DeiT
The hyper-parameters are in the fixture's params (tests/test_optim.cpp reads them there): steps,
shapes, missing ([step, param] pairs without a gradient), one object per optimizer case with
torch.optim's arguments (adamw: per group), clip.<small|large>.max_norm, sched.<name> with the
scheduler's arguments, groups.weight_decay.
"""
import torch
import timm
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler

from ._common import randn, save

REQUIRES = ("torch", "numpy", "safetensors", "timm")

SHAPES = [(3, 5), (7,), (2, 3, 4)]
STEPS = 10
MISSING = {(3, 2), (6, 0)}  # (step, param) without a gradient: skipped by step()


def _grads():
    return {(t, i): randn(*s, seed=100 + 10 * t + i) for t in range(STEPS) for i, s in enumerate(SHAPES)
            if (t, i) not in MISSING}


def _run(case, make_opt, grads, out, lr_scale=None):
    params = [randn(*s, seed=i).requires_grad_(True) for i, s in enumerate(SHAPES)]
    opt = make_opt(params)
    base = [g["lr"] for g in opt.param_groups]
    for t in range(STEPS):
        if lr_scale is not None:
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * float(lr_scale[t])
        for i, p in enumerate(params):
            p.grad = grads[(t, i)].clone() if (t, i) in grads else None
        opt.step()
        for i, p in enumerate(params):
            out[f"{case}.p.{t}.{i}"] = p.detach().clone()


def generate(out_dir):
    out = {}
    for i, s in enumerate(SHAPES):
        out[f"p0.{i}"] = randn(*s, seed=i)
    grads = _grads()
    for (t, i), g in grads.items():
        out[f"g.{t}.{i}"] = g

    lr_scale = torch.tensor([0.5 + 0.05 * t for t in range(STEPS)], dtype=torch.float32)
    out["adamw.lr_scale"] = lr_scale
    cases = {
        # AdamW, two groups: params 0 and 2 with decay, param 1 (1-D) without.
        "adamw": {"groups": [{"params": [0, 2], "weight_decay": 0.05}, {"params": [1], "weight_decay": 0.0}],
                  "lr": 0.05, "betas": [0.9, 0.999], "eps": 1e-8},
        # AdamW with beta1 < 0.5 (the other branch of torch.lerp) and a larger eps.
        "adamw_b": {"lr": 0.01, "betas": [0.3, 0.95], "eps": 1e-3, "weight_decay": 0.1},
        # Adam with coupled L2, FAMO's settings (torch's default betas and eps).
        "adam_l2": {"lr": 0.025, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8},
        "sgd_momentum": {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01, "nesterov": False},
        "sgd_nesterov": {"lr": 0.05, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.01, "nesterov": True},
        "sgd_plain": {"lr": 0.1, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.01, "nesterov": False},
    }

    def kw(case):
        return {k: tuple(v) if k == "betas" else v for k, v in cases[case].items() if k != "groups"}

    a = cases["adamw"]
    _run("adamw", lambda ps: torch.optim.AdamW(
        [{"params": [ps[i] for i in g["params"]], "weight_decay": g["weight_decay"]} for g in a["groups"]],
        foreach=False, **kw("adamw")), grads, out, lr_scale)
    for case in ("adamw_b", "adam_l2"):
        cls = torch.optim.AdamW if case.startswith("adamw") else torch.optim.Adam
        _run(case, lambda ps: cls(ps, foreach=False, **kw(case)), grads, out)
    for case in ("sgd_momentum", "sgd_nesterov", "sgd_plain"):
        _run(case, lambda ps: torch.optim.SGD(ps, foreach=False, **kw(case)), grads, out)

    # clip_grad_norm_: one threshold below the norm (clips), one above (leaves the grads alone).
    cg = [randn(*s, seed=500 + i, scale=1.5) for i, s in enumerate(SHAPES)]
    for i, g in enumerate(cg):
        out[f"clip.g.{i}"] = g
    clip = {"small": {"max_norm": 1.0}, "large": {"max_norm": 100.0}}
    for name, c in clip.items():
        max_norm = c["max_norm"]
        ps = [torch.zeros(s, requires_grad=True) for s in SHAPES]
        for p, g in zip(ps, cg):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm, foreach=False)
        out[f"clip.{name}.norm"] = norm.reshape(1)
        for i, p in enumerate(ps):
            out[f"clip.{name}.g.{i}"] = p.grad.clone()

    # Schedules, per step (t_in_epochs=False).
    def cosine(n, base_lr, **kw):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
        sched = CosineLRScheduler(opt, t_in_epochs=False, **kw)
        lrs = []
        for t in range(n):
            sched.step_update(num_updates=t)
            lrs.append(opt.param_groups[0]["lr"])
        return torch.tensor(lrs, dtype=torch.float64).float()

    sched = {
        "cosine_prefix": {"base_lr": 5e-4, "steps": 60, "t_initial": 45, "lr_min": 1e-5, "warmup_t": 5,
                          "warmup_lr_init": 1e-6, "warmup_prefix": True},
        "cosine_overlay": {"base_lr": 5e-4, "steps": 60, "t_initial": 50, "lr_min": 1e-5, "warmup_t": 5,
                           "warmup_lr_init": 1e-6, "warmup_prefix": False},
        "cosine_nowarmup": {"base_lr": 5e-4, "steps": 25, "t_initial": 20, "lr_min": 0.0},
        "step": {"base_lr": 0.1, "steps": 30, "step_size": 7, "gamma": 0.5},
    }
    for name in ("cosine_prefix", "cosine_overlay", "cosine_nowarmup"):
        c = dict(sched[name])
        out[f"sched.{name}"] = cosine(c.pop("steps"), c.pop("base_lr"), **c)
    c = sched["step"]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=c["base_lr"])
    step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=c["step_size"], gamma=c["gamma"])
    lrs = []
    for _ in range(c["steps"]):
        lrs.append(step_lr.get_last_lr()[0])
        opt.step()
        step_lr.step()
    out["sched.step"] = torch.tensor(lrs, dtype=torch.float64).float()

    # timm's weight-decay grouping of a tiny distilled DeiT (no_weight_decay: pos_embed, cls_token,
    # dist_token).
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32,
                              patch_size=16, embed_dim=8, depth=1, num_heads=2, num_classes=3)
    group_wd = 0.05
    groups = param_groups_weight_decay(model, group_wd, no_weight_decay_list=model.no_weight_decay())
    decay_ids = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        out[f"groups.{name}"] = torch.tensor([int(id(p) in decay_ids), *p.shape], dtype=torch.int64)

    params = dict(cases, steps=STEPS, shapes=[list(sh) for sh in SHAPES], missing=sorted(list(m) for m in MISSING),
                  clip=clip, sched=sched, groups={"weight_decay": group_wd})
    save(out_dir, "optim", out, params)
