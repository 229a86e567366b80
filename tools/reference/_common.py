"""Helpers shared by the reference modules: deterministic inputs and the one fixture writer.

Names. Fixture `X.safetensors` or `X_<suffix>.safetensors` (likewise `X_<suffix>.txt`, and raw
files such as `X_<suffix>.tar`) is written by tools/reference/X.py, X being the longest prefix of
the name, cut at an underscore, that names a script there (`fixture_script`); tests/test_util.cpp
derives the script the same way. `save`, `save_text` and `save_bytes` refuse a name that does not
lead back to the module calling them.

Raw files (`save_bytes`) are inputs a test reads as they are, so they carry no metadata; the script
records their provenance in a safetensors fixture of its own (their SHA-256 in its params).

Each script declares REQUIRES, the packages it needs (pip names), as one tuple literal on one
line: `REQUIRES = ("torch", "numpy", "safetensors", "timm")`. The C++ tests quote it when a
fixture is missing.

Metadata. Every fixture records, as safetensors `__metadata__` (string -> string):
  script    "tools/reference/X.py"
  command   "python3 tools/make_reference.py X"
  requires  REQUIRES joined by ", "
  python    the interpreter's version; plus one key per package of REQUIRES holding its version
            (e.g. "torch": "2.5.1", "timm": "1.0.11")
  params    the hyper-parameters the script used, as one JSON object (keys sorted, compact).
            Cases nest: {"adamw": {"lr": 0.05, "betas": [0.9, 0.999]}, ...}. Every value a C++
            test needs to repeat the computation (learning rates, eps, temperatures, shapes,
            model configs, ...) belongs here; the tests read it by dotted path ("adamw.lr")
            with test::Fixture::param_f / param_i / ... instead of typing it again. "{}" when
            the fixture has none.
A fixture may add keys of its own (safetensors_torch does); they must not clash with these.
Text fixtures carry the same entries as leading "# key: value" lines (`save_text`).

safetensors' own writer orders `__metadata__` differently on every run; `save` sorts it so
that regenerating a fixture gives the same bytes.
"""
import importlib.metadata
import inspect
import json
import pathlib
import platform
import sys

import torch
from safetensors.torch import save as _st_save

torch.set_default_dtype(torch.float32)

SCRIPTS = pathlib.Path(__file__).resolve().parent
RESERVED = ("script", "command", "requires", "python", "params")


def gen(seed):
    g = torch.Generator().manual_seed(seed)
    return g


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=gen(seed)) * scale


def as_double_leaf(t):
    """t as a float64 leaf that requires grad: gradients computed in double, stored as f32."""
    return t.detach().double().requires_grad_(True)


def as_float(t):
    """t detached, as f32 (what a fixture stores)."""
    return t.detach().float()


def scripts():
    """Stems of the reference scripts (tools/reference/*.py without the _-prefixed helpers)."""
    return sorted(p.stem for p in SCRIPTS.glob("*.py") if not p.stem.startswith("_"))


def fixture_script(file_name):
    """The script writing fixture `file_name` (e.g. "models_vit_grads.safetensors" -> "models"):
    the longest X in scripts() with stem == X or stem starting with X + "_"; None if none."""
    stem = file_name.split(".", 1)[0]
    best = None
    for s in scripts():
        if (stem == s or stem.startswith(s + "_")) and (best is None or len(s) > len(best)):
            best = s
    return best


def _caller_module():
    f = inspect.currentframe()
    while f is not None:
        name = f.f_globals.get("__name__", "")
        if name.rsplit(".", 1)[-1] != "_common":
            return sys.modules[name]
        f = f.f_back
    raise RuntimeError("fixture writer called from no module")


def _metadata(file_name, module, params):
    script = module.__name__.rsplit(".", 1)[-1]
    owner = fixture_script(file_name)
    if owner != script:
        raise RuntimeError(f"tools/reference/{script}.py writes {file_name}, but by the naming rule "
                           f"that file belongs to {f'tools/reference/{owner}.py' if owner else 'no script'}: "
                           f"name it {script}.* or {script}_<suffix>.*")
    requires = getattr(module, "REQUIRES", None)
    if not requires:
        raise RuntimeError(f"tools/reference/{script}.py declares no REQUIRES")
    meta = {
        "script": f"tools/reference/{script}.py",
        "command": f"python3 tools/make_reference.py {script}",
        "requires": ", ".join(requires),
        "python": platform.python_version(),
        "params": json.dumps(params or {}, sort_keys=True, separators=(",", ":"), allow_nan=False),
    }
    for pkg in requires:
        meta[pkg] = importlib.metadata.version(pkg)
    return meta


def _sorted_metadata(buf):
    """buf (a safetensors file) with its __metadata__ entries in key order; nothing else changes."""
    n = int.from_bytes(buf[:8], "little")
    header = buf[8:8 + n].decode("utf-8")
    obj = json.loads(header)
    dump = lambda o: json.dumps(o, separators=(",", ":"), ensure_ascii=False)  # noqa: E731
    assert dump(obj) == header.rstrip(" "), "unexpected safetensors header layout"
    obj["__metadata__"] = dict(sorted(obj["__metadata__"].items()))
    new = dump(obj).encode("utf-8")
    assert len(new) <= n
    return buf[:8] + new + b" " * (n - len(new)) + buf[8 + n:]


def pack_u8(arr):
    """uint8 array -> I32 tensor of its bytes, four per little-endian word, zero padded (mokd's
    tensors have no uint8 type; the C++ tests unpack with test::unpack_u8)."""
    import numpy as np
    import torch
    b = np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)
    b = np.concatenate([b, np.zeros((-len(b)) % 4, dtype=np.uint8)])
    return torch.from_numpy(b.view("<i4").copy())


def save(out_dir, name, tensors, params=None, extra_metadata=None):
    """Writes <out_dir>/<name>.safetensors: contiguous CPU tensors (detached) and the metadata
    described above; params is the JSON-able dict of hyper-parameters."""
    file_name = f"{name}.safetensors"
    meta = _metadata(file_name, _caller_module(), params)
    for k, v in (extra_metadata or {}).items():
        assert k not in meta, f"metadata key {k} is reserved"
        meta[k] = v
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    (out_dir / file_name).write_bytes(_sorted_metadata(_st_save(clean, metadata=meta)))


def save_text(out_dir, file_name, lines, params=None):
    """Writes <out_dir>/<file_name>: "# key: value" lines of the metadata, then lines."""
    meta = _metadata(file_name, _caller_module(), params)
    head = [f"# {k}: {v}" for k, v in sorted(meta.items())]
    (out_dir / file_name).write_text("\n".join(head + list(lines)) + "\n")


def save_bytes(out_dir, file_name, data):
    """Writes <out_dir>/<file_name> holding exactly `data` (a raw input such as a .tar archive);
    the name must follow the naming rule, as for `save`."""
    _metadata(file_name, _caller_module(), None)  # checks the name and REQUIRES
    (out_dir / file_name).write_bytes(data)
