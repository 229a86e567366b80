#!/usr/bin/env python3
"""The Pillow + timm peer of `mokd_train bench-data`: images/s of one thread through the same
per-sample stages on the same folder, so the loader's speed can be quoted as a ratio against the
peer measured in the same run on the same machine.

Stages (files read into memory first, as bench-data does):
  decode  Image.open(f).convert("RGB"), timm's loader;
  train   timm's DeiT train transform with use_prefetcher=True (RandomResizedCrop bicubic, flip,
          RandAugment rand-m9-mstd0.5-inc1, to uint8): what a timm worker does when normalisation
          and random erasing run on the GPU, as mokd's loader workers do;
  eval    timm's eval transform (resize 256, centre crop 224, bicubic) to uint8.

  python3 tools/peer_bench_data.py /tmp/synth --seconds 3

Prints one line per stage: `peer <stage>: X images/s (1 thread, N images)`.
"""
import argparse
import io
import os
import time

from PIL import Image


def files(root, limit):
    out = []
    train = os.path.join(root, "train")
    for cls in sorted(os.listdir(train)):
        d = os.path.join(train, cls)
        if not os.path.isdir(d):  # e.g. mokd's listing index beside the class folders
            continue
        for name in sorted(os.listdir(d)):
            out.append(os.path.join(d, name))
    step = max(1, len(out) // limit)  # spread over the classes, as bench-data's subset
    return out[::step][:limit]


def timed(fn, blobs, seconds):
    fn(blobs[0])  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn(blobs[n % len(blobs)])
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="an image folder with train/<class>/*")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()

    import torch
    from timm.data import create_transform

    torch.set_num_threads(1)
    # Pillow 13 raises on posterize to 0 bits, which timm's RandAugment reaches at high magnitude;
    # older Pillow (and mokd) give black. The peer does the same so that it runs at all.
    import timm.data.auto_augment as aa
    _posterize = aa.posterize

    def posterize(img, bits, **kw):
        return Image.new(img.mode, img.size) if bits < 1 else _posterize(img, bits, **kw)

    for name, op in list(aa.NAME_TO_OP.items()):
        if op is _posterize:
            aa.NAME_TO_OP[name] = posterize
    blobs = [open(p, "rb").read() for p in files(args.root, args.samples)]
    train = create_transform(args.size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1",
                             interpolation="bicubic", use_prefetcher=True)
    evalt = create_transform(args.size, is_training=False, interpolation="bicubic", crop_pct=0.875,
                             use_prefetcher=True)

    def decode(b):
        return Image.open(io.BytesIO(b)).convert("RGB")

    stages = [("decode", decode), ("train", lambda b: train(decode(b))),
              ("eval", lambda b: evalt(decode(b)))]
    for name, fn in stages:
        rate = timed(fn, blobs, args.seconds)
        print(f"peer {name}: {rate:.0f} images/s (1 thread, {len(blobs)} images)", flush=True)


if __name__ == "__main__":
    main()
