#!/usr/bin/env bash
# Issue 20's call on a lent GPU (docs/gpu.md): one call of ~9 minutes whose stages are
# time-boxed in priority order, each result written under $OUT as soon as it exists:
#   1. the patient-agnostic weights: from the shipped ones, a new patient per batch and half the
#      queries as an operating room makes them; steps sized to the time left by a short timed
#      run; the resumable state saved about every minute (carry it back to continue);
#   2. `rayemb speed --device cuda`;
#   3. one per-patient fine-tune (prepare's recipe) on a new patient, timed.
# Needs .gpu/ from tools/gpu/pack.py. On the device:
#   run(command="bash tools/gpu/device_run.sh", carry=[".gpu"], timeout_s=600)
# Rehearsed on the CPU with tiny budgets by tools/gpu/rehearse.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder the results go to}"
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-540}        # the whole script, inside the call's 600 s
SPEED_S=${SPEED_S:-90}           # kept for stage 2
FINETUNE_S=${FINETUNE_S:-110}    # kept for stage 3
CALIB_STEPS=${CALIB_STEPS:-30}   # the timed run that sizes stage 1
MAX_STEPS=${MAX_STEPS:-8000}
BATCH=${BATCH:-16}
FT_STEPS=${FT_STEPS:-300}
SPEED_FRAMES=${SPEED_FRAMES:-20}
CT=.gpu/cts/example.nii.gz
PATIENT=.gpu/patient/ct.nii.gz
START=$(date +%s)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
box() { echo $(($1 > 10 ? $1 : 10)); }  # a time box (s) of at least 10 s
say() { echo "[gpu $(($(date +%s) - START)) s] $*"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl \
  || { say "cannot install the carried wheels"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD:$PWD/tools/gpu/standin PYTHONUNBUFFERED=1
RAYEMB=(python3 -m rayemb_ros.cli)  # the `rayemb` command, as the installed entry point would run it
python3 -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "no cuda",
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
command -v nvidia-smi >/dev/null && nvidia-smi -L

# Stage 1: the patient-agnostic weights.
TRAIN=(--volume "$CT" --anatomy --operating-room 0.5 --init rayemb_ros/checkpoints/rayemb_example.pt
       --batch "$BATCH" --templates 8 --points 64 --tau 0.02 --lr 5e-4 --warmup 100 --seed 20
       --device "$DEVICE" --no-progress)
if [[ -f .gpu/resume/agnostic.pt.train-state.pt ]]; then  # an earlier call's state, carried back
  cp .gpu/resume/agnostic.pt.train-state.pt "$OUT/"
  STEPS=${STEPS:?a resumed run needs the STEPS it was started with}
  say "resuming the earlier run's state towards $STEPS steps"
else
  say "timing $CALIB_STEPS steps"
  rm -rf /tmp/calib && mkdir -p /tmp/calib
  timeout "$(box $(($(left) - SPEED_S - FINETUNE_S)))" "${RAYEMB[@]}" train "${TRAIN[@]}" --steps "$CALIB_STEPS" \
    --val-every $((CALIB_STEPS / 3 > 0 ? CALIB_STEPS / 3 : 1)) --ckpt-every "$CALIB_STEPS" --out /tmp/calib/w.pt \
    || { say "the timed run failed"; exit 1; }
  PER_STEP=$(python3 -c 'import json, sys
h = json.load(open("/tmp/calib/w.pt.json"))["metrics"]["history"]
print(max(1e-3, (h[-1]["seconds"] - h[0]["seconds"]) / max(1, h[-1]["step"] - h[0]["step"])))')
  TRAIN_S=$(($(left) - SPEED_S - FINETUNE_S - 30))  # 30 s: start-up, validation, the last save
  STEPS=${STEPS:-$(python3 -c "print(max(1, min($MAX_STEPS, int($TRAIN_S / $PER_STEP))))")}
  say "$PER_STEP s per step: $STEPS steps in $TRAIN_S s"
fi
CKPT=100  # steps between saves of the state: about a minute's
[[ -n ${PER_STEP:-} ]] && CKPT=$(python3 -c "print(max(1, int(60 / $PER_STEP)))")
VAL=$((STEPS / 5 > 0 ? STEPS / 5 : 1))
timeout "$(box $(($(left) - SPEED_S - FINETUNE_S)))" "${RAYEMB[@]}" train "${TRAIN[@]}" --steps "$STEPS" --val-every "$VAL" \
  --ckpt-every "$CKPT" --out "$OUT/agnostic.pt"
say "stage 1 exit $?"

# Stage 2: the speed table on this device.
timeout "$(box $(($(left) - FINETUNE_S)))" "${RAYEMB[@]}" speed --device "$DEVICE" --volume "$CT" \
  --frames "$SPEED_FRAMES" --out "$OUT/speed.json"
say "stage 2 exit $?"

# Stage 3: one per-patient fine-tune from the new weights (else the shipped ones), timed.
WEIGHTS=$OUT/agnostic.pt
[[ -f $WEIGHTS ]] || WEIGHTS=rayemb_ros/checkpoints/rayemb_example.pt
rm -rf /tmp/finetune && mkdir -p /tmp/finetune
FT_START=$(date +%s)
timeout "$(box "$(left)")" python3 -c "
from pathlib import Path
from rayemb_ros.evaluation.prepare import finetune_config
from rayemb_ros.learning.train import train
train(finetune_config('$PATIENT', '$WEIGHTS', $FT_STEPS, '$DEVICE'), Path('/tmp/finetune/finetuned.pt'), progress=False)"
FT_RC=$?
cp /tmp/finetune/finetuned.pt /tmp/finetune/finetuned.pt.json "$OUT/" 2>/dev/null
python3 -c "import json; json.dump({'device': '$DEVICE', 'steps': ${STEPS:-0}, 'per_step_s': '${PER_STEP:-}',
  'finetune_steps': $FT_STEPS, 'finetune_wall_s': $(($(date +%s) - FT_START)), 'finetune_exit': $FT_RC,
  'finetune_from': '$WEIGHTS', 'total_s': $(($(date +%s) - START))}, open('$OUT/summary.json', 'w'), indent=1)"
say "stage 3 exit $FT_RC; done"
