#!/usr/bin/env python3
"""Data-parallel runs of mokd_train under Open MPI's mpirun, on the CPU (docs/distributed.md).

Each case is one ctest test (CMakeLists.txt, dist.*); `setup` trains the small teacher the others
distil from. The oracle of every equality is mokd_train itself on one process with gradient
accumulation: N ranks must compute what one process computes with N micro-batches per step.

  setup          a 4-step resnet_fmnist_small teacher
  equal          2 and 3 ranks == 1 process with 2 and 3 micro-batches: checkpoint state and
                 weights byte for byte, every logged loss (before and after FAMO's update),
                 weight, total and gradient norm equal (MoKD with FAMO and the projector,
                 mixup/cutmix, drop-path)
  resume         a run stopped on 2 ranks x 3 micro-batches resumes on 1 process x 6 and on 3
                 ranks x 2 (the same micro-batches, added in the same order) and ends byte for
                 byte as the uninterrupted run; a resume with another global batch is refused
  rank_killed    one rank killed (SIGKILL) mid-run: the job ends non-zero, naming it, in bounded
                 time
  signal         SIGTERM to one rank stops every rank at the same step with a checkpoint
  teacher        a batch-norm teacher trained on 2 ranks
  eval           `mokd_train eval` on 3 ranks (each a share of the test set) reports what one
                 process reports
  nonfinite      a non-finite loss stops every rank at the same step, named
  disagree       a rank started with another configuration or another teacher file is refused,
                 naming it

Usage: test_dist.py --mokd-train PATH --work DIR CASE
"""
import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

TIMEOUT = 240  # seconds for any one mokd_train or mpirun


def env():
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
             OMPI_MCA_btl_vader_single_copy_mechanism="none", OMP_NUM_THREADS="1",
             OMPI_MCA_rmaps_base_oversubscribe="1")
    return e


def run(cmd, expect_rc=0, timeout=TIMEOUT):
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    out = p.stdout
    if expect_rc is not None and p.returncode != expect_rc:
        print(out)
        sys.exit(f"FAIL: exit status {p.returncode}, expected {expect_rc}")
    return out


class Case:
    def __init__(self, mokd_train, work):
        self.bin = mokd_train
        self.work = work
        self.teacher = os.path.join(work, "teacher", "checkpoints", "best.safetensors")

    def distill_args(self, out, **keys):
        args = {
            "run.out_dir": out, "run.device": "cpu", "run.threads": "1", "run.overwrite": "true",
            "model.teacher_weights": self.teacher, "model.student": "vit_fmnist_micro_distilled",
            "model.drop_path_rate": "0.1", "data.train_limit": "216", "data.eval_limit": "50",
            "data.batch_size": "36", "data.workers": "1", "data.mixup_alpha": "0.8",
            "data.cutmix_alpha": "1.0", "optim.steps": "8", "log.log_every": "1",
            "log.eval_every": "0",
        }
        args.update({k: str(v) for k, v in keys.items()})
        return [self.bin, "distill"] + [f"--{k}={v}" for k, v in args.items()]

    def mpirun(self, n, cmd):
        return ["mpirun", "--oversubscribe", "-np", str(n)] + cmd

    def path(self, name):
        return os.path.join(self.work, name)


def read_state(run_dir):
    """(tensors as raw bytes by name, counters) of a checkpoint's state.safetensors."""
    with open(os.path.join(run_dir, "checkpoints", "state.safetensors"), "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {k: body[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()}
    return tensors, json.loads(meta.get("mokd_state", "{}"))


def step_rows(run_dir):
    rows = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == "step":
                r.pop("images_per_s", None)
                rows.append(r)
    return rows


def expect(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)
    print("ok: " + msg, flush=True)


def same_state(a, b, what):
    ta, ca = read_state(a)
    tb, cb = read_state(b)
    expect(ca == cb, f"{what}: the checkpoint counters are equal")
    expect(ta.keys() == tb.keys(), f"{what}: the checkpoints hold the same tensors")
    diff = [k for k in ta if ta[k] != tb[k]]
    expect(not diff, f"{what}: every tensor of the checkpoint is equal byte for byte"
           + (f" (differ: {diff[:5]})" if diff else ""))
    expect(step_rows(a) == step_rows(b), f"{what}: every logged step row is equal")
    with open(os.path.join(a, "checkpoints", "last.safetensors"), "rb") as f:
        wa = f.read()
    with open(os.path.join(b, "checkpoints", "last.safetensors"), "rb") as f:
        wb = f.read()
    expect(wa == wb, f"{what}: the weights files are equal byte for byte")


def case_setup(c):
    shutil.rmtree(c.work, ignore_errors=True)
    os.makedirs(c.work)
    run([c.bin, "teacher", "--run.device=cpu", "--run.threads=1",
         f"--run.out_dir={c.path('teacher')}", "--model.teacher=resnet_fmnist_small",
         "--data.train_limit=256", "--data.eval_limit=50", "--data.batch_size=32",
         "--optim.steps=4", "--data.workers=1"])
    expect(os.path.exists(c.teacher), "the teacher's weights exist")


def case_equal(c):
    for n in (2, 3):
        one = c.path(f"one_accum{n}")
        ranks = c.path(f"ranks{n}")
        run(c.distill_args(one, **{"optim.accum_steps": n}))
        out = run(c.mpirun(n, c.distill_args(ranks)))
        expect(f"on {n} ranks" in out, f"the progress line of {n} ranks says so")
        expect(out.count("done: 8 steps") == 1, f"only rank 0 of {n} prints")
        same_state(ranks, one, f"{n} ranks vs 1 process with {n} micro-batches")
    # The layout does not matter either: 3 ranks x 2 micro-batches == 2 x 3 (micro-batches of 6).
    a, b = c.path("layout_3x2"), c.path("layout_2x3")
    run(c.mpirun(3, c.distill_args(a, **{"optim.accum_steps": 2})))
    run(c.mpirun(2, c.distill_args(b, **{"optim.accum_steps": 3})))
    same_state(a, b, "3 ranks x 2 micro-batches vs 2 ranks x 3")


def case_resume(c):
    # Global batch 36 in micro-batches of 6: 2 ranks x 3, 3 ranks x 2, 1 process x 6.
    full = c.path("resume_full")
    run(c.mpirun(2, c.distill_args(full, **{"optim.accum_steps": 3})))
    for n, accum in ((1, 6), (3, 2)):
        part = c.path(f"resume_on_{n}")
        out = run(c.mpirun(2, c.distill_args(part, **{"optim.accum_steps": 3,
                                                      "run.stop_after": 3})))
        expect("stopped at step 3 with a checkpoint" in out, "the 2-rank run stops at step 3")
        cmd = c.distill_args(part, **{"optim.accum_steps": accum, "run.resume": "true",
                                      "run.overwrite": "false"})
        out = run(c.mpirun(n, cmd) if n > 1 else cmd)
        expect("resumed from" in out and "done: 8 steps" in out, f"it resumes on {n} rank(s)")
        same_state(part, full, f"2 ranks resumed on {n} x {accum} vs uninterrupted")
    # Another global batch is another run: refused, saying which key.
    part = c.path("resume_on_1")
    cmd = c.distill_args(part, **{"data.batch_size": 24, "run.resume": "true",
                                  "run.overwrite": "false", "optim.steps": 12})
    out = run(cmd, expect_rc=1)
    expect("data.batch_size = 36 in the run, 24 now" in out,
           "a resume with another global batch is refused naming data.batch_size")


def rank_pids(rank):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                e = f.read().split(b"\0")
            with open(f"/proc/{d}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name == "mokd_train" and f"OMPI_COMM_WORLD_RANK={rank}".encode() in e:
            pids.append(int(d))
    return pids


def start_long_run(c, out_dir, n):
    cmd = c.mpirun(n, c.distill_args(out_dir, **{"optim.steps": 100000, "data.train_limit": 2160,
                                                  "dist.timeout_s": 20}))
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    # Wait until rank 1 exists and the run has taken a few steps.
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.5)
        metrics = os.path.join(out_dir, "metrics.jsonl")
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3 and rank_pids(1):
            return p
    p.kill()
    sys.exit("FAIL: the long run did not start")


def wait_for(p, timeout, what):
    """The output of a started run once it ends; fails naming `what` if it outlives timeout."""
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        sys.exit(f"FAIL: {what} after {timeout} s")
    return out


def case_rank_killed(c):
    out_dir = c.path("killed")
    shutil.rmtree(out_dir, ignore_errors=True)
    p = start_long_run(c, out_dir, 3)
    victim = rank_pids(1)[0]
    os.kill(victim, signal.SIGKILL)
    t0 = time.time()
    out = wait_for(p, 60, "the other ranks still run since rank 1 was killed")
    print(out[-3000:])
    expect(p.returncode != 0, f"the job exits non-zero ({p.returncode}) "
           f"{time.time() - t0:.1f} s after rank 1 was killed")
    expect(re.search(r"rank 1\b.*(exited|signal|killed|Killed)", out, re.S) is not None,
           "the output names rank 1 and how it ended")


def case_signal(c):
    out_dir = c.path("signalled")
    shutil.rmtree(out_dir, ignore_errors=True)
    p = start_long_run(c, out_dir, 2)
    os.kill(rank_pids(1)[0], signal.SIGTERM)
    out = wait_for(p, 120, "the ranks still run since SIGTERM to rank 1")
    print(out[-2000:])
    m = re.search(r"signal: stopped at step (\d+) with a checkpoint", out)
    expect(m is not None, "rank 0 reports the stop with a checkpoint")
    _, counters = read_state(out_dir)
    expect(counters.get("step") == int(m.group(1)),
           f"the checkpoint is at the step reported ({m.group(1)})")
    expect(p.returncode != 0, f"the job's exit status is non-zero ({p.returncode})")


def case_teacher(c):
    # A batch-norm model on 2 ranks: per-rank statistics in training, running statistics averaged
    # before evaluation and the checkpoint (equal on both ranks, so rank 0's file is the job's).
    out_dir = c.path("teacher2")
    out = run(c.mpirun(2, [c.bin, "teacher", "--run.device=cpu", "--run.threads=1",
                           f"--run.out_dir={out_dir}", "--run.overwrite=true",
                           "--model.teacher=resnet_fmnist_small", "--data.train_limit=256",
                           "--data.eval_limit=50", "--data.batch_size=32", "--optim.steps=4",
                           "--data.workers=1"]))
    expect("done: 4 steps" in out and "on 2 ranks" in out, "a 2-rank teacher run finishes")
    tensors, _ = read_state(out_dir)
    means = [k for k in tensors if k.endswith("running_mean")]
    expect(len(means) > 0, f"its checkpoint holds {len(means)} batch-norm running means")


def case_eval(c):
    cmd = [c.bin, "eval", "--run.device=cpu", "--run.threads=1", "--data.eval_limit=301",
           "--data.eval_batch_size=64", f"--weights={c.teacher}"]
    one = run(cmd)
    three = run(c.mpirun(3, cmd))
    pick = lambda out: re.search(r"\((\d+) images\): top-1 ([0-9.]+)%  top-5 ([0-9.]+)%", out)
    a, b = pick(one), pick(three)
    expect(a is not None and b is not None, "both print their accuracy")
    expect(a.groups() == b.groups(), f"3 ranks count the same images and top-1/top-5 ({b.groups()})")
    expect(three.count("top-1") == 1, "only rank 0 prints")


def case_nonfinite(c):
    # The first update blows the weights up: the next step's losses are not finite on every rank;
    # the ranks see it in the averaged values and stop at the same step, naming it.
    out = run(c.mpirun(2, c.distill_args(c.path("nonfinite"), **{"optim.lr": "1e30",
                                                                  "optim.warmup_steps": 0})),
              expect_rc=None)
    found = re.findall(r"error on rank (\d) of 2: step (\d+): (.*finite.*)", out)
    expect({r for r, _, _ in found} == {"0", "1"}, "both ranks report a non-finite value")
    steps = {st for _, st, _ in found}
    expect(len(steps) == 1, f"they stop at the same step ({sorted(steps)}): {found[0][2][:90]}")


def case_disagree(c):
    base = c.distill_args(c.path("disagree"))
    out = run(["mpirun", "--oversubscribe", "-np", "1"] + base + [":", "-np", "1"] + base
              + ["--optim.lr=0.002"], expect_rc=None)
    expect("rank 1 runs with another configuration" in out,
           "a rank with another optim.lr is refused, naming it")
    # Keys that may change on --resume must still agree between ranks: they decide which
    # collectives run (here, when the ranks checkpoint).
    out = run(["mpirun", "--oversubscribe", "-np", "1"] + base + [":", "-np", "1"] + base
              + ["--log.checkpoint_every=3"], expect_rc=None)
    expect("rank 1 runs with another configuration" in out,
           "a rank with another log.checkpoint_every is refused, naming it")
    # The same relative path names another file on rank 1 (as on another node): each rank starts
    # in its own folder.
    dirs = [c.path("node0"), c.path("node1")]
    with open(c.teacher, "rb") as f:
        data = bytearray(f.read())
    for i, d in enumerate(dirs):
        os.makedirs(d, exist_ok=True)
        if i == 1:
            n = struct.unpack("<Q", data[:8])[0]
            data[8 + n + 3] ^= 0x01  # one bit of the first tensor: the same shapes, other bytes
        with open(os.path.join(d, "teacher.safetensors"), "wb") as f:
            f.write(data)
    rel = c.distill_args(c.path("disagree"), **{"model.teacher_weights": "teacher.safetensors"})
    out = run(["mpirun", "--oversubscribe", "-np", "1", "-wdir", dirs[0]] + rel
              + [":", "-np", "1", "-wdir", dirs[1]] + rel, expect_rc=None)
    expect("rank 1 runs with another teacher file" in out,
           "a rank whose teacher file differs from rank 0's is refused, naming it")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mokd-train", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("case", choices=["setup", "equal", "resume", "rank_killed", "signal",
                                    "teacher", "eval", "nonfinite", "disagree"])
    a = ap.parse_args()
    c = Case(os.path.abspath(a.mokd_train), os.path.abspath(a.work))
    globals()["case_" + a.case](c)
    print("PASS")


if __name__ == "__main__":
    main()
