#!/usr/bin/env bash
# The GPU suite in one command (eval/gpu_suite.py says what it measures): on a borrowed GPU, from the repository
# root, with wheels/ carried (made here by `bash eval/gpu_wheels.sh`):
#     bash eval/gpu_suite.sh
# Results: eval/results/*_cuda.{json,md}. Where $OUT is set (the device tool's folder that comes back) they are
# also packed into $OUT/gpu_results.tar.gz, with gpu_suite_cuda.md and the log beside it; unpack here with
#     tar xzf <files_at>/gpu_results.tar.gz -C eval/results
# Extra arguments go to eval/gpu_suite.py (e.g. --parts sd,train, --budget 480, --smoke --device cpu).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
extra=()
LOG="${TMPDIR:-/tmp}/gpu_suite.log"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    extra=(--bundle "$OUT/gpu_results.tar.gz")
    LOG="$OUT/gpu_suite.log"
fi
"$PY" eval/gpu_suite.py "$@" ${extra[@]+"${extra[@]}"} 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    cp eval/results/gpu_suite_cuda.md "$OUT/" 2>/dev/null || true
fi
exit "$status"
