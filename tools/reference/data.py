"""Fixtures for tests/test_data.cpp (io/dataset, io/augment), computed without mokd:

- fashion_*: the Fashion-MNIST test split read with gzip + numpy from the Debian package's files
  (first 16 labels, image 0 and its pixel sum), skipped when the files are absent;
- resize_*: PIL's bilinear resize (antialiased when shrinking) of a random uint8 image, whole and
  after a crop (torchvision's RandomResizedCrop does crop, then resize);
- norm_*: torchvision ToTensor + Normalize of the same image (NHWC);
- mixup_*: timm's mixup_target for fixed labels, lam and smoothing.

params: fashion_mnist (the folder read, absent when it was missing), image ([h, w, c] of the
random image), resize.<case> (box [top, left, height, width] cropped before resizing to size
[h, w]), mixup (num_classes, lam, smoothing).
"""
import gzip
import os

import numpy as np
import torch
from PIL import Image

from ._common import save

REQUIRES = ("torch", "numpy", "safetensors", "timm", "torchvision", "pillow")

FMNIST = "/usr/share/datasets/fashion-mnist"


def _idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def generate(out_dir):
    t = {}
    if os.path.isdir(FMNIST):
        images = _idx(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"))
        labels = _idx(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz"))
        t["fashion_labels16"] = torch.from_numpy(labels[:16].astype(np.int64))
        t["fashion_image0"] = torch.from_numpy(images[0].astype(np.float32)).reshape(28, 28, 1)
        t["fashion_sum0"] = torch.tensor([int(images[0].astype(np.int64).sum())], dtype=torch.int64)
        t["fashion_count"] = torch.tensor([images.shape[0]], dtype=torch.int64)

    params = {"fashion_mnist": FMNIST} if "fashion_labels16" in t else {}
    h, w = 13, 17
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    t["resize_input"] = torch.from_numpy(img.astype(np.float32))
    # Boxes (top, left, height, width), output sizes (h, w); torchvision's RandomResizedCrop does
    # crop, then resize.
    resize = {"resize_down_6x8": {"box": [0, 0, h, w], "size": [6, 8]},
              "resize_up_29x31": {"box": [0, 0, h, w], "size": [29, 31]},
              "resize_box_7x5": {"box": [2, 3, 9, 11], "size": [7, 5]}}
    for name, c in resize.items():
        (top, left, bh, bw), (oh, ow) = c["box"], c["size"]
        part = pil if [top, left, bh, bw] == [0, 0, h, w] else pil.crop((left, top, left + bw, top + bh))
        # PIL sizes are (width, height).
        t[name] = torch.from_numpy(np.asarray(part.resize((ow, oh), Image.BILINEAR)).astype(np.float32))
    params.update(image=[h, w, 3], resize=resize)

    import torchvision.transforms as T
    mean, std = [0.2860, 0.4, 0.5], [0.3530, 0.25, 0.2]
    x = T.Normalize(mean, std)(T.ToTensor()(pil))  # CHW
    t["norm_mean"] = torch.tensor(mean)
    t["norm_std"] = torch.tensor(std)
    t["norm_out"] = x.permute(1, 2, 0).contiguous()

    from timm.data.mixup import mixup_target
    mixup = {"num_classes": 5, "lam": 0.3, "smoothing": 0.1}
    target = torch.tensor([3, 0, 4, 4, 1], dtype=torch.int64)
    t["mixup_labels"] = target
    t["mixup_soft"] = mixup_target(target, mixup["num_classes"], lam=mixup["lam"], smoothing=mixup["smoothing"])
    params["mixup"] = mixup
    save(out_dir, "data", t, params)
