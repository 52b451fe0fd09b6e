#!/usr/bin/env bash
# Download the wheels the borrowed GPU machine lacks (it has Python 3.12 with torch, torchvision, transformers,
# accelerate, torchmetrics, safetensors, scikit-image, scikit-learn, opencv, pandas, matplotlib, peft, timm, einops,
# regex, huggingface-hub, but not these) into wheels/ (ignored by git), for eval/gpu_suite.sh to install offline.
# The versions are the ones this project's tests run with. Run here, once, where pip can reach its index:
#     bash eval/gpu_wheels.sh            # -> wheels/*.whl (about 21 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-wheels}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$DEST"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" \
    diffusers==0.42.1 torch-fidelity==0.4.0 spandrel==0.4.2 ImageHash==4.3.2 PyWavelets==1.9.0 tomli-w==1.2.0 \
    open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 \
    albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 stringzilla==5.3.2 simsimd==6.5.16
ls -l "$DEST"
