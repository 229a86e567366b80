"""Fixtures for tests/test_resample.cpp (io/resample): Pillow's Image.resize on random uint8 images,
computed without mokd.

Images: "rgb_small" 37x53 RGB, "rgb_big" 200x300 RGB, "gray" 29x31 L (height x width), uniform
random bytes. Each case resizes one image with one filter (nearest, bilinear, bicubic) to `size`
[h, w] in one of two ways:
- "crop" [top, left, height, width]: img.crop((left, top, left + width, top + height)).resize(...),
  which is what torchvision's F.resized_crop does on a PIL image (RandomResizedCrop, timm's
  RandomResizedCropAndInterpolation); the whole image when absent;
- "box" [left, top, right, bottom] (floats allowed): img.resize(..., box=box), whose filter also
  reads pixels outside the box.
Cases cover downscales (antialiased), upscales, one axis up and the other down, one axis unchanged
(Pillow skips that pass), both sides of the rule choosing which pass Pillow runs first (vertical
first when the height shrinks and 2 out_w - out_h > 2 w - h), same-size copies, RandomResizedCrop boxes and a fractional box.

Storage: mokd's safetensors reader has no U8 type, so each image (HWC bytes) is stored as an I32
tensor whose little-endian words hold four bytes each (zero-padded at the end): tensors
"input_<image>" and "out_<case>". params: images.<name> = [h, w, c], cases.<case> = {image, filter,
size, crop | box}.
"""
import numpy as np
import torch
from PIL import Image

from ._common import pack_u8, save

REQUIRES = ("torch", "numpy", "safetensors", "pillow", "torchvision")

FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}



def _rrc_boxes(pil, n, seed):
    """n boxes [top, left, height, width] from torchvision's RandomResizedCrop.get_params."""
    import torchvision.transforms as T
    torch.manual_seed(seed)
    out = []
    for _ in range(n):
        i, j, h, w = T.RandomResizedCrop.get_params(pil, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        out.append([int(i), int(j), int(h), int(w)])
    return out


def generate(out_dir):
    rng = np.random.default_rng(2024)
    shapes = {"rgb_small": [37, 53, 3], "rgb_big": [200, 300, 3], "gray": [29, 31, 1]}
    arrays, pils = {}, {}
    for name, (h, w, c) in shapes.items():
        a = rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
        arrays[name] = a
        pils[name] = Image.fromarray(a[:, :, 0] if c == 1 else a, "L" if c == 1 else "RGB")

    # (image, size [h, w], crop [top, left, height, width] or None, box [l, t, r, b] or None)
    geometry = {
        "down_48x64": ("rgb_big", [48, 64], None, None),
        "down_17x23": ("rgb_big", [17, 23], None, None),
        "up_100x91": ("rgb_small", [100, 91], None, None),
        "hdown_wup_20x90": ("rgb_small", [20, 90], None, None),
        "hup_wdown_80x11": ("rgb_small", [80, 11], None, None),
        "h_same_37x20": ("rgb_small", [37, 20], None, None),
        "w_same_60x53": ("rgb_small", [60, 53], None, None),
        "same_37x53": ("rgb_small", [37, 53], None, None),
        "gray_down_13x17": ("gray", [13, 17], None, None),
        "gray_up_50x45": ("gray", [50, 45], None, None),
        "gray_crop_20x9": ("gray", [20, 9], [3, 5, 17, 22], None),
        "crop_same_size": ("rgb_small", [11, 13], [4, 6, 11, 13], None),
        "crop_h_same": ("rgb_small", [21, 40], [7, 2, 21, 30], None),
        "box_int_24x20": ("rgb_small", [24, 20], None, [5.0, 3.0, 45.0, 30.0]),
        "box_float_19x29": ("rgb_small", [19, 29], None, [2.25, 1.5, 50.75, 33.125]),
        "box_float_big_32x32": ("rgb_big", [32, 32], None, [17.5, 9.75, 250.2, 190.6]),
        "box_wsame_hdown_20x40": ("rgb_small", [20, 40], None, [2.5, 1.5, 42.5, 30.5]),
        "box_wdown_hdown_20x39": ("rgb_small", [20, 39], None, [2.5, 1.5, 42.5, 30.5]),
        "crop_hdown_wup_9x30": ("rgb_small", [9, 30], [5, 8, 25, 21], None),
        # 37x53 -> 21 rows: vertical first from 2 w - h + 21 = 90 < 2 out_w, i.e. out_w >= 46.
        "order_h_first_21x45": ("rgb_small", [21, 45], None, None),
        "order_v_first_21x46": ("rgb_small", [21, 46], None, None),
        # The rule looks at the image, not the box: 2 * 53 - 37 + 30 = 99 < 2 * 50.
        "order_box_v_first_30x50": ("rgb_small", [30, 50], None, [20.5, 3.5, 35.5, 33.5]),
        "order_box_h_first_30x49": ("rgb_small", [30, 49], None, [20.5, 3.5, 35.5, 33.5]),
        "box_same_size": ("rgb_small", [11, 13], None, [6.0, 4.0, 19.0, 15.0]),
        "box_frac_same_size": ("rgb_small", [11, 13], None, [6.5, 4.25, 19.5, 15.25]),
    }
    # RandomResizedCrop boxes, resized as the ImageNet recipe does (here to small outputs).
    for k, box in enumerate(_rrc_boxes(pils["rgb_big"], 4, seed=3)):
        geometry[f"rrc{k}_24x24"] = ("rgb_big", [24, 24], box, None)
    for k, box in enumerate(_rrc_boxes(pils["rgb_small"], 2, seed=4)):
        geometry[f"rrc_up{k}_40x40"] = ("rgb_small", [40, 40], box, None)

    t = {f"input_{name}": pack_u8(a) for name, a in arrays.items()}
    cases = {}
    for gname, (image, (oh, ow), crop, box) in geometry.items():
        for fname, filt in FILTERS.items():
            pil = pils[image]
            case = {"image": image, "filter": fname, "size": [oh, ow]}
            if box is not None:
                out = pil.resize((ow, oh), filt, box=tuple(box))
                case["box"] = box
            else:
                if crop is not None:
                    top, left, bh, bw = crop
                    pil = pil.crop((left, top, left + bw, top + bh))
                    case["crop"] = crop
                out = pil.resize((ow, oh), filt)
            a = np.asarray(out)
            assert a.shape[:2] == (oh, ow)
            name = f"{gname}_{fname}"
            t[f"out_{name}"] = pack_u8(a)
            cases[name] = case

    # Whether torchvision's resized_crop on a PIL image equals crop-then-resize here (it is
    # implemented as F.crop then F.resize); checked, not stored.
    import torchvision.transforms.functional as F
    for gname, (image, (oh, ow), crop, box) in geometry.items():
        if crop is None:
            continue
        for fname in ("bilinear", "bicubic"):
            mode = getattr(F.InterpolationMode, fname.upper())
            tv = np.asarray(F.resized_crop(pils[image], *crop, [oh, ow], mode))
            assert (tv.reshape(-1) == t[f"out_{gname}_{fname}"].numpy().view(np.uint8)[:tv.size]).all()

    params = {"images": shapes, "cases": cases}
    save(out_dir, "data_resample", t, params)
