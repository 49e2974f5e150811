#!/usr/bin/env bash
# Rehearses tools/gpu/device_run.sh on this machine's CPU as the GPU machine would run it: a
# Python 3.12 environment holding only what the GPU image holds (torch 2.11 and the packages of
# the device tool's KINDS.md that this project uses), the carried wheels installed by the
# script itself, tiny budgets. Fails unless every stage left its files.
#   bash tools/gpu/rehearse.sh [VENV]   (VENV: made once, ~3 GB with CUDA torch's libraries)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:-/tmp/gpu-image-py312}
if [[ ! -x $VENV/bin/python3 ]]; then
  "${PY312:-python3.12}" -m venv "$VENV"
  # This project's pip configuration pins torch 2.13 for Python 3.11: bypassed here.
  PIP_CONFIG_FILE=/dev/null "$VENV/bin/python3" -m pip install -q torch==2.11.0 numpy scipy \
    opencv-python-headless h5py jaxtyping==0.3.11 einops tqdm pyyaml matplotlib
fi
[[ -d .gpu ]] || .venv/bin/python tools/gpu/pack.py
export OUT=${OUT:-/tmp/gpu-rehearsal}
rm -rf "$OUT" /tmp/site
PATH=$VENV/bin:$PATH DEVICE=cpu BUDGET_S=${BUDGET_S:-600} SPEED_S=240 FINETUNE_S=90 CALIB_STEPS=3 BATCH=2 \
  FT_STEPS=2 SPEED_FRAMES=2 bash tools/gpu/device_run.sh
for f in log.txt agnostic.pt agnostic.pt.json agnostic.pt.train-state.pt speed.json finetuned.pt summary.json; do
  [[ -s $OUT/$f ]] || { echo "rehearsal: $OUT/$f is missing"; exit 1; }
done
echo "rehearsal: every stage left its files in $OUT ($(ls "$OUT" | wc -l) files; at most 8 come back)"
