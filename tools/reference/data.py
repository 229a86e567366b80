"""Fixtures for tests/test_data.cpp (io/dataset, io/augment), computed without mokd:

- fashion_*: the Fashion-MNIST test split read with gzip + numpy from the Debian package's files
  (first 16 labels, image 0 and its pixel sum), skipped when the files are absent;
- resize_*: PIL's bilinear resize (antialiased when shrinking) of a random uint8 image, whole and
  after a crop (torchvision's RandomResizedCrop does crop, then resize);
- norm_*: torchvision ToTensor + Normalize of the same image (NHWC);
- mixup_*: timm's mixup_target for fixed labels, lam and smoothing.
"""
import gzip
import os

import numpy as np
import torch
from PIL import Image

from ._common import save

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

    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(13, 17, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    t["resize_input"] = torch.from_numpy(img.astype(np.float32))
    # PIL sizes are (width, height).
    t["resize_down_6x8"] = torch.from_numpy(np.asarray(pil.resize((8, 6), Image.BILINEAR)).astype(np.float32))
    t["resize_up_29x31"] = torch.from_numpy(np.asarray(pil.resize((31, 29), Image.BILINEAR)).astype(np.float32))
    # Crop box top=2, left=3, height=9, width=11, then resize to 7x5 (h x w).
    crop = pil.crop((3, 2, 3 + 11, 2 + 9))
    t["resize_box_7x5"] = torch.from_numpy(np.asarray(crop.resize((5, 7), Image.BILINEAR)).astype(np.float32))

    import torchvision.transforms as T
    mean, std = [0.2860, 0.4, 0.5], [0.3530, 0.25, 0.2]
    x = T.Normalize(mean, std)(T.ToTensor()(pil))  # CHW
    t["norm_mean"] = torch.tensor(mean)
    t["norm_std"] = torch.tensor(std)
    t["norm_out"] = x.permute(1, 2, 0).contiguous()

    from timm.data.mixup import mixup_target
    target = torch.tensor([3, 0, 4, 4, 1], dtype=torch.int64)
    t["mixup_labels"] = target
    t["mixup_soft"] = mixup_target(target, 5, lam=0.3, smoothing=0.1)
    save(out_dir, "data", t)
