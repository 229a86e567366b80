#!/usr/bin/env python3
"""Checks that a safetensors checkpoint written by mokd loads into timm and gives mokd's logits.

    python3 tools/export_check.py WEIGHTS.safetensors --model NAME --io IO.safetensors [--tol 1e-4]
        [--num-classes N] [--img-size S] [--in-chans C]

WEIGHTS  a model state dict saved by mokd (Module::state_dict(): timm names, OIHW convolutions,
         BN buffers with num_batches_tracked). Nothing else may be in it: the load is strict.
NAME     a mokd registry name (models/registry.cpp): the DeiT/ResNet names are timm's own and go
         to timm.create_model; the Fashion-MNIST variants are rebuilt with timm's classes
         (vit_fmnist_{tiny,micro}[_distilled]: VisionTransformer[Distilled] at 28 px, patch 4, dim 96 (64),
         depth 6 (4), 3 (4) heads, 1 channel; resnet_fmnist_small / resnet18_fmnist: timm ResNet whose
         conv1 is replaced by the small stem, a 3x3 stride-1 conv, and whose max-pool is removed).
         When omitted, the "model" entry of the file's metadata is used, as are "num_classes",
         "img_size" and "in_chans" when present and not given on the command line.
IO       safetensors with "input" (NHWC [B, H, W, C], the images mokd saw) and "logits" (mokd's
         eval-mode output on them: the mean of the two heads for a distilled model).

Exit status 0 when timm's eval-mode logits match within --tol (max |a - b| / max |b|), 1 otherwise.
The trainer's export step runs this on its final checkpoint; the C++ test Models.ExportForTimm
writes such pairs when MOKD_EXPORT_DIR is set:
    MOKD_EXPORT_DIR=/tmp/mokd_export build/mokd_tests --gtest_filter=Models.ExportForTimm
    for m in vit_fmnist_tiny_distilled resnet_fmnist_small; do
      python3 tools/export_check.py /tmp/mokd_export/$m.safetensors --model $m \\
          --io /tmp/mokd_export/${m}_io.safetensors; done
"""
import argparse
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

FMNIST_VIT = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=96, depth=6,
                  num_heads=3, mlp_ratio=4.0)
FMNIST_VIT_MICRO = dict(FMNIST_VIT, embed_dim=64, depth=4, num_heads=4)


def _small_stem(model, in_chans):
    """The small-image stem of mokd: 3x3 stride-1 conv1 (same name and width), no max-pool."""
    out = model.conv1.out_channels
    model.conv1 = torch.nn.Conv2d(in_chans, out, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def build(name, num_classes=None, img_size=None, in_chans=None):
    import timm
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.resnet import BasicBlock, ResNet
    from timm.models.vision_transformer import VisionTransformer

    def pick(default, value):
        return default if value is None else value

    if name.startswith("vit_fmnist_tiny") or name.startswith("vit_fmnist_micro"):
        kw = dict(FMNIST_VIT if name.startswith("vit_fmnist_tiny") else FMNIST_VIT_MICRO)
        kw.update(num_classes=pick(10, num_classes), img_size=pick(28, img_size),
                  in_chans=pick(1, in_chans))
        cls = VisionTransformerDistilled if name.endswith("_distilled") else VisionTransformer
        if name not in ("vit_fmnist_tiny", "vit_fmnist_tiny_distilled", "vit_fmnist_micro",
                        "vit_fmnist_micro_distilled"):
            raise SystemExit(f"unknown model {name}")
        return cls(**kw)
    if name == "resnet_fmnist_small":
        c = pick(1, in_chans)
        m = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=pick(10, num_classes), in_chans=c,
                   channels=(16, 32, 64, 128))
        return _small_stem(m, c)
    if name == "resnet18_fmnist":
        c = pick(1, in_chans)
        return _small_stem(timm.create_model("resnet18", num_classes=pick(10, num_classes), in_chans=c), c)
    kw = {}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    if in_chans is not None:
        kw["in_chans"] = in_chans
    if img_size is not None and name.startswith(("deit", "vit")):
        kw["img_size"] = img_size
    return timm.create_model(name, pretrained=False, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights")
    ap.add_argument("--model")
    ap.add_argument("--io", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--num-classes", type=int)
    ap.add_argument("--img-size", type=int)
    ap.add_argument("--in-chans", type=int)
    a = ap.parse_args(argv)

    with safe_open(a.weights, "pt") as f:
        meta = f.metadata() or {}

    def from_meta(value, key):
        if value is None and key in meta:
            return int(meta[key])
        return value

    name = a.model or meta.get("model")
    if not name:
        ap.error("--model is required (the file has no 'model' metadata)")
    model = build(name, from_meta(a.num_classes, "num_classes"), from_meta(a.img_size, "img_size"),
                  from_meta(a.in_chans, "in_chans"))
    sd = load_file(a.weights)
    model.load_state_dict(sd, strict=True)  # raises listing missing/unexpected/mismatched keys
    model.eval()

    io = load_file(a.io)
    x = io["input"].permute(0, 3, 1, 2).contiguous().float()  # NHWC -> NCHW
    with torch.no_grad():
        got = model(x)
    want = io["logits"].float()
    if got.shape != want.shape:
        print(f"FAIL {name}: timm logits {tuple(got.shape)} vs file {tuple(want.shape)}")
        return 1
    err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
    ok = err < a.tol
    print(f"{'OK' if ok else 'FAIL'} {name}: {len(sd)} tensors loaded strictly, "
          f"logits rel error {err:.3g} (tol {a.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
