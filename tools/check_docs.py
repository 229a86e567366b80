#!/usr/bin/env python3
"""Checks that the docs match the code (run by ctest as docs.check):

1. every repository path named in README.md and docs/*.md exists (brace forms such as
   `mokd/distill.{h,cpp}` are expanded, globs such as `tests/test_*.cpp` must match a file);
2. every `mokd_train` command shown in README.md's code blocks parses: its subcommand exists
   (`mokd_train SUB --help` succeeds) and each `--key` it names appears in that help;
3. README.md's configuration table is what `mokd_train keys` prints.

    python3 tools/check_docs.py --mokd-train build/mokd_train

Prints one line per problem and exits 1 if there is any.
"""
import argparse
import glob
import itertools
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A path is a token that starts with one of the repository's own top-level entries.
TOP = ("engine/", "io/", "models/", "mokd/", "kernels/", "tools/", "tests/", "bench/", "fuzz/",
       "docs/", "configs/", ".ci/")
TOP_FILES = ("README.md", "NOTES.md", "CMakeLists.txt", ".clang-format")
TOKEN = re.compile(r"[A-Za-z0-9_.*{},/+-]+")


def expand_braces(token):
    """`a/b.{h,cpp}` -> [`a/b.h`, `a/b.cpp`] (several groups combine)."""
    parts = re.split(r"(\{[^{}]*\})", token)
    options = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
    return ["".join(c) for c in itertools.product(*options)]


def named_paths(text):
    for line_no, line in enumerate(text.splitlines(), 1):
        for m in TOKEN.finditer(line):
            if line[m.end():m.end() + 1] == "<":  # a placeholder such as engine/cpu/<family>.cpp
                continue
            tok = m.group(0).rstrip(".,:;")
            if not (tok.startswith(TOP) or tok in TOP_FILES):
                continue
            if "{" in tok and "}" not in tok:  # a brace group cut by the tokenizer
                continue
            yield line_no, tok


def check_paths(doc):
    problems = []
    text = doc.read_text()
    for line_no, tok in named_paths(text):
        for path in expand_braces(tok):
            if any(ch in path for ch in "*?["):
                ok = bool(glob.glob(str(ROOT / path)))
            else:
                ok = (ROOT / path).exists()
            if not ok:
                problems.append(f"{doc.relative_to(ROOT)}:{line_no}: names {path}, which does not exist")
    return problems


def readme_commands(text):
    """The mokd_train command lines of README.md's code blocks (continuations joined)."""
    lines, in_block = [], False
    for line_no, line in enumerate(text.splitlines(), 1):
        indented = line.startswith("    ")
        if line.strip().startswith("```"):
            in_block = not in_block
            continue
        if in_block or indented:
            lines.append((line_no, line.strip()))
    commands, current = [], None
    for line_no, line in lines:
        if current is not None:
            current = (current[0], current[1] + " " + line.rstrip("\\").strip())
            if not line.endswith("\\"):
                commands.append(current)
                current = None
            continue
        m = re.search(r"(?:^|[\s/])mokd_train\s+(.*)$", line)
        if not m:
            continue
        body = m.group(1).split("#", 1)[0]  # drop a trailing comment
        if line.endswith("\\"):
            current = (line_no, body.rstrip("\\").strip())
        else:
            commands.append((line_no, body.strip()))
    return commands


def check_commands(mokd_train):
    problems, helps = [], {}
    text = (ROOT / "README.md").read_text()
    commands = readme_commands(text)
    if not commands:
        return ["README.md: shows no mokd_train command (the parser found none)"], 0
    for line_no, cmd in commands:
        words = cmd.replace("[", " ").replace("]", " ").split()
        if not words:
            continue
        sub = words[0]
        if sub not in helps:
            r = subprocess.run([mokd_train, sub, "--help"], capture_output=True, text=True)
            helps[sub] = r.stdout + r.stderr if r.returncode == 0 else None
        if helps[sub] is None:
            problems.append(f"README.md:{line_no}: `mokd_train {sub}`: no such subcommand "
                            f"(`mokd_train {sub} --help` fails)")
            continue
        for w in words[1:]:
            if not w.startswith("--") or w == "--":
                continue
            key = w[2:].split("=", 1)[0]
            if key in ("section.key", "key"):  # the synopsis's placeholder
                continue
            if not re.search(r"--" + re.escape(key) + r"\b", helps[sub]):
                problems.append(f"README.md:{line_no}: `mokd_train {sub}` has no option --{key}")
    return problems, len(commands)


def check_key_table(mokd_train):
    """README.md's `| Key | Type | Default | Meaning |` table equals `mokd_train keys`."""
    want = subprocess.run([mokd_train, "keys"], capture_output=True, text=True).stdout.split("\n")
    want = [line for line in want if line.startswith("|")]
    lines = (ROOT / "README.md").read_text().split("\n")
    header = "| Key | Type | Default | Meaning |"
    if header not in lines:
        return ["README.md: no configuration table (a line `" + header + "`)"]
    start = lines.index(header)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    have = lines[start:end]
    if have == want:
        return []
    for k, (a, b) in enumerate(zip(have, want)):
        if a != b:
            return [f"README.md:{start + k + 1}: the configuration table differs from "
                    f"`mokd_train keys` (README: {a!r}; keys: {b!r}); paste its output there"]
    return [f"README.md:{start + 1}: the configuration table has {len(have)} lines, "
            f"`mokd_train keys` prints {len(want)}; paste its output there"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mokd-train", required=True, help="the built mokd_train binary")
    args = ap.parse_args()
    docs = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    problems = []
    for d in docs:
        problems += check_paths(d)
    cmd_problems, n_commands = check_commands(args.mokd_train)
    problems += cmd_problems
    problems += check_key_table(args.mokd_train)
    for p in problems:
        print(p)
    print(f"check_docs: {len(docs)} documents, {n_commands} mokd_train commands, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
