#!/usr/bin/env bash
# `make demo`: demo photos from scikit-image -> a train/test split -> train every model the toolkit trains in a small
# CPU configuration (the paper configurations on a GPU) -> eval them beside the floors, the classical and patch-based
# fills (+ sd with SD_MODEL) on the HELD-OUT images -> report. Rerunning reuses what is finished.
#   SD_MODEL=/path/to/stable-diffusion-inpainting make demo
#   FID_WEIGHTS=/path/to/pt_inception-2015-12-05-6726825d.pth LPIPS_WEIGHTS=/path/to/alexnet-owt-7be5be79.pth make demo
#   VGG_WEIGHTS=/path/to/vgg19-dcbb9e9d.pth make demo        (DMFN's perceptual losses; without: --no-perceptual)
#   ADE20K_WEIGHTS=/path/to/encoder_epoch_20.pth make demo    (LaMa's HRF perceptual loss; without: --no-perceptual)
#   DEMO_STEPS=2000 make demo                                 (longer training)
set -euo pipefail
cd "$(dirname "$0")/.."
DI=.venv/bin/diffinpaint
OUT=${DEMO_OUT:-demo-out}

# 1. Data: 27 crops of 9 photos, then 2/3 to train on and 1/3 held out for scoring. The split keeps every photo's
#    crops on one side (data/groups.csv, written by `data demo`) and near-duplicates together: no photo is both
#    trained on and scored.
if { [ -f "$OUT/data/masks.csv" ] && [ ! -f "$OUT/data/groups.csv" ]; } || \
   { [ -f "$OUT/test/split.json" ] && ! grep -q '"groups"' "$OUT/test/split.json"; }; then
  echo "error: $OUT holds a demo split from before photos were kept on one side (crops of one photo in both" \
    "train and test); delete $OUT (or DEMO_OUT=another-folder) and rerun" >&2
  exit 2
fi
[ -f "$OUT/data/masks.csv" ] || $DI data demo --out "$OUT/data"
[ -d "$OUT/test/images" ] || $DI data split "$OUT/data" --test-fraction 0.34 --seed 0 --out-train "$OUT/train" \
  --out-test "$OUT/test"
$DI data check "$OUT/test"

# 2. Train every model on the train split (resumed when a checkpoint exists)
if .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  STEPS=${DEMO_STEPS:-4000}
  declare -A TRAIN=(
    [pix2pix]="--size 256 --batch-size 8 --holes box --mixed-precision bf16"
    [deepfill]="--size 256 --batch-size 8 --holes box --mixed-precision bf16"
    [dmfn]="--size 256 --batch-size 8 --holes box --mixed-precision bf16"
    [dcgan]="--size 64 --batch-size 64"
    [transgan]="--size 32 --batch-size 64 --mixed-precision bf16"
    [repaint]="--size 64 --batch-size 16 --mixed-precision bf16"
    [lama]="--size 256 --batch-size 8 --mixed-precision bf16"
  )
  INFER=(--dcgan-iterations 1500 --repaint-steps 250)
else  # a few minutes on 2 cores: small networks at small sizes (the test photos are resized in and out)
  STEPS=${DEMO_STEPS:-150}
  # --preset quick: each model's small CPU configuration (`diffinpaint train NAME --preset quick --dry-run` prints it)
  declare -A TRAIN=([pix2pix]="--preset quick" [deepfill]="--preset quick" [dmfn]="--preset quick"
                    [dcgan]="--preset quick" [transgan]="--preset quick" [repaint]="--preset quick"
                    [lama]="--preset quick")
  INFER=(--dcgan-iterations 150 --dcgan-restarts 2 --repaint-steps 50 --repaint-jump-length 5 --repaint-jump-n-sample 2)
fi
if [ -n "${VGG_WEIGHTS:-}" ]; then TRAIN[dmfn]+=" --vgg-weights $VGG_WEIGHTS"; else TRAIN[dmfn]+=" --no-perceptual"; fi
if [ -n "${ADE20K_WEIGHTS:-}" ]; then TRAIN[lama]+=" --perceptual-weights $ADE20K_WEIGHTS"; else
  TRAIN[lama]+=" --no-perceptual"; fi
CKPT_ARGS=()
for model in pix2pix deepfill dmfn dcgan transgan repaint lama; do
  RESUME=()
  compgen -G "$OUT/$model/checkpoints/step_*" > /dev/null && RESUME=(--resume)
  # shellcheck disable=SC2086
  $DI train "$model" --data "$OUT/train" --out "$OUT/$model" --steps "$STEPS" ${TRAIN[$model]} \
    --sample-every "$STEPS" --checkpoint-every "$STEPS" "${RESUME[@]}"
  CKPT_ARGS+=("--$model-checkpoint" "$OUT/$model")
  # outputs made by an older checkpoint are stale: redo that model's run (eval refuses to mix them)
  NEWEST=$(ls "$OUT/$model/checkpoints" | tail -1)
  RUN_CONFIG="$OUT/eval/runs/$model/config.toml"
  if [ -f "$RUN_CONFIG" ] && ! grep -q "$NEWEST" "$RUN_CONFIG"; then rm -rf "$OUT/eval/runs/$model"; fi
done

# 3. Score on the held-out split only
MODELS=grey,ring_mean,telea,ns,exemplar,patchmatch,pix2pix,deepfill,dmfn,dcgan,transgan,repaint,lama  # grey, ring_mean: floors
SD_ARGS=()
if [ -n "${SD_MODEL:-}" ]; then
  MODELS=sd,$MODELS
  SD_ARGS=(--sd-model "$SD_MODEL" --prompt-set "${PROMPT_SET:-natural}")
else
  echo "sd: skipped; to add Stable Diffusion: SD_MODEL=/path/to/inpainting-checkpoint (or a cached hub id) make demo"
fi
WEIGHT_ARGS=()
[ -n "${FID_WEIGHTS:-}" ] && WEIGHT_ARGS+=(--fid-weights "$FID_WEIGHTS")
[ -n "${LPIPS_WEIGHTS:-}" ] && WEIGHT_ARGS+=(--lpips-weights "$LPIPS_WEIGHTS")
$DI eval --models "$MODELS" --data "$OUT/test" --out "$OUT/eval" "${CKPT_ARGS[@]}" "${INFER[@]}" \
  "${SD_ARGS[@]}" "${WEIGHT_ARGS[@]}"
echo "report: $(realpath "$OUT/eval/report.html")"
