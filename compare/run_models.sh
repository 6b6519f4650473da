#!/usr/bin/env bash
# Time AlexNet, cifar10-cnn, vgg-small and LeNet in convnet, PyTorch and Keras, one after
# another, with the same thread count, batch sizes and step counts, and print the table of
# images/s and ratios (also in compare/results/models/table.md).
#
#   bash compare/run_models.sh [--threads N] [--models "alexnet cifar10-cnn"] \
#       [--only "convnet pytorch"] [--repeat R]
#
# Each round runs every model in every framework once (`convnet bench --model M`,
# `compare/bench_models.py --framework F --model M`), so the ratios of a round compare runs
# minutes apart; with --repeat R the last table gives each ratio per round and in how many
# rounds it reached the issue's targets. Run by hand (the peers need compare/.venv, which
# compare/run.sh creates); never from CI.
set -euo pipefail

THREADS=${THREADS:-$(nproc)}
MODELS=${MODELS:-alexnet cifar10-cnn vgg-small lenet}
FRAMEWORKS=${FRAMEWORKS:-convnet pytorch keras}
REPEAT=${REPEAT:-1}
while [ $# -gt 0 ]; do
    case $1 in
        --threads) THREADS=$2; shift 2 ;;
        --models) MODELS=$2; shift 2 ;;
        --only) FRAMEWORKS=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."   # repo root
PY=compare/.venv/bin/python
RESULTS=compare/results/models
if [ ! -x "$PY" ]; then
    echo "compare/.venv is missing: run 'bash compare/run.sh' once to create it" >&2
    exit 2
fi
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
export RAYON_NUM_THREADS=$THREADS TF_NUM_INTRAOP_THREADS=$THREADS TF_NUM_INTEROP_THREADS=$THREADS
export TF_CPP_MIN_LOG_LEVEL=2

cargo build --release
batch_of() { [ "$1" = alexnet ] && echo 16 || echo 128; }
# The same number of timed training steps everywhere: about 10 s of AlexNet, 2-3 s of the others.
steps_of() { [ "$1" = alexnet ] && echo 24 || echo 48; }

rm -rf "$RESULTS"
for round in $(seq "$REPEAT"); do
    dir=$RESULTS/round_$round
    mkdir -p "$dir"
    for model in $MODELS; do
        batch=$(batch_of "$model") steps=$(steps_of "$model")
        for fw in $FRAMEWORKS; do
            echo "== round $round: $model in $fw (batch $batch, $steps steps, $THREADS threads," \
                "load $(cut -d' ' -f1 /proc/loadavg))"
            out=$dir/${model}_$fw.json
            if [ "$fw" = convnet ]; then
                target/release/convnet bench --model "$model" --batch-size "$batch" --steps "$steps" \
                    --threads "$THREADS" --json "$out" > "$dir/${model}_convnet.txt" \
                    || echo "!! convnet failed on $model" >&2
            else
                "$PY" compare/bench_models.py --framework "$fw" --model "$model" --batch-size "$batch" \
                    --steps "$steps" --threads "$THREADS" --out "$out" > /dev/null \
                    || echo "!! $fw failed on $model" >&2
            fi
        done
    done
    "$PY" compare/models_table.py "$dir" | tee "$dir/table.md"
done
if [ "$REPEAT" -gt 1 ]; then
    # shellcheck disable=SC2046
    "$PY" compare/models_table.py --rounds $(seq -f "$RESULTS/round_%g" "$REPEAT") | tee "$RESULTS/table.md"
fi
