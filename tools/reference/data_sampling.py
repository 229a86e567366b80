"""Fixtures for tests/test_sampling.cpp (io/random_resized_crop, io/random_erasing,
io/repeated_sampler, io/center_crop), computed with torch, timm and torchvision, without mokd:

- randperm_<case>: torch.randperm(n, generator=torch.Generator().manual_seed(seed)), whole for
  small n; for the ImageNet-sized n only its first and last 16 entries and sum(i * perm[i]);
- sampler_<case>: the index list of timm's RepeatAugSampler (what one rank iterates in one epoch,
  after set_epoch(epoch));
- eval_<case>: timm's eval transform (transforms_imagenet_eval, crop_mode 'center') geometry:
  [resize_h, resize_w, top, left, crop_h, crop_w], the size torchvision's Resize produces and the
  window CenterCrop takes, in resized coordinates (negative top/left: zero padding);
- rrc_<case>_*: statistics of 100,000 draws of timm's RandomResizedCropAndInterpolation.get_params
  from Python's `random` seeded with params.seed: histograms (counts) of the area fraction and of
  log(w / h), the fallback count (draws where no attempt fitted), and mean/std of top / H and
  left / W;
- erase_*: statistics of 100,000 calls of timm's RandomErasing._erase on a 224x224 image: the
  number of calls that erased, histograms of the box's area fraction and log(h / w), mean/std of
  top / H and left / W.

Histogram bins (params.rrc.bins, params.erase.bins): [lo, hi, count]; a value x goes to bin
min(max(floor((x - lo) / ((hi - lo) / count)), 0), count - 1).
"""
import math
import random

import torch
from PIL import Image

from ._common import save

REQUIRES = ("torch", "numpy", "safetensors", "timm", "torchvision", "pillow")

DRAWS = 100_000


def _randperm(n, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _bin(x, lo, hi, count):
    return min(max(int(math.floor((x - lo) / ((hi - lo) / count))), 0), count - 1)


def _moments(xs):
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / len(xs)
    return [m, math.sqrt(var)]


def _randperms(t, params):
    cases = {"n1_s0": (1, 0), "n2_s0": (2, 0), "n2_s1": (2, 1), "n10_s0": (10, 0),
             "n10_s2p32p5": (10, 2**32 + 5), "n37_s3": (37, 3), "n1000_s0": (1000, 0),
             "n1000_s7": (1000, 7), "n1000_s123456789": (1000, 123456789)}
    for name, (n, seed) in cases.items():
        t[f"randperm_{name}"] = _randperm(n, seed)
    big = {"n1281167_s0": (1281167, 0), "n1281167_s299": (1281167, 299)}
    for name, (n, seed) in big.items():
        p = _randperm(n, seed)
        t[f"randperm_{name}_head"] = p[:16].clone()
        t[f"randperm_{name}_tail"] = p[-16:].clone()
        t[f"randperm_{name}_checksum"] = (torch.arange(n, dtype=torch.int64) * p).sum().reshape(1)
    params["randperm"] = {k: {"n": n, "seed": s} for k, (n, s) in {**cases, **big}.items()}


def _samplers(t, params):
    from timm.data.distributed_sampler import RepeatAugSampler
    cases = {}
    for n in (1000, 1001, 37):
        for epoch in (0, 3):
            for world in (1, 2):
                for rank in range(world):
                    cases[f"n{n}_e{epoch}_w{world}_r{rank}"] = dict(n=n, epoch=epoch, world=world, rank=rank)
    # Padding wider than the repeated list, four ranks, and non-default options.
    cases["n2_e0_w8_r7"] = dict(n=2, epoch=0, world=8, rank=7)
    cases["n37_e1_w4_r3"] = dict(n=37, epoch=1, world=4, rank=3)
    cases["n600_e2_w3_r1_rep2_round0"] = dict(n=600, epoch=2, world=3, rank=1, num_repeats=2, selected_round=0)
    cases["n1000_e5_w2_r0_ratio1p5"] = dict(n=1000, epoch=5, world=2, rank=0, selected_ratio=1.5)
    cases["n1000_e1_w2_r1_noshuffle"] = dict(n=1000, epoch=1, world=2, rank=1, shuffle=False)
    for name, c in cases.items():
        c.setdefault("num_repeats", 3)
        c.setdefault("selected_round", 256)
        c.setdefault("selected_ratio", 0)
        c.setdefault("shuffle", True)
        s = RepeatAugSampler(range(c["n"]), num_replicas=c["world"], rank=c["rank"], shuffle=c["shuffle"],
                             num_repeats=c["num_repeats"], selected_round=c["selected_round"],
                             selected_ratio=c["selected_ratio"])
        s.set_epoch(c["epoch"])
        idx = list(iter(s))
        assert len(idx) == len(s)
        t[f"sampler_{name}"] = torch.tensor(idx, dtype=torch.int64)
    params["sampler"] = cases


def _eval_geometry(t, params):
    from timm.data.transforms_factory import transforms_imagenet_eval
    from torchvision import transforms
    cases = {"375x500_224_0p875": (375, 500, 224, 0.875), "500x375_224_0p875": (500, 375, 224, 0.875),
             "224x224_224_1p0": (224, 224, 224, 1.0), "256x256_224_0p875": (256, 256, 224, 0.875),
             "256x257_224_0p875": (256, 257, 224, 0.875), "333x517_224_0p9": (333, 517, 224, 0.9),
             "375x499_225_0p95": (375, 499, 225, 0.95), "101x77_64_0p875": (101, 77, 64, 0.875),
             "3x1000_224_0p875": (3, 1000, 224, 0.875), "300x401_224_1p15": (300, 401, 224, 1.15),
             "300x400_225_1p2": (300, 400, 225, 1.2), "17x9_32_1p0": (17, 9, 32, 1.0),
             "480x640_384_1p0": (480, 640, 384, 1.0), "500x333_288_0p95": (500, 333, 288, 0.95)}
    for name, (h, w, size, pct) in cases.items():
        tf = transforms_imagenet_eval(img_size=size, crop_pct=pct)
        resize, crop = tf.transforms[0], tf.transforms[1]
        assert isinstance(resize, transforms.Resize) and isinstance(crop, transforms.CenterCrop)
        rw, rh = resize(Image.new("L", (w, h))).size
        # Each resized pixel holds 1 + its index, padding holds 0: any non-zero output pixel gives
        # the window's offset.
        pos = (torch.arange(rh * rw, dtype=torch.int64) + 1).reshape(1, rh, rw)
        out = crop(pos)[0]
        ys, xs = torch.nonzero(out, as_tuple=True)
        y, x = int(ys[0]), int(xs[0])
        v = int(out[y, x]) - 1
        top, left = v // rw - y, v % rw - x
        t[f"eval_{name}"] = torch.tensor([rh, rw, top, left, out.shape[0], out.shape[1]], dtype=torch.int64)
    params["eval"] = {k: {"h": h, "w": w, "img_size": s, "crop_pct": p} for k, (h, w, s, p) in cases.items()}


def _rrc_stats(t, params):
    from timm.data.transforms import RandomResizedCropAndInterpolation as RRC
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
    bins = {"area": [0.0, 1.0, 20], "log_aspect": [-0.3, 0.3, 12]}
    cases = {"375x500": (375, 500), "64x640": (64, 640), "640x64": (640, 64)}
    # An attempt that fits calls random.randint twice; the fallback calls it never.
    calls = [0]
    randint = random.randint

    def counting_randint(a, b):
        calls[0] += 1
        return randint(a, b)

    random.randint = counting_randint
    try:
        for ci, (name, (h, w)) in enumerate(cases.items()):
            random.seed(1000 + ci)
            img = Image.new("L", (w, h))
            area_h, aspect_h = [0] * bins["area"][2], [0] * bins["log_aspect"][2]
            fallback, tops, lefts = 0, [], []
            for _ in range(DRAWS):
                before = calls[0]
                i, j, bh, bw = RRC.get_params(img, scale, ratio)
                fallback += calls[0] == before
                area_h[_bin(bh * bw / (h * w), *bins["area"])] += 1
                aspect_h[_bin(math.log(bw / bh), *bins["log_aspect"])] += 1
                tops.append(i / h)
                lefts.append(j / w)
            t[f"rrc_{name}_area_hist"] = torch.tensor(area_h, dtype=torch.int64)
            t[f"rrc_{name}_log_aspect_hist"] = torch.tensor(aspect_h, dtype=torch.int64)
            t[f"rrc_{name}_fallback"] = torch.tensor([fallback], dtype=torch.int64)
            t[f"rrc_{name}_top_mean_std"] = torch.tensor(_moments(tops), dtype=torch.float64)
            t[f"rrc_{name}_left_mean_std"] = torch.tensor(_moments(lefts), dtype=torch.float64)
    finally:
        random.randint = randint
    params["rrc"] = {"draws": DRAWS, "scale": list(scale), "ratio": list(ratio), "bins": bins,
                     "cases": {k: {"h": h, "w": w} for k, (h, w) in cases.items()}}


def _erase_stats(t, params):
    import timm.data.random_erasing as re_mod
    opts = {"probability": 0.5, "min_area": 0.02, "max_area": 1 / 3, "min_aspect": 0.3, "mode": "pixel"}
    eraser = re_mod.RandomErasing(probability=opts["probability"], min_area=opts["min_area"],
                                  max_area=opts["max_area"], min_aspect=opts["min_aspect"],
                                  mode=opts["mode"], device="cpu")
    h = w = 224
    c = 3
    bins = {"area": [0.0, 0.35, 14], "log_aspect": [-1.25, 1.25, 20]}

    class Recorder:
        """Stands in for the image: records the slice _erase writes."""
        key = None

        def __setitem__(self, key, value):
            self.key = key

    # The fill's torch draws do not touch Python's `random`; skip them.
    get_pixels = re_mod._get_pixels
    re_mod._get_pixels = lambda *a, **k: None
    try:
        random.seed(2024)
        area_h, aspect_h = [0] * bins["area"][2], [0] * bins["log_aspect"][2]
        erased, tops, lefts = 0, [], []
        for _ in range(DRAWS):
            rec = Recorder()
            eraser._erase(rec, c, h, w, torch.float32)
            if rec.key is None:
                continue
            erased += 1
            _, ys, xs = rec.key
            bh, bw = ys.stop - ys.start, xs.stop - xs.start
            area_h[_bin(bh * bw / (h * w), *bins["area"])] += 1
            aspect_h[_bin(math.log(bh / bw), *bins["log_aspect"])] += 1
            tops.append(ys.start / h)
            lefts.append(xs.start / w)
    finally:
        re_mod._get_pixels = get_pixels
    t["erase_erased"] = torch.tensor([erased], dtype=torch.int64)
    t["erase_area_hist"] = torch.tensor(area_h, dtype=torch.int64)
    t["erase_log_aspect_hist"] = torch.tensor(aspect_h, dtype=torch.int64)
    t["erase_top_mean_std"] = torch.tensor(_moments(tops), dtype=torch.float64)
    t["erase_left_mean_std"] = torch.tensor(_moments(lefts), dtype=torch.float64)
    params["erase"] = {"draws": DRAWS, "image": [h, w, c], "bins": bins, **opts}


def generate(out_dir):
    t, params = {}, {}
    _randperms(t, params)
    _samplers(t, params)
    _eval_geometry(t, params)
    _rrc_stats(t, params)
    _erase_stats(t, params)
    save(out_dir, "data_sampling", t, params)
