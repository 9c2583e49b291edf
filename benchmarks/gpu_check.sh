#!/usr/bin/env bash
# The GPU figures of issue 11 in one command (about 8 minutes on one H200 with 16 cores), run from
# the repository root:
#     bash benchmarks/gpu_check.sh              # on the GPU machine (wheels in .whl/ if needed)
#     bash benchmarks/gpu_check.sh --dry-run    # here: CPU, tiny sizes, same steps
# Steps: install the carried wheels (.whl/: av, zarr, numcodecs, ... when missing); the raw
# student forward (eager fp32, bf16 channels-last, torch.compile); the features stage
# (bench_features.py); how far CUDA fp32/bf16 numbers are from the CPU's (gpu_compare.py);
# a synthetic set made larger by hard-linked copies; decode-only extraction
# with all cores, and its scaling with 1/4/8/16 workers over >= 200 videos; features-only
# extraction (1 and N workers); teacher extraction (N); all stages on a fresh store (1 and N
# workers) with GPU utilisation (nvidia-smi dmon); store verify; the test suite.  Every step has
# its own timeout and the run goes on after a failure.  What comes back, in $OUT: log.txt,
# rows.jsonl (one JSON row per figure), RESULTS.md (a copy of benchmarks/RESULTS.md with the
# "Features stage" and "GPU check" sections rewritten, each with its machine line: merge those
# into the project's), dmon-*.txt.  The project's own RESULTS.md is not touched.
set -u
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
export PYTHONUNBUFFERED=1
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
OUT=${OUT:-/tmp/l2l-gpu-check}; mkdir -p "$OUT"
LOG=$OUT/log.txt; : > "$LOG"
export L2L_GPU_ROWS=$OUT/rows.jsonl; : > "$L2L_GPU_ROWS"
RES=$OUT/RESULTS.md; cp benchmarks/RESULTS.md "$RES"
BUDGET=${BUDGET:-480}          # seconds for everything
RESERVE=${RESERVE:-120}        # of which kept for the test suite, run last (it gets what is left)
T0=$(date +%s)
left() { echo $(( BUDGET - RESERVE - ($(date +%s) - T0) )); }
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
# SKIP_STEPS="raw-student,compare": steps (by name) not to run, to rerun the rest in a second lease
step() { local name=$1 lim=$2; shift 2
  case ",${SKIP_STEPS:-}," in *",$name,"*) say "== $name: skipped (SKIP_STEPS)"; return 0;; esac
  local l; l=$(left); [ "$lim" -gt "$l" ] && lim=$l
  if [ "$lim" -lt 5 ]; then say "== $name: skipped, out of time"; return 1; fi
  say "== $name (limit ${lim}s)"; local t; t=$(date +%s)
  STEP_LIMIT=$(( lim > 15 ? lim - 10 : lim )) timeout -k 5 "$lim" "$@" >>"$LOG" 2>&1; local rc=$?
  say "   rc=$rc in $(( $(date +%s) - t ))s"; return $rc; }

PY=${PY:-python3}
if ! $PY -c "import av, zarr, numcodecs, dask, distributed" 2>/dev/null; then
  if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/l2l-site .whl/*.whl >>"$LOG" 2>&1 || say "wheel install failed"
    export PYTHONPATH=/tmp/l2l-site${PYTHONPATH:+:$PYTHONPATH}
  else
    say "av/zarr/dask missing and no .whl/ folder: carry the wheels (see the README's GPU section)"
  fi
fi
if ! $PY -c "import l2l,os,sys; sys.exit(os.path.realpath(os.path.dirname(l2l.__file__)) != os.path.realpath('$ROOT'))" 2>/dev/null; then
  mkdir -p /tmp/l2l-pkg; ln -sfn "$ROOT" /tmp/l2l-pkg/l2l         # package_dir: l2l = the root
  export PYTHONPATH=/tmp/l2l-pkg${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p /tmp/l2l-bin                         # an `l2l` command without installing the project
printf '#!/bin/sh\nexec %s -c "from l2l.cli.main import main; main()" "$@"\n' "$PY" > /tmp/l2l-bin/l2l
chmod +x /tmp/l2l-bin/l2l; L2L=/tmp/l2l-bin/l2l
GS="$PY benchmarks/gpu_steps.py"
NPROC=$(nproc)
if [ $DRY = 1 ]; then
  DEV=cpu; N=2; SCALE="1 2"; SYN="--classes 2 --videos-per-class 2 --width 160 --height 120 --duration-min 6 --duration-max 7"
  COPIES=1; SCALE_LIMIT=4; ONE_LIMIT=2; TLIMIT="--limit 1"
  BF="--moments 16 --videos 2 --batch-sizes 8 --repeats 1"; CMP="--moments 16 --clips 2"
  TLIMIT="$TLIMIT --set teacher.clip_len=4 --set teacher.clip_resize=40x48 --set teacher.clip_crop=32"
else
  DEV=cuda; N=$NPROC; SCALE="1 4 8 16"; SYN="--classes 4 --videos-per-class 6 --width 320 --height 240 --duration-min 8 --duration-max 16"
  COPIES=25; SCALE_LIMIT=200; ONE_LIMIT=100; TLIMIT=""
  BF="--moments 8192 --videos 16 --batch-sizes 512,1024,4096 --repeats 3 --compile"; CMP=""
fi
W=${WORK:-/tmp/l2l-gpu-work}; rm -rf "$W"; mkdir -p "$W"
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv >>"$LOG" 2>&1
say "dry-run=$DRY device=$DEV cores=$NPROC; $($PY -c 'import torch,av,zarr,dask;print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "av", av.__version__, "zarr", zarr.__version__, "dask", dask.__version__)' 2>&1 | tail -1)"

# 1. the student's raw forward pass and the features stage (numpy in and out)
step raw-student 90 $PY benchmarks/gpu_raw_student.py $DEV
step bench-features 120 $PY benchmarks/bench_features.py --device $DEV $BF --results "$RES"
step compare 60 $PY benchmarks/gpu_compare.py $CMP          # numbers: CUDA fp32/bf16 vs CPU

# 2. data: a rendered synthetic set, made larger by hard-linked copies (new ids, same bytes)
step make-synthetic 90 $L2L make-synthetic "$W/syn" $SYN --workers $NPROC
step many 30 $GS many "$W/syn" "$W/many" --copies $COPIES
A="--dataset synthetic --videos $W/many/videos --annotations $W/many/annotations.json --no-progress --device $DEV"
$PY -c "
import torch, torchvision
from l2l.models.students import build_student, save_student
save_student(build_student(num_classes=400), '$W/student.pt', config={'gpu_check': True}, classes=[str(i) for i in range(400)])
torch.save(torchvision.models.video.r2plus1d_18().state_dict(), '$W/r21d.pth')" >>"$LOG" 2>&1 || say "could not save the random weights"

# 3. decode-only (the CPU stages) with all cores: what "all stages" is compared with
step "decode-only N" 90 $GS extract "extract decode-only N=$N" $A --store "$W/dec.zarr" --workers $N

# 4. features only, on the decoded store (1 worker on the first videos, then N on the rest)
step "features-only 1" 90 $GS extract "extract features-only w=1 ($ONE_LIMIT videos)" $A --store "$W/dec.zarr" --student "$W/student.pt" --workers 1 --limit $ONE_LIMIT
nvidia-smi dmon -s u -d 1 > "$OUT/dmon-features.txt" 2>&1 & DMON=$!
step "features-only N" 90 $GS extract "extract features-only N=$N" $A --store "$W/dec.zarr" --student "$W/student.pt" --workers $N
kill $DMON 2>/dev/null

# 5. the teacher (its clips come from a decode pass), all cores
step "teacher N" 120 $GS extract "extract teacher N=$N" $A --store "$W/dec.zarr" --teacher-weights "$W/r21d.pth" --workers $N $TLIMIT

# 6. everything on a fresh store: N workers (compare with decode-only N), then 1 worker
nvidia-smi dmon -s u -d 1 > "$OUT/dmon-all.txt" 2>&1 & DMON=$!
step "all stages N" 150 $GS extract "extract all stages fresh N=$N" $A --store "$W/all.zarr" --teacher-weights "$W/r21d.pth" --student "$W/student.pt" --workers $N $TLIMIT
kill $DMON 2>/dev/null

# 7. decode-only scaling over >= 200 videos (1/4/8/16 workers), then all stages with 1 worker
HELP=$($PY benchmarks/bench_extract_scaling.py --help 2>/dev/null)
if echo "$HELP" | grep -q -- "--workers" && echo "$HELP" | grep -q -- "--limit"; then
  step "decode scaling (bench_extract_scaling.py)" 150 $PY benchmarks/bench_extract_scaling.py \
    --set "$W/many" --workers "$(echo $SCALE | tr ' ' ',')" --limit $SCALE_LIMIT --reps 1
else
  for w in $SCALE; do
    step "decode-only w=$w" 90 $GS extract "extract decode-only w=$w ($SCALE_LIMIT videos)" $A \
      --store "$W/scale$w.zarr" --workers $w --limit $SCALE_LIMIT
  done
fi
step "all stages 1" 90 $GS extract "extract all stages fresh w=1 ($ONE_LIMIT videos)" $A --store "$W/all1.zarr" --teacher-weights "$W/r21d.pth" --student "$W/student.pt" --workers 1 --limit $ONE_LIMIT $TLIMIT
step "store verify" 60 $L2L store verify "$W/all.zarr"

# 8. the figures into RESULTS.md, then the test suite with the time left
TITLE="GPU check"; [ $DRY = 1 ] && TITLE="GPU check (dry run on CPU: tiny sizes, figures meaningless)"
RESERVE=0                      # the report and the suite may use what was kept for them
step report 30 $GS report --title "$TITLE" --results "$RES"
if [ $DRY = 0 ]; then
  XD=""; $PY -c "import xdist" 2>/dev/null && XD="-n ${PYTEST_WORKERS:-8}"
  step pytest 400 $PY -m pytest -q -p no:cacheprovider $XD tests
  tail -n 15 "$LOG" | grep -E "passed|failed" | tail -1 | sed 's/^/pytest: /' >> "$OUT/RESULTS.md"
fi
say "done"
