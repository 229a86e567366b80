#!/usr/bin/env python3
"""Writes the reference fixtures under tests/data/ that the C++ tests compare against.

Everything is computed on the CPU with PyTorch (and timm where models are involved), independently
of mokd. Each module in tools/reference/ owns one or more fixture files and exposes
`generate(out_dir)`. Rerun after changing a module:

    pip install torch numpy safetensors timm     # CPU wheels are enough
    python3 tools/make_reference.py              # all fixtures
    python3 tools/make_reference.py ops_nn       # only tools/reference/ops_nn.py
"""
import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent
OUT = ROOT.parent / "tests" / "data"


def main(argv):
    sys.path.insert(0, str(ROOT))
    names = argv or sorted(p.stem for p in (ROOT / "reference").glob("*.py") if not p.stem.startswith("_"))
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        mod = importlib.import_module(f"reference.{name}")
        mod.generate(OUT)
        print(f"wrote fixtures of reference/{name}.py")


if __name__ == "__main__":
    main(sys.argv[1:])
