#!/usr/bin/env bash
# The method study: trains the Fashion-MNIST teacher once, then distils the demo's student with
# none, kd, vkd and mokd (STUDY_METHODS to change the list, e.g. adding "mokd-exact2" for the
# closed-form K = 2 weighting) over STUDY_SEEDS seeds (default 3) with the gradient diagnostics
# on, and writes the table (mean and standard deviation of the final top-1 per method), the
# accuracy plot, FAMO's weight curves and the gradient conflict/dominance curves
# (tools/study_report.py).
#
# Without a GPU it runs the demo's reduced schedule (24,000 training images, 2 epochs) with one
# OpenMP thread per run and as many runs at once as there are cores (STUDY_JOBS): about 30
# minutes for 3 seeds on 2 cores. With a GPU (nvidia-smi works) the demo's full schedule, one run
# at a time. STUDY_SCHEDULE=reduced|full overrides; STUDY_OUT (default runs/study) is where runs
# land (each study replaces the previous one's runs there).
#
#   bash tools/study.sh                  # then read runs/study/results.md
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh

cuda=OFF
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then cuda=ON; fi
schedule=${STUDY_SCHEDULE:-$([ "$cuda" = ON ] && echo full || echo reduced)}
seeds=${STUDY_SEEDS:-3}
methods=${STUDY_METHODS:-none kd vkd mokd}
out=${STUDY_OUT:-runs/study}
echo "=== build mokd_train (CUDA backend: $cuda) ==="
cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOKD_CUDA=$cuda \
  -DMOKD_BUILD_TESTS=OFF -DMOKD_BUILD_BENCH=OFF >/dev/null
cmake --build build-demo -j"$(nproc)" --target mokd_train
bin=build-demo/mokd_train

teacher=resnet_fmnist_small
student=vit_fmnist_micro_distilled
if [ "$schedule" = full ]; then
  jobs=${STUDY_JOBS:-1}
  common=(--data.batch_size=128 --log.log_every=100 --distill.diagnostics_every=100)
  teacher_args=(--optim.epochs=30 --optim.lr=2e-3 --optim.warmup_steps=500)
  student_args=(--optim.epochs=30 --optim.lr=1e-3 --optim.warmup_steps=500)
else
  # One thread per run: OpenMP threads that share a core with another run slow each other down
  # far more than they help.
  jobs=${STUDY_JOBS:-$(nproc)}
  common=(--data.batch_size=64 --data.train_limit=24000 --log.log_every=250 --run.threads=1
          --distill.diagnostics_every=25)
  teacher_args=(--optim.epochs=2 --optim.lr=3e-3 --optim.warmup_steps=50)
  student_args=(--optim.epochs=2 --optim.lr=3e-3 --optim.warmup_steps=50)
fi

mkdir -p "$out"
t0=$(date +%s)
if [ -f "$out/teacher/checkpoints/best.safetensors" ] && [ "${STUDY_NEW_TEACHER:-0}" != 1 ]; then
  echo "=== teacher: reusing $out/teacher (STUDY_NEW_TEACHER=1 trains a new one) ==="
else
  echo "=== teacher: $teacher ($schedule schedule, seed 0) ==="
  $bin teacher --run.out_dir="$out/teacher" --run.overwrite=true --run.seed=0 --model.teacher=$teacher \
    "${common[@]}" "${teacher_args[@]}" > "$out/teacher.log"
  tail -1 "$out/teacher.log"
fi
run_student() {  # method seed
  local m=$1 seed=$2 method=${1%%-*} extra=()
  [ "$m" = mokd-exact2 ] && extra=(--distill.num_objectives=2 --distill.weighting=exact2)
  $bin distill --run.out_dir="$out/$m-seed$seed" --run.overwrite=true --run.seed="$seed" \
    --model.student=$student --model.teacher=$teacher \
    --model.teacher_weights="$out/teacher/checkpoints/best.safetensors" --distill.method="$method" \
    "${common[@]}" "${student_args[@]}" "${extra[@]}" > "$out/$m-seed$seed.log" 2>&1 ||
    { echo "$m seed $seed failed: see $out/$m-seed$seed.log"; return 1; }
  echo "$m seed $seed: $(tail -1 "$out/$m-seed$seed.log")"
}
echo "=== students: $student, methods $methods, $seeds seeds, $jobs at a time ==="
pids=()
for seed in $(seq 0 $((seeds - 1))); do
  for m in $methods; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_student "$m" "$seed" &
    pids+=($!)
  done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
[ $status = 0 ] || { echo "some runs failed"; exit 1; }
echo "=== report ($(( $(date +%s) - t0 )) s of training) ==="
python3 -c "import matplotlib" 2>/dev/null || pip install -q matplotlib || true
python3 tools/study_report.py "$out" --schedule "$schedule" --seconds $(( $(date +%s) - t0 ))
