"""Fixtures for tests/test_randaugment.cpp (io/image_ops, io/randaugment), computed with timm's
RandAugment ops on Pillow and with torchvision's ColorJitter functions, without mokd:

data_randaugment.safetensors
- image0 (37x53) and image1 (24x24): RGB uint8 images with structure (gradients, a disk, stripes,
  a few flat patches) plus some noise, in a narrowed range so that autocontrast, equalize and
  sharpness change them;
- every op of timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS at magnitudes 0, 5, 9, 10
  (both signs for the ops whose level function negates at random), the op called as timm's
  AugmentOp calls it: NAME_TO_OP[name](img, *LEVEL_TO_ARG[name](magnitude, hparams), **kwargs),
  with the sign forced by replacing timm's _randomly_negate; kwargs (fillcolor, resample) and
  hparams are read from the RandAugment that timm's create_transform builds for DeiT's training
  pipeline (img_size 224, bicubic, ImageNet mean, 'rand-m9-mstd0.5-inc1');
- the geometric ops again with bilinear resampling, and Rotate at magnitudes 30, 45, 60, 90
  (90, 135, 180, 270 degrees: Pillow's transpose fast paths on the square image);
- enhance_*: ImageEnhance.Color/Contrast/Brightness/Sharpness at a few factors, both blend
  branches (interpolation in [0, 1], clipped extrapolation outside);
- jitter_*: torchvision's adjust_brightness/contrast/saturation applied in a given order with given
  factors (what ColorJitter does after drawing them).
Outputs identical within an image are stored once; params.cases[i].out names the tensor.
Pillow 13 raises on posterize(img, 0) (timm then fails); the fixture defines it as black, what
older Pillow returned.

data_randaugment_dist.safetensors: for each spec of params.specs, 50,000 images (100,000 layers
for n=2) through timm's own RandAugment with its op functions replaced by recorders: how often
each op is chosen, how often a chosen op is applied, the histogram of the applied magnitudes (after
noise and clipping) and how often a sign draw negates.

uint8 images are stored packed 4 bytes per I32 element (little endian, zero padded), the shape in
params, because mokd's safetensors reader has no U8 tensors.
"""
import random

import numpy as np
import torch
from PIL import Image

from ._common import pack_u8, save

REQUIRES = ("torch", "numpy", "safetensors", "timm", "torchvision", "pillow")

DEIT_SPEC = "rand-m9-mstd0.5-inc1"
DIST_SPECS = ["rand-m9-mstd0.5-inc1", "rand-m7-n3-mstd101-p0.7-inc0", "rand-m12-mmax15-mstd2-inc1"]
DIST_IMAGES = 50000
MAGNITUDES = [0, 5, 9, 10]
GEOMETRIC = ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
ENHANCE_FACTORS = [0.0, 0.37, 0.5, 1.0, 1.3, 1.9, 2.6]
HIST_BINS = 10  # equal bins over [0, upper), plus one bin for magnitude == upper (the clip)



def make_images():
    rng = np.random.default_rng(20240611)
    h, w = 37, 53
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 50 + 140 * x / (w - 1)
    g = 70 + 110 * y / (h - 1)
    b = 90 + 60 * np.sin(x / 4.0) * np.cos(y / 5.0)
    disk = (x - 30) ** 2 + (y - 17) ** 2 < 9 ** 2
    r[disk], g[disk], b[disk] = 200, 60, 150
    b[5:12, 3:14] = 40  # a flat patch
    img0 = np.stack([r, g, b], -1) + rng.normal(0, 6, (h, w, 3))
    img0 = np.clip(np.rint(img0), 0, 255).astype(np.uint8)

    n = 24
    y, x = np.mgrid[0:n, 0:n]
    img1 = np.zeros((n, n, 3), np.float64)
    img1[..., 0] = np.where((x // 4) % 2 == 0, 70, 160)  # stripes
    img1[..., 1] = 60 + 5 * ((x + y) // 3)  # a staircase ramp
    img1[..., 2] = np.where((x - 12) ** 2 + (y - 9) ** 2 < 36, 190, 100)
    img1[2:8, 14:22, :] = (120, 120, 120)
    img1 += rng.integers(-3, 4, (n, n, 3))
    img1 = np.clip(img1, 0, 255).astype(np.uint8)
    return [img0, img1]


def deit_rand_augment(spec):
    """The RandAugment inside timm's DeiT training transform for `spec`."""
    from timm.data import IMAGENET_DEFAULT_MEAN, create_transform
    t = create_transform(224, is_training=True, auto_augment=spec, interpolation="bicubic",
                         mean=IMAGENET_DEFAULT_MEAN, color_jitter=0.3)
    found = [x for x in t.transforms if type(x).__name__ == "RandAugment"]
    assert len(found) == 1, t
    return found[0]


def op_cases(images, hparams, kwargs, outputs):
    import timm.data.auto_augment as aa
    signed = set()

    def probe_negate(v):
        signed.add(True)
        return v

    names = list(dict.fromkeys(aa._RAND_TRANSFORMS + aa._RAND_INCREASING_TRANSFORMS))
    bilinear = dict(kwargs, resample=Image.Resampling.BILINEAR)
    jobs = []  # (name, magnitude, interpolation name, kwargs)
    for name in names:
        for m in MAGNITUDES:
            jobs.append((name, m, "bicubic", kwargs))
        if name in GEOMETRIC:
            for m in (5, 10):
                jobs.append((name, m, "bilinear", bilinear))
    for m in (30, 45, 60, 90):
        jobs.append(("Rotate", m, "bicubic", kwargs))

    cases = []
    original = aa._randomly_negate
    try:
        for name, m, interp, kw in jobs:
            level_fn = aa.LEVEL_TO_ARG[name]
            # Does the level function draw a sign? Probe it once.
            signed.clear()
            aa._randomly_negate = probe_negate
            if level_fn is not None:
                level_fn(float(m), hparams)
            has_sign = bool(signed)
            for negate in ([False, True] if has_sign else [False]):
                aa._randomly_negate = (lambda v: -v) if negate else (lambda v: v)
                args = level_fn(float(m), hparams) if level_fn is not None else ()
                for k, img in enumerate(images):
                    pil = Image.fromarray(img)
                    try:
                        out = np.asarray(aa.NAME_TO_OP[name](pil, *args, **kw))
                    except ValueError:
                        assert name.startswith("Posterize") and args == (0,), (name, args)
                        out = np.zeros_like(img)  # posterize to 0 bits: black
                    cases.append({"op": name, "magnitude": m, "negate": negate, "image": k,
                                  "signed": has_sign, "interpolation": interp,
                                  "args": [float(a) for a in args], "out": outputs.add(k, out)})
    finally:
        aa._randomly_negate = original
    return cases


class Outputs:
    """The expected images, each distinct content of an input image stored once."""

    def __init__(self):
        self.tensors, self.names = {}, {}

    def add(self, image_index, out):
        """Stores `out` (an op's result on image `image_index`); returns its tensor name."""
        key = (image_index, out.tobytes())
        if key not in self.names:
            self.names[key] = f"out{image_index}_{len(self.names)}"
            self.tensors[self.names[key]] = pack_u8(out)
        return self.names[key]


def enhance_cases(images, outputs):
    from PIL import ImageEnhance
    cases = []
    for op in ("Color", "Contrast", "Brightness", "Sharpness"):
        for f in ENHANCE_FACTORS:
            for k, img in enumerate(images):
                out = np.asarray(getattr(ImageEnhance, op)(Image.fromarray(img)).enhance(f))
                cases.append({"op": op, "factor": f, "image": k, "out": outputs.add(k, out)})
    return cases


def jitter_cases(images, outputs):
    import torchvision.transforms.functional as F
    rng = random.Random(5)
    fns = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation]
    cases = []
    for _ in range(6):
        order = rng.sample(range(3), 3)
        factors = [rng.uniform(0.6, 1.4) for _ in range(3)]
        for k, img in enumerate(images):
            pil = Image.fromarray(img)
            for i in order:
                pil = fns[i](pil, factors[i])
            cases.append({"order": order, "brightness": factors[0], "contrast": factors[1],
                          "saturation": factors[2], "image": k,
                          "out": outputs.add(k, np.asarray(pil))})
    return cases


def distribution(spec):
    """timm's RandAugment for spec, run on DIST_IMAGES images with recording op functions."""
    import timm.data.auto_augment as aa
    ra = deit_rand_augment(spec)
    names = [op.name for op in ra.ops]
    rec = {"chosen": None, "magnitude": [], "negate": []}
    counts = np.zeros(len(names), np.int64)

    class Chosen:
        def __init__(self, index, op):
            self.index, self.op = index, op

        def __call__(self, img):
            counts[self.index] += 1
            return self.op(img)

    for op in ra.ops:
        inner = op.level_fn

        def level(m, hp, inner=inner):
            rec["magnitude"].append(m)
            return inner(m, hp) if inner is not None else ()

        op.level_fn = level
        op.aug_fn = lambda img, *a, **k: img

    def negate(v):
        neg = random.random() > 0.5  # as timm's _randomly_negate
        rec["negate"].append(neg)
        return -v if neg else v

    ra.ops = [Chosen(i, op) for i, op in enumerate(ra.ops)]
    original = aa._randomly_negate
    aa._randomly_negate = negate
    try:
        random.seed(1)
        np.random.seed(1)
        img = Image.new("RGB", (4, 4))
        for _ in range(DIST_IMAGES):
            ra(img)
    finally:
        aa._randomly_negate = original
    op0 = ra.ops[0].op
    upper = float(op0.magnitude_max or aa._LEVEL_DENOM)
    mags = np.asarray(rec["magnitude"])
    hist = np.histogram(mags[mags < upper], bins=HIST_BINS, range=(0.0, upper))[0]
    hist = np.append(hist, np.sum(mags == upper))
    layers = DIST_IMAGES * ra.num_layers
    info = {"spec": spec, "ops": names, "images": DIST_IMAGES, "layers": layers,
            "upper": upper, "bins": HIST_BINS}
    t = {"op_counts": torch.from_numpy(counts),
         "applied": torch.tensor([len(mags)], dtype=torch.int64),
         "magnitude_hist": torch.from_numpy(hist.astype(np.int64)),
         "sign_draws": torch.tensor([len(rec["negate"])], dtype=torch.int64),
         "negated": torch.tensor([int(np.sum(rec["negate"]))], dtype=torch.int64)}
    return info, t


def generate(out_dir):
    images = make_images()
    ra = deit_rand_augment(DEIT_SPEC)
    hparams, kwargs = ra.ops[0].hparams, ra.ops[0].kwargs
    outputs = Outputs()
    cases = op_cases(images, hparams, kwargs, outputs)
    enhance = enhance_cases(images, outputs)
    jitter = jitter_cases(images, outputs)
    tensors = outputs.tensors
    for k, img in enumerate(images):
        tensors[f"image{k}"] = pack_u8(img)
    params = {
        "images": [list(img.shape) for img in images],
        "hparams": {"translate_const": hparams["translate_const"],
                    "img_mean": list(hparams["img_mean"]),
                    "interpolation": "bicubic" if kwargs["resample"] == Image.Resampling.BICUBIC
                    else str(kwargs["resample"]),
                    "translate_pct": hparams.get("translate_pct", 0.45),
                    "fillcolor": list(kwargs["fillcolor"])},
        "spec": DEIT_SPEC, "cases": cases, "enhance": enhance, "jitter": jitter}
    save(out_dir, "data_randaugment", tensors, params)

    dist_t, dist_p = {}, {"specs": []}
    for i, spec in enumerate(DIST_SPECS):
        info, t = distribution(spec)
        dist_p["specs"].append(info)
        dist_t.update({f"spec{i}_{k}": v for k, v in t.items()})
    save(out_dir, "data_randaugment_dist", dist_t, dist_p)
