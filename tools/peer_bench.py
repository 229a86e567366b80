#!/usr/bin/env python3
"""The PyTorch + timm peer of `mokd_train benchmark`: one MoKD step as docs/method.md defines it,
timed on synthetic inputs already on the device, so our
numbers can be quoted as ratios against the peer measured in the same run on the same card.

One step: teacher forward under no-grad (logits + pooled feature); student forward; L_task (CE,
label smoothing 0.1), L_kl (T^2 KL batchmean, T = 1; the distillation head when the student has
one), L_feat (smooth-L1 of the projected pooled student feature against the affine-free
layer-normed teacher feature); FAMO weighting (backprop sum a_i L_i); grad clip 1.0; fused AdamW;
the Stiefel retraction of the projector (Newton-Schulz polar, 5 iterations); the FAMO no-grad
re-forward of the student on the same batch and the FAMO logit update. `--method kd` is plain KD:
CE + KL with fixed weights, no projector, no re-forward.

  python3 tools/peer_bench.py --student deit_tiny_patch16_224 --teacher deit_base_patch16_224 \
      --batch 256 --precision bf16

The peer is the best PyTorch a user would run: each mode of --modes (default eager and compile:
bf16 autocast, then the same under torch.compile) is timed on fresh models, with channels_last
memory format whenever a model has convolutions (--channels-last auto), and the best is reported.
Prints one line per mode, then the best in the format of `mokd_train benchmark`:
  peer <student> <- <teacher>, method M, batch B, 224px, bf16, torch V, <mode>[, channels_last]:
    X ms/step  Y images/s  peak memory Z MiB
  best: <mode>  X ms/step  Y images/s  peak memory Z MiB
"""
import argparse
import time

import torch
import torch.nn.functional as F


def pooled(model, x):
    """(logits, dist_logits or None, pooled feature): ViT mean of patch tokens after the final norm,
    ResNet global average pool (docs/method.md, Objectives)."""
    f = model.forward_features(x)
    if f.dim() == 4:  # ResNet: [B, C, H, W]
        z = f.mean(dim=(2, 3))
        return model.forward_head(f), None, z
    prefix = getattr(model, "num_prefix_tokens", 1)
    z = f[:, prefix:].mean(dim=1)
    if getattr(model, "head_dist", None) is not None:
        return model.head(f[:, 0]), model.head_dist(f[:, 1]), z
    return model.forward_head(f), None, z


def newton_schulz_polar(p, iters=5):
    """Nearest matrix with orthonormal columns (rows if wide) by Newton-Schulz iterations."""
    wide = p.shape[0] < p.shape[1]
    y = p.t() if wide else p
    y = y / (y.norm() + 1e-12)
    eye = torch.eye(y.shape[1], device=y.device, dtype=y.dtype)
    for _ in range(iters):
        y = 0.5 * y @ (3 * eye - y.t() @ y)
    return y.t() if wide else y


def has_conv(model):
    return any(isinstance(m, torch.nn.Conv2d) and m.kernel_size != (16, 16) and
               m.kernel_size != (32, 32) for m in model.modules())


def run(args, mode):
    """Times one mode on fresh models; returns (ms per step, peak MiB, description)."""
    import timm

    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.precision == "f32"
    torch.backends.cudnn.allow_tf32 = args.precision == "f32"
    torch.backends.cudnn.benchmark = True
    def create(name):
        try:  # ViTs take the image size; ResNets have no such argument
            return timm.create_model(name, num_classes=args.classes, img_size=args.img)
        except TypeError:
            return timm.create_model(name, num_classes=args.classes)

    torch.manual_seed(0)
    student = create(args.student).to(dev).train()
    teacher = create(args.teacher).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = torch.randn(args.batch, 3, args.img, args.img, device=dev)
    cl = args.channels_last == "on" or (args.channels_last == "auto" and
                                        (has_conv(student) or has_conv(teacher)))
    if cl:  # NHWC for cuDNN's fastest convolutions, as a user of CNNs would set
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fwd = pooled
    if mode == "compile":
        fwd = torch.compile(pooled)
    y = torch.arange(args.batch, device=dev) % args.classes
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with torch.no_grad(), amp:
        ds = pooled(student, x[:2])[2].shape[1]
        dt = pooled(teacher, x[:2])[2].shape[1]
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    mokd = args.method == "mokd"
    proj = torch.nn.Parameter(newton_schulz_polar(torch.randn(dt, ds, device=dev)))
    params = list(student.parameters()) + ([proj] if mokd else [])
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05, fused=dev.type == "cuda")
    famo_w = torch.zeros(3, device=dev, requires_grad=True)
    famo_opt = torch.optim.Adam([famo_w], lr=0.025, weight_decay=0.01)
    eps = 1e-8

    def losses(t_logits, z_t, grad):
        with torch.set_grad_enabled(grad), amp:
            logits, dist, z_s = fwd(student, x)
            task = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
            s_kd = (dist if dist is not None else logits).float()
            kl = F.kl_div(F.log_softmax(s_kd, -1), F.log_softmax(t_logits.float(), -1),
                          reduction="batchmean", log_target=True)
            if not mokd:
                return torch.stack([task, kl])
            feat = F.smooth_l1_loss((z_s.float() @ proj.t()), F.layer_norm(z_t.float(), (dt,)))
            return torch.stack([task, kl, feat])

    def step():
        with torch.no_grad(), amp:
            t_logits, _, z_t = fwd(teacher, x)
        l = losses(t_logits, z_t, True)
        if mokd:
            z = F.softmax(famo_w.detach(), -1)
            d = l.detach() + eps
            a = (z / d) / (z / d).sum()
            total = (a * l).sum()
        else:
            total = 0.5 * l[0] + 0.5 * l[1]
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if mokd:
            with torch.no_grad():
                proj.copy_(newton_schulz_polar(proj))
            l2 = losses(t_logits, z_t, False)
            delta = torch.log(l.detach() + eps) - torch.log(l2 + eps)
            z = F.softmax(famo_w.detach(), -1)
            famo_opt.zero_grad(set_to_none=True)
            famo_w.grad = z * (delta - (z * delta).sum())
            famo_opt.step()

    for _ in range(max(args.warmup, 3) if mode == "compile" else args.warmup):  # compiles
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - t0) / max(args.steps, 1)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else float("nan")
    what = mode + (", channels_last" if cl else "")
    print(f"peer {args.student} <- {args.teacher}, method {args.method}, batch {args.batch}, "
          f"{args.img}px, {args.precision}, torch {torch.__version__}, {what}:\n"
          f"  {ms:.1f} ms/step  {args.batch * 1000 / ms:.1f} images/s  peak memory {peak:.1f} MiB",
          flush=True)
    return ms, peak, what


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default="deit_tiny_patch16_224")
    ap.add_argument("--teacher", default="deit_base_patch16_224")
    ap.add_argument("--method", choices=["mokd", "kd"], default="mokd")
    ap.add_argument("--precision", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default="eager,compile",
                    help="comma list of eager, compile: each timed, the best reported")
    ap.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                    help="auto: channels_last when a model has convolutions (not patch embeddings)")
    args = ap.parse_args()
    results = []
    for mode in args.modes.split(","):
        if mode not in ("eager", "compile"):
            ap.error(f"--modes: unknown mode '{mode}' (eager, compile)")
        try:
            results.append(run(args, mode))
        except Exception as e:  # a mode that fails (e.g. no compiler for torch.compile) is skipped
            print(f"peer mode {mode} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if not results:
        raise SystemExit("peer: no mode ran")
    ms, peak, what = min(results)
    print(f"best: {what}  {ms:.1f} ms/step  {args.batch * 1000 / ms:.1f} images/s  "
          f"peak memory {peak:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
