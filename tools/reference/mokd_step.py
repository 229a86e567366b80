"""MoKD step reference (tests/test_distill.cpp): 20 MoKD steps written in PyTorch on a tiny timm
teacher (VisionTransformer) and a tiny timm distilled student (VisionTransformerDistilled),
following docs/method.md ("FAMO update") and the official FAMO code (famo.py: get_weighted_loss, update).

Per step it records the three losses (task, kl, feat), the FAMO weights z before and after the
update, and the projector after the step; at step 1 it records every student gradient (after
backward, before clipping). Inputs: 4 fixed batches used in turn. Our decisions that the reference
follows: feature loss smooth_l1(P z_s, layer_norm(z_t)) on mean patch tokens; the projector is
kept on the Stiefel manifold by the polar retraction computed with 24 Newton-Schulz iterations
from P / ||P||_F (mokd/projector.cpp). Writes tests/data/mokd_step.safetensors; every setting
below is in its params (tests/test_distill.cpp reads them from there)."""
import torch
import torch.nn.functional as F
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer

from ._common import save
from .famo import OfficialFAMO

REQUIRES = ("torch", "numpy", "safetensors", "timm")
IMG, PATCH, CHANS, CLASSES, B, BATCHES = 16, 4, 3, 10, 4, 4
STEPS, T, LS, LR, WD, CLIP, FEAT_BETA = 20, 2.0, 0.1, 2e-3, 0.05, 1.0, 1.0
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch's AdamW defaults, written out
RETRACT_ITERS, HEAD_STD = 24, 0.2
TORCH_SEED, INPUT_SEED = 0, 5
TEACHER = {"embed_dim": 48, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
STUDENT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}


def retract(p, iters=RETRACT_ITERS):
    wide = p.shape[0] < p.shape[1]
    x = p.t() if wide else p
    x = x / x.pow(2).sum().sqrt()
    eye3 = 3 * torch.eye(x.shape[1])
    for _ in range(iters):
        x = 0.5 * x @ (eye3 - x.t() @ x)
    return x.t() if wide else x


def student_losses(student, P, x, y, t_logits, z_t):
    sf = student.forward_features(x)  # [B, 2 + N, D] after the final norm
    cls_logits = student.head(sf[:, 0])
    dist_logits = student.head_dist(sf[:, 1])
    z_s = sf[:, student.num_prefix_tokens:].mean(1)
    task = F.cross_entropy(cls_logits, y, label_smoothing=LS)
    kl = F.kl_div(F.log_softmax(dist_logits / T, -1), F.softmax(t_logits / T, -1),
                  reduction="batchmean") * T * T
    feat = F.smooth_l1_loss(z_s @ P.t(), z_t, beta=FEAT_BETA)
    return torch.stack([task, kl, feat])


def generate(out_dir):
    torch.manual_seed(TORCH_SEED)
    teacher = VisionTransformer(img_size=IMG, patch_size=PATCH, in_chans=CHANS, num_classes=CLASSES,
                                **TEACHER)
    student = VisionTransformerDistilled(img_size=IMG, patch_size=PATCH, in_chans=CHANS,
                                         num_classes=CLASSES, **STUDENT)
    with torch.no_grad():  # timm zero-initialises heads and dist tokens: give them values
        for m in (teacher, student):
            for name, p in m.named_parameters():
                if "head" in name or "token" in name:
                    p.normal_(0, HEAD_STD)
    teacher.eval()
    student.train()
    t = {}
    for k, v in teacher.state_dict().items():
        t["teacher." + k] = v.clone()
    for k, v in student.state_dict().items():
        t["student." + k] = v.clone()
    g = torch.Generator().manual_seed(INPUT_SEED)
    xs = torch.randn(BATCHES, B, IMG, IMG, CHANS, generator=g)      # NHWC batches
    ys = torch.randint(0, CLASSES, (BATCHES, B), generator=g)
    dt, ds = TEACHER["embed_dim"], STUDENT["embed_dim"]
    P = retract(torch.randn(dt, ds, generator=g))
    t["images"], t["labels"], t["projector0"] = xs, ys, P.clone()

    P.requires_grad_(True)
    params = list(student.parameters()) + [P]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD, betas=BETAS, eps=ADAM_EPS)
    famo = OfficialFAMO(3)
    losses_all, zb, za, Ps = [], [], [], []
    for s in range(STEPS):
        x = xs[s % BATCHES].permute(0, 3, 1, 2)  # timm wants NCHW
        y = ys[s % BATCHES]
        with torch.no_grad():
            tf = teacher.forward_features(x)
            t_logits = teacher.forward_head(tf)
            z_t = F.layer_norm(tf[:, teacher.num_prefix_tokens:].mean(1), (dt,))
        L = student_losses(student, P, x, y, t_logits, z_t)
        zb.append(F.softmax(famo.w, -1).detach().clone())
        loss = famo.get_weighted_loss(L)
        opt.zero_grad()
        loss.backward()
        if s == 0:
            for k, p in student.named_parameters():
                t["grad1." + k] = p.grad.clone()
            t["grad1.projector"] = P.grad.clone()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        with torch.no_grad():
            P.copy_(retract(P))
            L2 = student_losses(student, P, x, y, t_logits, z_t)
        famo.prev_loss = famo.prev_loss.detach()
        famo.update(L2)
        losses_all.append(L.detach())
        za.append(F.softmax(famo.w, -1).detach().clone())
        Ps.append(P.detach().clone())
    t["losses"] = torch.stack(losses_all)
    t["z_before"] = torch.stack(zb)
    t["z_after"] = torch.stack(za)
    t["projector"] = torch.stack(Ps)
    params = {
        "img_size": IMG, "patch_size": PATCH, "in_chans": CHANS, "num_classes": CLASSES,
        "batch": B, "batches": BATCHES, "steps": STEPS, "teacher": TEACHER, "student": STUDENT,
        "temperature": T, "label_smoothing": LS, "feat_beta": FEAT_BETA, "grad_clip": CLIP,
        "optimizer": {"lr": LR, "weight_decay": WD, "betas": list(BETAS), "eps": ADAM_EPS},
        "famo": famo.settings, "retract_iters": RETRACT_ITERS, "head_init_std": HEAD_STD,
        "seeds": {"torch": TORCH_SEED, "inputs": INPUT_SEED},
    }
    save(out_dir, "mokd_step", t, params)
