"""Helpers shared by the reference modules: deterministic inputs and fixture writing."""
import torch
from safetensors.torch import save_file

torch.set_default_dtype(torch.float32)


def gen(seed):
    g = torch.Generator().manual_seed(seed)
    return g


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=gen(seed)) * scale


def save(out_dir, name, tensors):
    """Writes tests/data/<name>.safetensors with contiguous CPU tensors (detached)."""
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(clean, str(out_dir / f"{name}.safetensors"))
