#!/usr/bin/env python3
"""The report of tools/study.sh: reads STUDY_DIR/<method>-seed<k>/metrics.csv and writes
STUDY_DIR/results.md (final top-1 per run, mean and sample standard deviation per method, and
how often the gradients conflicted) and, when matplotlib is installed, the plots beside it:
accuracy.png (final top-1 per method and seed), weights.png (FAMO's weights of the mokd runs),
conflict.png (cosine between the task and the other objectives' gradients) and dominance.png
(their norm ratios).

    python3 tools/study_report.py runs/study [--schedule reduced] [--seconds 1800]
"""
import argparse
import csv
import math
import pathlib
import re
import statistics


def runs(root):
    out = {}
    for d in sorted(pathlib.Path(root).iterdir()):
        m = re.fullmatch(r"(.+)-seed(\d+)", d.name)
        if m and (d / "metrics.csv").exists():
            out.setdefault(m.group(1), []).append((int(m.group(2)), d))
    return out


def rows(run):
    return list(csv.DictReader(open(run / "metrics.csv")))


def final_top1(run):
    evals = [r for r in rows(run) if r["kind"] == "eval" and r.get("top1")]
    return float(evals[-1]["top1"]) if evals else math.nan


def diag(run, key):
    return [(float(r["step"]), float(r[key])) for r in rows(run) if r["kind"] == "step" and r.get(key)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root")
    p.add_argument("--schedule", default="?")
    p.add_argument("--seconds", type=float, default=0)
    a = p.parse_args()
    root = pathlib.Path(a.root)
    by_method = runs(root)
    order = [m for m in ["none", "kd", "vkd", "mokd", "mokd-exact2"] if m in by_method]
    order += [m for m in by_method if m not in order]
    lines = [f"Schedule: {a.schedule}; {a.seconds:.0f} s of training in all.", "",
             "| method | seeds | top-1 % per seed | mean | std | gradient conflicts (cos < 0) |",
             "|---|---|---|---|---|---|"]
    for m in order:
        accs = [final_top1(d) for _, d in sorted(by_method[m])]
        mean = statistics.mean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        cos = [v for _, d in by_method[m] for k in ("cos.0.1", "cos.0.2", "cos.1.2") for _, v in diag(d, k)]
        conflict = f"{sum(v < 0 for v in cos)}/{len(cos)}" if cos else "-"
        lines.append(f"| {m} | {len(accs)} | {' / '.join(f'{x:.2f}' for x in accs)} | {mean:.2f} | {std:.2f} | {conflict} |")
    (root / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote", root / "results.md")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, m in enumerate(order):
        accs = [final_top1(d) for _, d in sorted(by_method[m])]
        ax.scatter([i] * len(accs), accs, label=m)
        ax.errorbar([i + 0.15], [statistics.mean(accs)],
                    yerr=[statistics.stdev(accs) if len(accs) > 1 else 0], fmt="k_", capsize=4)
    ax.set_xticks(range(len(order)), order)
    ax.set_ylabel("final top-1 %")
    ax.set_title("final test accuracy per method (dots: seeds; bar: mean +- std)")
    fig.tight_layout()
    fig.savefig(root / "accuracy.png", dpi=120)
    plt.close(fig)

    def curves(keys, title, ylabel, path, methods, log=False):
        fig, ax = plt.subplots(figsize=(7, 4))
        drawn = False
        for m in methods:
            for seed, d in sorted(by_method.get(m, [])):
                for k in keys:
                    pts = diag(d, k)
                    if pts:
                        ax.plot([s for s, _ in pts], [v for _, v in pts], label=f"{m} s{seed} {k}", lw=0.8)
                        drawn = True
        if drawn:
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            if log:
                ax.set_yscale("log")
            ax.legend(fontsize=6, ncol=2)
            fig.tight_layout()
            fig.savefig(root / path, dpi=120)
        plt.close(fig)

    curves(["weight.task", "weight.kl", "weight.feat"], "FAMO weights z (mokd)", "weight", "weights.png",
           ["mokd"])
    curves(["cos.0.1", "cos.0.2"], "gradient cosine, task vs kl (0.1) and task vs feat (0.2): < 0 is a conflict",
           "cosine", "conflict.png", [m for m in order if m in ("vkd", "mokd")])
    curves(["ratio.0.1", "ratio.0.2"], "gradient norm ratio |g_task| / |g_other|", "ratio", "dominance.png",
           [m for m in order if m in ("vkd", "mokd")], log=True)
    print("wrote", ", ".join(str(root / f) for f in ["accuracy.png", "weights.png", "conflict.png", "dominance.png"]))


if __name__ == "__main__":
    main()
