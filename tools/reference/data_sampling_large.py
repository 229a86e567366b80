"""Fixture for the opt-in test SamplingRandperm.LargePathMatchesTorch (tests/test_sampling.cpp,
run with MOKD_LARGE_RANDPERM=1): torch.randperm(n, generator=torch.Generator().manual_seed(seed))
for the smallest n on torch's 64-bit path (n = 2^32 // 20 = 214,748,364), as its first and last 16
entries and sum(i * perm[i]) (an int64 sum, which wraps modulo 2^64 here). Kept apart from data_sampling.py because torch takes about a
minute and 2 GB for it.

params: n, seed.
"""
import torch

from ._common import save

REQUIRES = ("torch", "safetensors")


def generate(out_dir):
    n, seed = (2**32 - 1) // 20, 0
    p = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    checksum = torch.zeros((), dtype=torch.int64)
    step = 1 << 24
    for start in range(0, n, step):
        chunk = p[start:start + step]
        checksum += (torch.arange(start, start + chunk.numel(), dtype=torch.int64) * chunk).sum()
    t = {"head": p[:16].clone(), "tail": p[-16:].clone(), "checksum": checksum.reshape(1)}
    save(out_dir, "data_sampling_large", t, {"n": n, "seed": seed})
