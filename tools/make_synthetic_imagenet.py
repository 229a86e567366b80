#!/usr/bin/env python3
"""Writes a synthetic ImageNet-like ImageFolder, for exercising the data path (decode, resize,
augmentation, loader throughput) without the real dataset:

    root/train/<class>/<class>_<i>.JPEG
    root/val/<class>/<class>_val_<i>.JPEG

with ImageNet's upper-case ".JPEG" extension and WordNet-like class folder names (n00000000,
n00000001, ...). The images are what the decoder and the transforms meet in ImageNet, not its
content:

- sizes: most (60%) are 500 x 375 or 375 x 500, ImageNet's most common sizes; the rest have a
  short side in [200, 500] and an aspect ratio (width / height) in [0.5, 2];
- content: a smooth gradient, a few filled shapes (discs, rectangles) with sharp edges, texture at
  four scales (mostly in luminance, colour only at coarse scales) and mild pixel noise, so JPEG
  compresses them about as much as photographs (a 500 x 375 file takes about 90 KiB);
- encoding: baseline JPEG, quality 90, 4:2:0 chroma subsampling (Pillow's defaults apart from the
  quality), as most ImageNet files are;
- a few odd files, as in ImageNet: about 1 in 50 greyscale (1 component) and about 1 in 100 CMYK
  (Adobe, 4 components; ImageNet's train set holds 22).

Everything is drawn from --seed: the same arguments write the same bytes. Only numpy and Pillow
are needed.

    python3 tools/make_synthetic_imagenet.py /tmp/imagenet-synth --classes 10 \\
        --train-per-class 50 --val-per-class 10 --seed 0
"""
import argparse
import pathlib

import numpy as np
from PIL import Image

COMMON = ((375, 500), (500, 375))  # (height, width)


def image_size(rng):
    """(height, width): ImageNet's common sizes most of the time, else a random short side and
    aspect ratio."""
    if rng.random() < 0.6:
        return COMMON[rng.integers(len(COMMON))]
    short = int(rng.integers(200, 501))
    ratio = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height
    if ratio >= 1:
        return short, int(round(short * ratio))
    return int(round(short / ratio)), short


# Texture octaves: grid cells across the long side, and the standard deviation of each octave for
# luminance (shared by R, G, B) and for colour (per channel, coarse only, as in photographs).
OCTAVE_CELLS = (4, 16, 64, 250)
LUMA_STD = (30, 25, 25, 35)
CHROMA_STD = (20, 10, 5, 0)


def octaves(rng, h, w, stds, channels):
    """Sum of Gaussian noise grids upsampled (bicubic) to h x w: [h, w, channels] float32."""
    out = np.zeros((h, w, channels), np.float32)
    for cells, std in zip(OCTAVE_CELLS, stds):
        if std == 0:
            continue
        gh, gw = max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w))
        g = rng.normal(0, std, (gh, gw, channels)).astype(np.float32)
        for c in range(channels):
            out[:, :, c] += np.asarray(Image.fromarray(g[:, :, c], "F").resize((w, h), Image.BICUBIC))
    return out


def content(rng, h, w):
    """An RGB uint8 [h, w, 3] image: gradient background, filled shapes, multi-scale texture
    (mostly luminance) and mild noise; at quality 90 a 500 x 375 one takes about 90 KiB, close to
    ImageNet's average file."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x / w + np.sin(angle) * y / h + 1) / 2  # roughly in [0, 1]
    img = c0 + (c1 - c0) * t[:, :, None]
    for _ in range(int(rng.integers(2, 7))):
        color = rng.uniform(0, 255, 3)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if rng.random() < 0.5:
            r = rng.uniform(0.05, 0.3) * min(h, w)
            mask = (y - cy) ** 2 + (x - cx) ** 2 < r * r
        else:
            hh, hw = rng.uniform(0.05, 0.25) * h, rng.uniform(0.05, 0.25) * w
            mask = (np.abs(y - cy) < hh) & (np.abs(x - cx) < hw)
        img[mask] = 0.3 * img[mask] + 0.7 * color
    img += octaves(rng, h, w, LUMA_STD, 1) + octaves(rng, h, w, CHROMA_STD, 3)
    img += rng.normal(0, 3, (h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(path, rng):
    h, w = image_size(rng)
    im = Image.fromarray(content(rng, h, w))
    kind = rng.random()
    if kind < 0.01:
        im = im.convert("CMYK")  # Pillow writes Adobe CMYK, stored inverted
    elif kind < 0.03:
        im = im.convert("L")
    im.save(path, "JPEG", quality=90, subsampling=2)
    return im.mode


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=pathlib.Path, help="output folder (train/ and val/ inside)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--train-per-class", type=int, default=20)
    ap.add_argument("--val-per-class", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.classes < 1 or args.train_per_class < 0 or args.val_per_class < 0:
        ap.error("--classes must be >= 1 and the per-class counts >= 0")

    modes = {}
    for split, count in (("train", args.train_per_class), ("val", args.val_per_class)):
        for c in range(args.classes):
            name = f"n{c:08d}"
            folder = args.root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            # One stream per (seed, split, class): a class's files do not depend on the others.
            rng = np.random.default_rng([args.seed, split == "val", c])
            for i in range(count):
                stem = f"{name}_{i}" if split == "train" else f"{name}_val_{i}"
                mode = write_image(folder / f"{stem}.JPEG", rng)
                modes[mode] = modes.get(mode, 0) + 1
    total = sum(modes.values())
    summary = ", ".join(f"{n} {m}" for m, n in sorted(modes.items()))
    print(f"wrote {total} JPEGs under {args.root} ({summary})")


if __name__ == "__main__":
    main()
