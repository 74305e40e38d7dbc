#!/usr/bin/env bash
# The first-GPU check: one script, about 8 minutes, one summary file of figures.
#
# On a machine with a CUDA GPU and no network (e.g. the nvidia-h200 device machine:
# Python 3.12, its own CUDA torch 2.11), it installs evolve against the torch already
# there, then runs, each step with its own timeout so that one failure stops nothing:
#   install     the carried wheels (below) and evolve itself, no index, no deps
#   cuda_tests  the suite's CUDA tests (names with cuda or gpu; the others skip on a GPU)
#   eval_train  evolve eval train.py on CUDA, short budget
#   eval_muon   evolve eval genomes/gpt_muon.py on CUDA (torch.compile, bf16, Muon)
#   overhead    benchmarks/bench_overhead.py on CUDA: per-evaluation overhead
#   start       a 2-generation evolve start on CUDA with a small population
# and writes the summary (val_bpb, steps, tokens/s, overhead, peak memory, versions,
# GPU name, each step's pass/fail and seconds) to $OUT/gpu_summary.txt, or the path
# given with --summary. Logs and JSON of every step stay in the work folder it prints.
#
#   benchmarks/gpu_check.sh [--cpu] [--summary FILE] [--work DIR]
#   --cpu   dry run on the CPU: the same steps with tiny budgets (gpt_muon shrunk);
#           it is how this script is tested without a GPU (PYTHON=.venv/bin/python)
#
# Wheels: the GPU machine's image lacks three of evolve's dependencies: deap 1.4.3 (a cp312
# binary wheel that needs only numpy; 1.4.4 would also need moocore and cffi), tinydb 4.9.0
# and platformdirs 4.14.9 (pure Python). Everything else evolve imports for eval and start
# (torch, numpy, click, rich, matplotlib, pyarrow) and the tests' pytest and pytest-timeout
# are in the image, and openai is imported only with --llm-model. Fetch them into .whl/
# (git-ignored) here, where pip reaches an index, with benchmarks/fetch_gpu_wheels.sh, which
# runs the device README's recipe:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
#     -d .whl deap==1.4.3 tinydb==4.9.0 platformdirs==4.14.9
# then carry `.whl` with the run: run(command="benchmarks/gpu_check.sh", carry=[".whl"],
# timeout_s=540). The install goes into the interpreter that holds torch (python3 there,
# or $PYTHON): sandboxed children run `python -I`, which ignores PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=cuda
SUMMARY="${OUT:-/tmp}/gpu_summary.txt"
WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) MODE=cpu ;;
        --summary) SUMMARY="$2"; shift ;;
        --work) WORK="$2"; shift ;;
        *) echo "usage: $0 [--cpu] [--summary FILE] [--work DIR]" >&2; exit 2 ;;
    esac
    shift
done
PY="${PYTHON:-python3}"
WORK="${WORK:-$(mktemp -d /tmp/gpucheck.XXXXXX)}"
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 EVOLVE_CACHE_DIR="${EVOLVE_CACHE_DIR:-$WORK/cache}"
: > "$WORK/steps.tsv"
T0=$(date +%s)

if [ "$MODE" = cuda ]; then
    # each step's timeout in seconds (465 s in all, of 480), and budgets that fit inside them.
    # test_gpu_scale_genome_on_cuda alone trains gpt_muon for 60 s; gpt_muon's first step is
    # a cold torch.compile (tens of seconds, inside its budget), hence 60 s for eval_muon too.
    # start: 2 noise runs of the seed, 3 children, confirmations: ~7 evaluations of 5 s.
    T_INSTALL=30 T_TESTS=135 T_TRAIN=50 T_MUON=100 T_OVERHEAD=50 T_START=100
    B_TRAIN=20 B_MUON=60 B_START=5 OVERHEAD_BUDGETS="5 15" EVAL_TOKENS=65536 POP=3
    TRAIN=train.py MUON=genomes/gpt_muon.py
else
    T_INSTALL=60 T_TESTS=150 T_TRAIN=60 T_MUON=60 T_OVERHEAD=60 T_START=150
    B_TRAIN=4 B_MUON=4 B_START=2 OVERHEAD_BUDGETS="3" EVAL_TOKENS=4096 POP=2
    # Both seeds shrunk as the tests shrink them: on a busy CPU one full-size step can
    # outlast a 4 s budget's tolerance. The CUDA run uses the files as they are.
    TRAIN="$WORK/train_small.py" MUON="$WORK/gpt_muon_small.py"
    "$PY" -c "import sys; from evolve.testkit.tiny import MUON_SMALL, TINY, set_constants
for src, dst, values in (('train.py', sys.argv[1], TINY), ('genomes/gpt_muon.py', sys.argv[2],
                                                           MUON_SMALL)):
    open(dst, 'w').write(set_constants(open(src).read(), **values))" "$TRAIN" "$MUON"
fi

# step NAME TIMEOUT_S COMMAND...: run it, log to $WORK/NAME.log, record pass/fail and seconds.
step() {
    local name="$1" limit="$2" start rc tenths
    shift 2
    start=$(date +%s%N)
    echo "[$(( $(date +%s) - T0 )) s] $name (timeout ${limit} s)" >&2
    timeout -k 5 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    tenths=$(( ($(date +%s%N) - start) / 100000000 ))
    printf '%s\t%s\t%d.%d\t%s\n' "$name" "$rc" $((tenths / 10)) $((tenths % 10)) "$limit" \
        >> "$WORK/steps.tsv"
    [ "$rc" = 0 ] || echo "    $name failed (exit $rc); log: $WORK/$name.log" >&2
    return 0
}

install() {
    if ! "$PY" -c "from deap import base, tools; import tinydb, platformdirs" 2>/dev/null; then
        ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/ wheels: see the header"; return 3; }
        "$PY" -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || return 4
    fi
    local ours="import evolve, os, sys
sys.exit(os.path.realpath(evolve.__file__) != os.path.realpath('evolve/__init__.py'))"
    if ! "$PY" -I -c "$ours" 2>/dev/null; then  # -I: as the sandboxed children import it
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 5
    fi
    "$PY" -c "import evolve.cli, torch; print('evolve', evolve.__file__, torch.__version__)"
}

start_run() {
    printf 'noise_repeats = 2\nconfirm = 2\n' > "$WORK/start.toml"
    "$PY" -m evolve.cli start --config "$WORK/start.toml" --seed-genome "$TRAIN" \
        --pop "$POP" --generations 2 \
        --budget "$B_START" --device "$MODE" --eval-tokens "$EVAL_TOKENS" \
        --archive-dir "$WORK/archive" --name gpucheck || return
    "$PY" -m evolve.cli runs --archive-dir "$WORK/archive" --json > "$WORK/start_runs.json" &&
        "$PY" -m evolve.cli show gpucheck --archive-dir "$WORK/archive" --json \
            > "$WORK/start_show.json"
}

export PY WORK MODE POP EVAL_TOKENS B_START TRAIN
export -f install start_run
step install "$T_INSTALL" bash -c install
step cuda_tests "$T_TESTS" "$PY" -m pytest -q -rs -p no:cacheprovider -k "cuda or gpu" \
    tests/test_seed_genomes.py tests/test_executors.py tests/test_vet_versions.py
step eval_train "$T_TRAIN" bash -c "'$PY' -m evolve.cli eval '$TRAIN' --device $MODE \
    --budget $B_TRAIN --eval-tokens $EVAL_TOKENS --workdir '$WORK/eval_train' \
    --json > '$WORK/eval_train.json'"
step eval_muon "$T_MUON" bash -c "'$PY' -m evolve.cli eval '$MUON' --device $MODE \
    --budget $B_MUON --eval-tokens $EVAL_TOKENS --workdir '$WORK/eval_muon' \
    --json > '$WORK/eval_muon.json'"
step overhead "$T_OVERHEAD" "$PY" benchmarks/bench_overhead.py --device "$MODE" \
    --genome "$TRAIN" --budgets $OVERHEAD_BUDGETS --eval-tokens "$EVAL_TOKENS" \
    --json "$WORK/overhead.json"
step start "$T_START" bash -c start_run

mkdir -p "$(dirname "$SUMMARY")"
timeout 30 "$PY" benchmarks/gpu_summary.py "$WORK" "$MODE" "$(( $(date +%s) - T0 ))" > "$SUMMARY" \
    || echo "the summary could not be written; the figures are in $WORK" >&2
cat "$SUMMARY"
echo "summary: $SUMMARY; logs and JSON: $WORK" >&2
