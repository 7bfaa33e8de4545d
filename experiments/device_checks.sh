#!/usr/bin/env bash
# The GPU numbers of issues 4 and 6 in one call on a lent device machine, sized for about 9 minutes of an H100.
#
#   here:   bash experiments/device_checks.sh --prepare     # copies the data it needs into .device_data/ (git-ignored)
#   device: run(command="bash experiments/device_checks.sh", carry=[".device_data"], timeout_s=600)
#           STEPS="eval tl20k" bash experiments/device_checks.sh    # a subset of the steps (default: 1-4)
#           STEPS=md bash experiments/device_checks.sh              # issue 19's step, its own call (about 2 min)
#
# The device image has torch (CUDA), gpytorch, pandas and pytest but no network: the package runs from the
# checkout (PYTHONPATH), nothing is installed. Each step has its own time limit so that one overrun cannot take
# the others with it; logs and JSON go to $OUT (or results/device), a summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=.device_data
if [[ "${1:-}" == "--prepare" ]]; then
    shared=${TLGP_DATA_DIR:-../shared/data/fflux}
    mkdir -p "$DATA/fflux" "$DATA/ethanol_100k"
    cp "$shared"/GLYCINE_C1_{TRAINING,VALIDATION}_SET.csv "$DATA/fflux/"
    cp data/gfn2/ethanol_100k/ETHANOL_C1_{TRAINING,VALIDATION}_SET.csv "$DATA/ethanol_100k/"  # tlgp data generate configs/data/ethanol_100k.toml
    python3 experiments/md_speed.py --save-geometries "$DATA/md_geometries.json"  # GFN2 minima (needs ase, tblite)
    du -sh "$DATA"
    exit 0
fi
OUT=${OUT:-results/device}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# SMOKE=1: the same steps at toy sizes, to check the script here before spending device time
if [[ "${SMOKE:-0}" == 1 ]]; then SIZES="1 2" NPTS=150 MOL=3 EVAL="500 1000" GPMAX=500 BIG=1000 MDF="1 8" MDN=200
else SIZES="1 8 26" NPTS=2000 MOL=494 EVAL="10000 20000 40000" GPMAX=20000 BIG=20000 MDF="1 8 64 512 4096" MDN=2000; fi
STEPS=${STEPS:-tests throughput molecule eval tl20k}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, keep going on failure
    local name=$1 limit=$2; shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "step $name: rc $? in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import torch, gpytorch; print('torch', torch.__version__, 'gpytorch', gpytorch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')" | tee "$OUT/versions.txt"
# 1. CUDA correctness against the CPU (lean and batched likelihood, in-place weights, DL and TL fits), and the
#    CPU tests that need no shared data, under the image's torch
step tests 90 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_objectives.py tests/test_batched.py
# 2. issue 4: TL of B = 1, 8, 26 glycine-size models (N=2000, D=51), one by one vs batched
step throughput 170 $PY experiments/throughput.py --sizes $SIZES --n-points $NPTS --methods tl --data-dir $DATA/fflux --out "$OUT/throughput"
# 3. issue 4: 494 glycine-size models (19 atoms x 26 properties) by batched TL
step molecule 150 $PY experiments/throughput.py --sizes $MOL --n-points $NPTS --methods tl --paths batched --data-dir $DATA/fflux --out "$OUT/molecule"
# 4. issue 6: one exact likelihood+gradient vs N (lean path) and plain gpytorch, then TL of one N=$BIG model
step eval 100 $PY experiments/scaling.py --data $DATA/ethanol_100k --tables eval --sizes $EVAL --gpytorch-max $GPMAX --repeats 2 --out "$OUT/scaling_eval.json"
step tl20k 90 $PY experiments/scaling.py --data $DATA/ethanol_100k --tables n --sizes $BIG --iterative-max 0 --exact-ll-max $BIG --out "$OUT/scaling_tl20k.json"
# 6. issue 19 (not in the default steps; its own call): the potential's energy + forces (eager and TorchScript; synthetic N=$MDN models of ETHANOL and
#    FOMEPIZOLE, the cost depends on shapes only) for F = 1 .. 4096 frames per call, next to today's path (F <= 512)
step md 120 $PY experiments/md_speed.py --device cuda --geometries $DATA/md_geometries.json --frames $MDF --threads 1 --n-points $MDN --repeats 5 --today-max-frames 512 --nve-steps 0 --out "$OUT/md_speed.json"
# 5. issue 6 (not in the default steps; its own call): the iterative path on the same 20k set, next to exact at
#    the same nugget (the iterative floor 1e-6), both evaluated exactly; dense lean kernel (5 N^2 doubles budgeted: 16 GB at 20k)
step iter20k 420 $PY experiments/scaling.py --data $DATA/ethanol_100k --tables n --sizes $BIG --nugget 1e-6 --iterative-max $BIG --exact-ll-max $BIG --iter-kernel dense --out "$OUT/scaling_iter20k.json"
echo; cat "$OUT/steps.txt"; cat "$OUT/versions.txt"
for f in tests:4 throughput:6 molecule:4 eval:9 tl20k:4 iter20k:5 md:22; do
    [[ -f "$OUT/${f%%:*}.log" ]] && tail -n "${f##*:}" "$OUT/${f%%:*}.log"
done
