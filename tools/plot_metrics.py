#!/usr/bin/env python3
"""Draws a run's metrics (metrics.csv written by mokd_train) to PNG files:
loss curves per objective (log axis), the backpropagated total (linear axis), test accuracy,
FAMO weights, and, when the run logged gradient
diagnostics (distill.diagnostics_every > 0), the pairwise gradient cosines and norm ratios
(conflict and dominance, the curves of the MoKD paper's Fig. 1 and Fig. 3).

    pip install matplotlib
    python3 tools/plot_metrics.py runs/demo/mokd [more run folders ...] [--out DIR]
"""
import argparse
import csv
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(run):
    rows = list(csv.DictReader(open(pathlib.Path(run) / "metrics.csv")))
    return [r for r in rows if r["kind"] == "step"], [r for r in rows if r["kind"] == "eval"]


def series(rows, key):
    xs, ys = [], []
    for r in rows:
        if r.get(key):
            xs.append(float(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def plot(runs, keys, title, ylabel, path, which=0, log=False):
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for run in runs:
        rows = read(run)[which]
        for k in keys:
            xs, ys = series(rows, k)
            if xs:
                ax.plot(xs, ys, label=f"{pathlib.Path(run).name}: {k}")
                drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print("wrote", path)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the first run)")
    a = p.parse_args()
    out = pathlib.Path(a.out or a.runs[0])
    out.mkdir(parents=True, exist_ok=True)
    losses = ["loss.task", "loss.kl", "loss.feat", "loss.distill", "loss.hard"]
    plot(a.runs, losses, "training losses", "loss", out / "losses.png", log=True)
    # The backpropagated total on a linear axis: under FAMO it is a weighted sum of log losses and
    # is negative once the losses are below 1.
    plot(a.runs, ["total"], "backpropagated total", "total", out / "total.png")
    plot(a.runs, ["top1", "ema.top1"], "test accuracy", "top-1 %", out / "accuracy.png", which=1)
    plot(a.runs, ["weight.task", "weight.kl", "weight.feat", "weight.distill"], "objective weights (FAMO z)",
         "weight", out / "weights.png")
    plot(a.runs, ["cos.0.1", "cos.0.2", "cos.1.2"], "gradient cosine (conflict < 0)", "cosine",
         out / "grad_cosine.png")
    plot(a.runs, ["ratio.0.1", "ratio.0.2", "ratio.1.2"], "gradient norm ratio (dominance)", "ratio",
         out / "grad_ratio.png", log=True)


if __name__ == "__main__":
    main()
