#!/usr/bin/env bash
# Train the reference LeNet on MNIST with convnet, PyTorch and Keras, one after another,
# with the same thread count, and print a Markdown table (also in compare/results/table.md).
#
#   bash compare/run.sh [--threads N] [--seed S] [--only "pytorch keras"] [--repeat R]
#
# Environment: THREADS (default: nproc), SEED (default 42), FRAMEWORKS (default
# "convnet pytorch keras"), REPEAT (default 1: with R > 1 the frameworks run one after another
# R times, each round's table is printed, then one row per round of ratios to the faster peer;
# rounds are kept in compare/results/round_K). Run by hand; the first run creates compare/.venv
# (several GB).
set -euo pipefail

THREADS=${THREADS:-$(nproc)}
SEED=${SEED:-42}
FRAMEWORKS=${FRAMEWORKS:-convnet pytorch keras}
REPEAT=${REPEAT:-1}
while [ $# -gt 0 ]; do
    case $1 in
        --threads) THREADS=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --only) FRAMEWORKS=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

# Pinned peers (exact versions this comparison was set up with).
TORCH=2.15.0
TENSORFLOW_CPU=2.21.0
NUMPY=2.4.6
KERAS=3.15.1   # comes with tensorflow-cpu (which only asks for keras>=3.12); pinned too

cd "$(dirname "$0")/.."   # repo root
VENV=compare/.venv
RESULTS=compare/results
DATA=data/mnist
mkdir -p "$RESULTS"

# Same thread count for every library's pools (convnet and the peers also get --threads).
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
export RAYON_NUM_THREADS=$THREADS TF_NUM_INTRAOP_THREADS=$THREADS TF_NUM_INTEROP_THREADS=$THREADS
export TF_CPP_MIN_LOG_LEVEL=2

# Python venv: reused if present; pip is a no-op when the pinned versions are already there.
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
fi
echo "== installing torch==$TORCH tensorflow-cpu==$TENSORFLOW_CPU keras==$KERAS numpy==$NUMPY into $VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "torch==$TORCH" "tensorflow-cpu==$TENSORFLOW_CPU" "keras==$KERAS" "numpy==$NUMPY"
PY=$VENV/bin/python

# Runs "$@" under GNU time; the max RSS of the whole process (KB) goes to $RESULTS/$1.maxrss_kb.
timed() {
    local name=$1; shift
    /usr/bin/time -f %M -o "$RESULTS/$name.maxrss_kb" "$@"
}

# A failed run leaves no numbers behind (its max RSS would otherwise still show).
failed() {
    rm -f "$RESULTS/$1.maxrss_kb"
    echo "!! $2 failed; its cells will read n/a" >&2
}

# Other load on the machine skews timings (PyTorch's OpenMP threads suffer most): keep a record.
note_load() {
    cut -d' ' -f1 /proc/loadavg > "$RESULTS/$1.loadavg"
    echo "== $1: 1-minute load average before training: $(cat "$RESULTS/$1.loadavg")"
}

# One round: every framework once, then its table.
run_round() {
    for fw in $FRAMEWORKS; do
        rm -f "$RESULTS/$fw.loadavg"
        case $fw in
            convnet)
                rm -f "$RESULTS"/convnet_train.json "$RESULTS"/convnet_bench.json "$RESULTS"/convnet.maxrss_kb
                echo "== convnet: cargo build --release"
                if cargo build --release; then
                    note_load convnet
                    echo "== convnet: train (threads $THREADS)"
                    timed convnet target/release/convnet train --threads "$THREADS" --seed "$SEED" \
                        --metrics-out "$RESULTS/convnet_train.json" \
                        || failed convnet "convnet train"
                    echo "== convnet: bench (threads $THREADS)"
                    target/release/convnet bench --threads "$THREADS" --json "$RESULTS/convnet_bench.json" \
                        || echo "!! convnet bench failed; its cells will read n/a" >&2
                else
                    echo "!! cargo build failed; convnet cells will read n/a" >&2
                fi
                ;;
            pytorch|keras)
                rm -f "$RESULTS/$fw.json" "$RESULTS/$fw.maxrss_kb"
                note_load "$fw"
                echo "== $fw (threads $THREADS)"
                timed "$fw" "$PY" "compare/lenet_$fw.py" --threads "$THREADS" --epochs 2 --batch-size 128 \
                    --seed "$SEED" --data-dir "$DATA" --out "$RESULTS/$fw.json" \
                    || failed "$fw" "$fw"
                ;;
            *) echo "unknown framework: $fw" >&2; exit 2 ;;
        esac
    done

    echo
    # shellcheck disable=SC2086
    "$PY" compare/make_table.py --results "$RESULTS" --threads "$THREADS" --frameworks $FRAMEWORKS
}

if [ "$REPEAT" -le 1 ]; then
    run_round
else
    rm -rf "$RESULTS"/round_*
    for round in $(seq "$REPEAT"); do
        echo "== round $round of $REPEAT"
        run_round
        mkdir -p "$RESULTS/round_$round"
        cp "$RESULTS"/*.json "$RESULTS"/*.maxrss_kb "$RESULTS"/*.loadavg "$RESULTS"/table.md \
            "$RESULTS/round_$round"/ 2>/dev/null || true
    done
    echo
    # shellcheck disable=SC2046
    "$PY" compare/make_table.py --rounds $(seq -f "$RESULTS/round_%g" "$REPEAT")
fi
