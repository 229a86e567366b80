#!/usr/bin/env bash
# The demo: installs what it needs, builds mokd_train, trains a small teacher on Fashion-MNIST,
# then distils the same small student with none, kd, vkd and mokd, and prints a table of test
# accuracies and wall times.
#
# Without a GPU it runs a reduced schedule sized for 2 CPU cores (about 15 minutes); with a GPU
# (nvidia-smi works) the full schedule. Override with DEMO_SCHEDULE=reduced|full, and the seed
# with DEMO_SEED. Runs land in runs/demo/ (each demo replaces the previous demo's runs there).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh

cuda=OFF
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then cuda=ON; fi
schedule=${DEMO_SCHEDULE:-$([ "$cuda" = ON ] && echo full || echo reduced)}
seed=${DEMO_SEED:-0}
echo "=== build mokd_train (CUDA backend: $cuda) ==="
cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOKD_CUDA=$cuda \
  -DMOKD_BUILD_TESTS=OFF -DMOKD_BUILD_BENCH=OFF >/dev/null
cmake --build build-demo -j"$(nproc)" --target mokd_train
bin=build-demo/mokd_train

out=runs/demo
teacher=resnet_fmnist_small
student=vit_fmnist_micro_distilled
if [ "$schedule" = full ]; then
  common=(--run.seed=$seed --data.batch_size=128 --log.log_every=100)
  teacher_args=(--optim.epochs=30 --optim.lr=2e-3 --optim.warmup_steps=500)
  student_args=(--optim.epochs=30 --optim.lr=1e-3 --optim.warmup_steps=500)
else
  # 2 CPU cores: a subset of the training set and few epochs; the full test set is evaluated.
  common=(--run.seed=$seed --data.batch_size=64 --data.train_limit=24000 --log.log_every=50 --run.threads=2)
  teacher_args=(--optim.epochs=2 --optim.lr=3e-3 --optim.warmup_steps=50)
  student_args=(--optim.epochs=2 --optim.lr=3e-3 --optim.warmup_steps=50)
fi

mkdir -p $out
declare -A acc secs
t0=$(date +%s)
echo "=== teacher: $teacher ($schedule schedule) ==="
$bin teacher --run.out_dir=$out/teacher --run.overwrite=true --model.teacher=$teacher "${common[@]}" "${teacher_args[@]}" \
  | tee $out/teacher.log || true
acc[teacher]=$(grep -oE 'final top-1 [0-9.]+' $out/teacher.log | awk '{print $3}')
secs[teacher]=$(( $(date +%s) - t0 ))
[ -n "${acc[teacher]}" ] || { echo "teacher run failed; see $out/teacher.log"; exit 1; }

for method in none kd vkd mokd; do
  t1=$(date +%s)
  echo "=== student: $student, method $method ==="
  $bin distill --run.out_dir=$out/$method --run.overwrite=true --model.student=$student --model.teacher=$teacher \
    --model.teacher_weights=$out/teacher/checkpoints/best.safetensors --distill.method=$method \
    "${common[@]}" "${student_args[@]}" | tee $out/$method.log || true
  acc[$method]=$(grep -oE 'final top-1 [0-9.]+' $out/$method.log | awk '{print $3}')
  secs[$method]=$(( $(date +%s) - t1 ))
  [ -n "${acc[$method]}" ] || { echo "$method run failed; see $out/$method.log"; exit 1; }
done

echo
echo "Fashion-MNIST test accuracy ($schedule schedule, seed $seed; teacher $teacher, student $student)"
printf '| %-22s | %9s | %8s |\n' run "top-1 %" "wall s"
printf '|%s|%s|%s|\n' "------------------------" "-----------" "----------"
printf '| %-22s | %9s | %8s |\n' "teacher (CE)" "${acc[teacher]}" "${secs[teacher]}"
for method in none kd vkd mokd; do
  printf '| %-22s | %9s | %8s |\n' "student, $method" "${acc[$method]}" "${secs[$method]}"
done
echo "total wall time: $(( $(date +%s) - t0 )) s; metrics in $out/*/metrics.csv (plot: python3 tools/plot_metrics.py $out/mokd)"
