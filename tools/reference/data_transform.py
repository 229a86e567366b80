"""Fixtures for tests/test_transform.cpp (io/transform): timm's evaluation transform of JPEG files,
end to end, computed without mokd.

Each case is a JPEG written by Pillow (quality 90, 4:2:0) of smooth random content, opened as
timm's ImageFolder does (`Image.open(f).convert("RGB")`) and passed through
`timm.data.create_transform(size, is_training=False, interpolation=..., crop_pct=..., mean=...,
std=...)`: Resize(floor(size / crop_pct), shorter side) -> CenterCrop(size) -> ToTensor ->
Normalize. Stored: `<case>_file`, the JPEG bytes (F16, one byte per value: mokd's tensors have no
uint8 type and F16 holds 0..255 exactly), and `<case>_out`, timm's output as f32 HWC.

params: mean, std, cases.<case> ([h, w] of the file, size, crop_pct, interpolation).
"""
import io

import numpy as np
import torch
from PIL import Image

from ._common import save

REQUIRES = ("torch", "numpy", "safetensors", "timm", "torchvision", "pillow")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

CASES = {
    # name: (h, w, size, crop_pct, interpolation)
    "tall_bicubic": (53, 37, 32, 0.875, "bicubic"),
    "wide_bicubic": (200, 300, 40, 0.875, "bicubic"),
    "wide_bilinear": (200, 300, 40, 0.875, "bilinear"),
    "whole_crop": (48, 64, 48, 1.0, "bicubic"),
    "upscale": (23, 29, 40, 0.9, "bicubic"),
    "square": (45, 45, 32, 0.95, "bicubic"),
}


def _content(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.02, 0.3, size=3)
        img[..., c] = 127 + 90 * np.sin(fx * x + fy * y + 6 * ph) + rng.normal(0, 12, size=(h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(out_dir):
    from timm.data import create_transform

    t = {}
    cases = {}
    for i, (name, (h, w, size, crop_pct, interp)) in enumerate(CASES.items()):
        buf = io.BytesIO()
        Image.fromarray(_content(h, w, 100 + i)).save(buf, format="JPEG", quality=90, subsampling=2)
        data = buf.getvalue()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        tf = create_transform(size, is_training=False, interpolation=interp, crop_pct=crop_pct,
                              mean=MEAN, std=STD)
        out = tf(img)  # CHW f32
        assert out.shape == (3, size, size), (name, out.shape)
        t[f"{name}_file"] = torch.from_numpy(np.frombuffer(data, np.uint8).astype(np.float16))
        t[f"{name}_out"] = out.permute(1, 2, 0).contiguous()
        cases[name] = {"hw": [h, w], "size": size, "crop_pct": crop_pct, "interpolation": interp}
    save(out_dir, "data_transform", t, {"mean": list(MEAN), "std": list(STD), "cases": cases})
