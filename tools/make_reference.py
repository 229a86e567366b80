#!/usr/bin/env python3
"""Writes the reference fixtures under tests/data/ that the C++ tests compare against.

Everything is computed on the CPU with PyTorch (and timm where models are involved), independently
of mokd. Each module X in tools/reference/ exposes `generate(out_dir)` and writes the fixtures
named after it. Rerun after changing a module:

    pip install torch numpy safetensors timm     # CPU wheels are enough
    python3 tools/make_reference.py              # all fixtures
    python3 tools/make_reference.py ops_nn       # only tools/reference/ops_nn.py

Naming rule: fixture `X.safetensors` or `X_<suffix>.safetensors` (or `X_<suffix>.txt`, or a raw
input such as `X_<suffix>.tar`) is written by tools/reference/X.py, X being the longest prefix, cut
at an underscore, that names a script (models_vit_grads.safetensors: models.py;
safetensors_torch_expected.safetensors: safetensors_torch.py). The writer
(tools/reference/_common.py) refuses names that break it, and the C++ tests (tests/test_util.cpp)
derive the script of a missing fixture by it. Every fixture records its script, command, package
versions and hyper-parameters in its metadata (a raw input, in its script's safetensors fixture);
see tools/reference/_common.py for the keys.
"""
import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent
OUT = ROOT.parent / "tests" / "data"


def main(argv):
    sys.path.insert(0, str(ROOT))
    from reference._common import fixture_script, scripts
    names = argv or scripts()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        mod = importlib.import_module(f"reference.{name}")
        mod.generate(OUT)
        print(f"wrote fixtures of reference/{name}.py")
    orphans = [p.name for p in sorted(OUT.iterdir()) if fixture_script(p.name) is None]
    if orphans:
        sys.exit(f"tests/data holds files no script writes (naming rule above): {', '.join(orphans)}")


if __name__ == "__main__":
    main(sys.argv[1:])
