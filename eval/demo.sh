#!/usr/bin/env bash
# `make demo`: demo dataset from scikit-image photos -> train a small Pix2Pix -> eval telea, ns, pix2pix
# (+ sd when SD_MODEL names a local folder or cached hub id) -> report. Rerunning reuses what is finished.
#   SD_MODEL=/path/to/stable-diffusion-inpainting make demo
#   FID_WEIGHTS=/path/to/pt_inception-2015-12-05-6726825d.pth make demo
set -euo pipefail
cd "$(dirname "$0")/.."
DI=.venv/bin/diffinpaint
OUT=${DEMO_OUT:-demo-out}

[ -f "$OUT/data/masks.csv" ] || $DI data demo --out "$OUT/data"
$DI data check "$OUT/data"

if .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  TRAIN=(--size 256 --steps "${PIX2PIX_STEPS:-4000}" --batch-size 8 --mixed-precision bf16)  # the paper's net
else
  TRAIN=(--size 128 --ngf 32 --ndf 32 --steps "${PIX2PIX_STEPS:-600}" --batch-size 4)  # about 3 minutes on 2 cores
fi
RESUME=()
compgen -G "$OUT/pix2pix/checkpoints/step_*" > /dev/null && RESUME=(--resume)
$DI train pix2pix --data "$OUT/data" --out "$OUT/pix2pix" "${TRAIN[@]}" "${RESUME[@]}"
# pix2pix outputs made by an older checkpoint are stale: redo that model's run (eval refuses to mix them)
NEWEST=$(ls "$OUT/pix2pix/checkpoints" | tail -1)
RUN_CONFIG="$OUT/eval/runs/pix2pix/config.toml"
if [ -f "$RUN_CONFIG" ] && ! grep -q "$NEWEST" "$RUN_CONFIG"; then rm -rf "$OUT/eval/runs/pix2pix"; fi

MODELS=telea,ns,pix2pix
SD_ARGS=()
if [ -n "${SD_MODEL:-}" ]; then
  MODELS=sd,$MODELS
  SD_ARGS=(--sd-model "$SD_MODEL" --prompt-set "${PROMPT_SET:-natural}")
else
  echo "sd: skipped; to add Stable Diffusion: SD_MODEL=/path/to/inpainting-checkpoint (or a cached hub id) make demo"
fi
FID_ARGS=()
[ -n "${FID_WEIGHTS:-}" ] && FID_ARGS=(--fid-weights "$FID_WEIGHTS")
$DI eval --models "$MODELS" --data "$OUT/data" --out "$OUT/eval" --pix2pix-checkpoint "$OUT/pix2pix" \
  "${SD_ARGS[@]}" "${FID_ARGS[@]}"
echo "report: $(realpath "$OUT/eval/report.html")"
