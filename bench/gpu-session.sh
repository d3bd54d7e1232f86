#!/usr/bin/env bash
# The GPU session: finllm and the PyTorch peers measured side by side on a lent card, ending in one
# summary JSON (format: docs/gpu-summary.md), in calls that each fit the device tool's 600 s limit
# and together the session's 15 minutes of device time (machine start included).
#
#   bash bench/gpu-session.sh [measure|tests|all] [--only STEP,...] [--budget S] [--dry] [--list]
#   bash bench/gpu-session.sh merge DIR...  (here: one summary from the raw-*.tgz files under DIR...)
#
# measure (default; ~330 s expected, stops itself at 480 s): the figures the issues need, most
#   needed first: the e2e training runs at TinyLlama-1.1B shapes (each also measures batch-1/8
#   decode and time to first token) with the HF + PEFT peer right after the bf16 one, the torch
#   kernel peer, then the checkpointed runs. The kernel cases the summary reads (bench/run.ts
#   --summary-only) come before them all, at no cost: they run while the random 1.1B checkpoint the
#   e2e runs need is drawn on the CPU.
# tests (~100 s expected, stops itself at 200 s): the GPU test tier (the GEMM variant matrix in a
#   step of its own), then every kernel-bench variant with the time left.
# all: both, one after the other (480 + 200 s), for a host without a per-command limit.
# --only a,b   just these steps (a rerun of what failed or timed out; names from --list)
# --budget S   the call's time budget in seconds (default per mode; env GPU_SESSION_BUDGET_S)
# --dry        the same steps with tiny shapes on this machine's adapter (lavapipe), a stand-in
#              nvidia-smi that sees no card, the peers skipped (no CUDA torch); results in a
#              temporary folder unless OUT is set. Checks the plumbing, measures nothing.
# --list       print the steps, their caps and commands, and exit
#
# Every step runs under `timeout`: its cap below, cut to what is left of the call's budget (less a
# reserve for the summary); a step with under 20 s left is skipped. Before and after every step the
# script rewrites, in $OUT: steps-<mode>.json (each step's status ok|failed|timeout|skipped, or
# running / stopped for the step a call was killed in / ended during; exit code, seconds, cap),
# summary.json (bench/summary.ts over everything measured so far: a figure not measured is null, and
# `session.steps` says why), raw-<mode>.tgz (the raw results: kernels-*.json, rewritten after every
# case; e2e-*.json, written after training and again after decoding; smi-*.txt, peer*.json,
# tests-report.json, the steps records), and session-<mode>.log (all output). So a call stopped at
# any point, even killed, returns a consistent partial record: four files, under the device tool's
# eight. The raw files stay in $GPU_SESSION_WORK (default /tmp/finllm-gpu-session), so on a machine
# still warm a later call's summary includes the earlier calls' figures too.
#
# ---- Here, before the session -----------------------------------------------------------------------
#   bash bench/gpu-prepare.sh    builds dist/, writes dist/COMMIT, packs .gpu-host/ (Node.js, node_modules,
#                                Dawn, the Vulkan loader: bench/gpu-host/pack.sh) when missing or stale,
#                                checks the size of what travels, and prints the two calls below
#   bash bench/gpu-session.sh --dry    (optional, ~2-4 min on lavapipe: the whole plumbing, tiny shapes)
#
# ---- The device calls (device tool `run`; both carry .gpu-host and dist) ----------------------------
#   1. command: bash bench/gpu-session.sh measure    timeout_s: 540   carry: [".gpu-host", "dist"]
#   2. at once (the machine stays warm only ~30 s after a call), if 1 left no step failed or timed out:
#      command: bash bench/gpu-session.sh tests      timeout_s: 260   carry: [".gpu-host", "dist"]
#      else, instead, a rerun of those steps: bash bench/gpu-session.sh measure --only e2e_nf4,peer_gc
#   Device time: start ~60-120 s + 1 (≤ 480 s) + 2 (≤ 200 s) + transfers ≈ 12-14 min of the 15.
#   Then give the machine back. Copy each call's files (its files_at folder) into a folder of its own
#   before the next call (gpu-results/1, gpu-results/2); here: bash bench/gpu-session.sh merge
#   gpu-results  writes bench/results/gpu/<card>-<YYYYMMDD>.json from every call's raw results:
#   commit it (with the session logs' story in bench/NOTES.md).
#
# ---- Time caps (estimates for an H100/H200, from the 2026-11-27 H100 session's figures) --------------
#   setup         enter.sh unpacks Node.js, node_modules (~40 MB xz), Dawn and the loader: ~10-20 s (no cap:
#                 it is sourced)
#   model         the random 1.1B checkpoint, drawn once for all e2e runs (bench/random-model.ts): ~130 s of
#                 one core on the 2-core VM here, expected ~60-90 s there; runs in the background beside
#                 `kernels` (CPU only; the kernel bench times with GPU timestamps). Cap 240 s
#   kernels       13 summary cases (7 GEMM-family at 4096-scale shapes, 6 attention: the variants the model
#                 picks); each draws ~10-40 M random values (~1-5 s), validates on sampled elements
#                 and times 27 runs of ≤ 10 ms: ~40-60 s. Cap 150 s
#   e2e_*         load the cached checkpoint (~10 s), 12 training steps (≤ 1.4 s each at the old 2,942
#                 tok/s; ≤ 2 s with checkpointing), decode batch 1 and 8 (5 + 128 tokens each, ≤ 55 ms per
#                 step at the old 18 tok/s) and two 512-token prefills: ≤ 60 s. Cap 150 s each; the
#                 checkpointed and fp32 runs skip decoding (their weights' decode is measured already)
#   peer, peer_gc transformers + PEFT import (~10 s), a 1.1B model built on the CPU (~10 s), 13 steps of
#                 137-300 ms, HF generate 136 tokens at ~14 tok/s (~10 s): ~40-60 s. Cap 150 s each
#   peer_kernels  torch import and a few hundred small timed calls: ~15 s. Cap 90 s
#   tests         the whole suite took 13.7 s on the H100 (474 tests): ~20-60 s expected. Cap 120 s
#   tests_gemm    the GEMM variant matrix (hundreds of kernels, compiled in seconds on a GPU; > 5 min on
#                 lavapipe): ~20-60 s expected. Cap 120 s
#   kernels_all   every variant (the tuner's view), with whatever time is left
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$(pwd)

usage() { sed -n '6,7p' "$0" | sed 's/^# *//'; }

MODE=measure
DRY=0
ONLY=""
LIST=0
BUDGET=${GPU_SESSION_BUDGET_S:-}
MERGE_DIRS=()
while (($#)); do
  case $1 in
    measure | tests | all) MODE=$1 ;;
    merge)
      MODE=merge
      shift
      MERGE_DIRS=("$@")
      set --
      continue
      ;;
    --dry) DRY=1 ;;
    --only)
      ONLY=${2:-}
      shift
      ;;
    --budget)
      BUDGET=${2:-}
      shift
      ;;
    --list) LIST=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "gpu-session: unknown argument '$1'" >&2
      usage >&2
      exit 1
      ;;
  esac
  shift
done

# ---- merge (here): one summary from the raw folders of several calls ---------------------------------
if [ "$MODE" = merge ]; then
  [ ${#MERGE_DIRS[@]} -gt 0 ] || { echo "gpu-session merge: name the folder(s) holding the calls' raw-*.tgz" >&2; exit 1; }
  for d in "${MERGE_DIRS[@]}"; do [ -d "$d" ] || { echo "gpu-session merge: '$d' is not a folder" >&2; exit 1; }; done
  mapfile -t raws < <(find "${MERGE_DIRS[@]}" -name 'raw-*.tgz' | sort)
  [ ${#raws[@]} -gt 0 ] || { echo "gpu-session merge: no raw-*.tgz under ${MERGE_DIRS[*]}" >&2; exit 1; }
  merged=$(mktemp -d /tmp/finllm-gpu-merged-XXXXXX)
  for r in "${raws[@]}"; do tar -xzf "$r" -C "$merged" || exit 2; done
  rm -f "$merged/summary.json"
  node dist/bench/summary.js --dir "$merged" --print || exit 2
  echo "merged raw results: $merged"
  exit 0
fi

case $BUDGET in '') case $MODE in measure) BUDGET=480 ;; tests) BUDGET=200 ;; all) BUDGET=680 ;; esac ;; esac
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "gpu-session: --budget: expected whole seconds, got '$BUDGET'" >&2; exit 1; }
RESERVE_S=15   # the final summary and archive
GRACE_S=10     # timeout's --kill-after
MIN_STEP_S=20  # a step given less than this is skipped: its figures would be cut short anyway

# ---- shapes: the peer's (docs/gpu-summary.md), or tiny ones for --dry --------------------------------
if ((DRY)); then
  MODEL_SHAPE=(--preset tiny --vocab 600)
  E2E_RUN=(--batch 2 --seq 32 --steps 2 --new-tokens 8 --ttft-prompt 32)
  KERNEL_IDS=(--summary-only --ids gemm_f32_256,gemm_f16_256,attention.B1_T64_Hq4_Hkv2_D16.fwd,attention.B1_T64_Hq4_Hkv2_D16.fwd_bwd --reps 2)
  KERNELS_ALL=(--filter elementwise --reps 2)
  TESTS=${GPU_SESSION_TESTS:-tests/kernels/swiglu.test.ts}
  GEMM_TESTS=(-t 'the variant choice') # the full variant matrix takes > 5 min on lavapipe
else
  MODEL_SHAPE=(--preset 1.1b --vocab 32000)
  E2E_RUN=(--batch 8 --seq 512 --steps 10 --new-tokens 128 --ttft-prompt 512)
  KERNEL_IDS=(--summary-only)
  KERNELS_ALL=()
  TESTS=${GPU_SESSION_TESTS:-tests/kernels tests/llama tests/train/precision.test.ts}
  GEMM_TESTS=()
fi

# ---- the steps --------------------------------------------------------------------------------------
# step NAME CAP_S COMMAND...: runs COMMAND (a program, not a shell function) under timeout.
measure_steps() {
  step_bg model 240 node dist/bench/random-model.js --cache "$MODEL_CACHE" "${MODEL_SHAPE[@]}"
  step kernels 150 node dist/bench/run.js "${KERNEL_IDS[@]}" --json "$WORK/kernels-summary.json"
  step_wait model
  e2e bf16 150 --storage bf16 --precision fp16-mixed --checkpointing none
  peer peer 150 0
  e2e nf4 150 --quantize nf4 --precision fp16-mixed --checkpointing none
  peer_step peer_kernels 90 bench/peer/peer_kernels.py "$WORK"
  e2e nf4_gc 150 --quantize nf4 --precision fp16-mixed --checkpointing full --skip-decode
  peer peer_gc 150 1
  e2e bf16_fp32 150 --storage bf16 --precision fp32 --checkpointing none --skip-decode
}
tests_steps() {
  # The GPU tier (npm run test:gpu) in two steps, so the GEMM variant matrix (its largest file) cannot
  # take the other suites' results down with it.
  local vitest=(env FINLLM_TEST_TIER=gpu node node_modules/vitest/vitest.mjs run --reporter=default --reporter=json)
  # PyTorch's full fine-tuning trajectory on the reference fixtures (torch on the host's CPU, ~10 s; first, so the test steps'
  # caps cannot squeeze it out):
  # the golden file tests/train/full-trajectory.test.ts would compare with (it uses a float64
  # reference until then; no torch here). Copy $WORK/full-ft into tests/fixtures/reference.
  peer_step full_ft_golden 60 tests/fixtures/reference/make_full_ft_reference.py tests/fixtures/reference "$WORK/full-ft" || true
  # shellcheck disable=SC2086 # TESTS is a list of paths
  step tests 120 "${vitest[@]}" --outputFile.json="$WORK/tests-report.json" $TESTS --exclude tests/kernels/gemm.test.ts
  step tests_gemm 120 "${vitest[@]}" --outputFile.json="$WORK/tests-report-gemm.json" tests/kernels/gemm.test.ts "${GEMM_TESTS[@]}"
  # Best effort: it takes what time is left, and a timeout there fails nothing (its JSON keeps every
  # case finished; `complete: false`).
  BEST_EFFORT=kernels_all step kernels_all 600 node dist/bench/run.js "${KERNELS_ALL[@]}" --json "$WORK/kernels-all.json"
}
# e2e TAG CAP FLAGS...: one training run at the model's shapes, nvidia-smi polled for the device peak.
e2e() {
  local tag=$1 cap=$2
  shift 2
  step "e2e_$tag" "$cap" node dist/bench/e2e.js "${MODEL_SHAPE[@]}" "${E2E_RUN[@]}" --model-cache "$MODEL_CACHE" --tag "$tag" --out "$WORK" "$@"
}
# peer_step NAME CAP SCRIPT ARGS...: a PyTorch peer (skipped in a dry run: no CUDA torch here).
peer_step() {
  local name=$1 cap=$2
  shift 2
  if ((DRY)); then
    skip "$name" "$cap" "dry run: no CUDA torch here"
    return 1
  fi
  step "$name" "$cap" env PYTHONUNBUFFERED=1 "$PYTHON" "$@"
}
# peer NAME CAP GC: bench/peer/peer_peft.py with (1) or without (0) gradient checkpointing, one run each
# so that each has its own cap; its peer.json becomes $WORK/peer.json or peer-gc.json.
peer() {
  local name=$1 cap=$2 gc=$3 dir="$WORK/peer-run-$1"
  ((LIST || DRY)) || mkdir -p "$dir"
  peer_step "$name" "$cap" bench/peer/peer_peft.py tinyllama-1.1b "$dir" "$gc" || return 0
  ((LIST)) && return
  if [ -f "$dir/peer.json" ]; then mv "$dir/peer.json" "$WORK/$([ "$gc" = 1 ] && echo peer-gc.json || echo peer.json)"; fi
  rmdir "$dir" 2> /dev/null
  refresh
}

selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

if ((LIST)); then
  step() { selected "$1" && printf '%-14s cap %4ss  %s\n' "$1" "$2" "${*:3}"; return 0; }
  step_bg() { selected "$1" && printf '%-14s cap %4ss  %s   (in the background)\n' "$1" "$2" "${*:3}"; return 0; }
  step_wait() { :; }
  skip() { selected "$1" && printf '%-14s skipped: %s\n' "$1" "$3"; return 0; }
  refresh() { :; }
  MODEL_CACHE='$MODEL_CACHE' WORK='$WORK' PYTHON=${PYTHON:-python3}
  echo "gpu-session $MODE$( ((DRY)) && echo ' --dry'): budget ${BUDGET}s (steps stop ${RESERVE_S}s before it)"
  case $MODE in measure) measure_steps ;; tests) tests_steps ;; all) measure_steps; tests_steps ;; esac
  exit 0
fi

# ---- where things go --------------------------------------------------------------------------------
if ((DRY)); then
  OUT=${OUT:-$(mktemp -d /tmp/finllm-gpu-dry-XXXXXX)}
  WORK=${GPU_SESSION_WORK:-$(mktemp -d /tmp/finllm-gpu-dry-work-XXXXXX)}
else
  OUT=${OUT:-$ROOT/gpu-results}
  WORK=${GPU_SESSION_WORK:-/tmp/finllm-gpu-session}
fi
MODEL_CACHE=${GPU_SESSION_MODEL_CACHE:-$WORK-model-cache}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK" "$WORK/results" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STEPS_FILE="steps-$MODE-$STAMP.json"
LOG="$OUT/session-$MODE.log"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
SECONDS=0
DEADLINE=$BUDGET

# ---- the record: steps-<mode>-<stamp>.json in WORK, copied to OUT as steps-<mode>.json ---------------
declare -a S_NAME=() S_STATUS=() S_RC=() S_SEC=() S_CAP=() S_REASON=()
declare -A S_INDEX=()
record() { # NAME STATUS RC SECONDS CAP REASON
  local i=${S_INDEX[$1]:-}
  if [ -z "$i" ]; then
    i=${#S_NAME[@]}
    S_INDEX[$1]=$i
    S_NAME[i]=$1
  fi
  S_STATUS[i]=$2 S_RC[i]=$3 S_SEC[i]=$4 S_CAP[i]=$5 S_REASON[i]=${6//\"/\'}
}
write_steps() {
  local f="$WORK/$STEPS_FILE" i sep=""
  {
    printf '{"mode":"%s","dry":%s,"budget_s":%d,"started":"%s","steps":[' "$MODE" "$( ((DRY)) && echo true || echo false)" "$BUDGET" "$DATE"
    for i in "${!S_NAME[@]}"; do
      printf '%s\n {"name":"%s","status":"%s","rc":%s,"seconds":%s,"cap_s":%s,"reason":"%s"}' "$sep" "${S_NAME[i]}" "${S_STATUS[i]}" "${S_RC[i]}" "${S_SEC[i]}" "${S_CAP[i]}" "${S_REASON[i]}"
      sep=,
    done
    printf '\n]}\n'
  } > "$f.tmp" && mv "$f.tmp" "$f" && cp "$f" "$OUT/steps-$MODE.json"
}
# Rebuilds the summary and the raw archive in OUT from everything in WORK (~1 s).
refresh() {
  write_steps
  if [ -f dist/bench/summary.js ] && command -v node > /dev/null; then
    timeout 30 node dist/bench/summary.js --dir "$WORK" --results "$WORK/results" --date "$DATE" > /dev/null &&
      cp "$WORK/summary.json" "$OUT/summary.json"
  fi
  tar -czf "$OUT/raw-$MODE.tgz.tmp" -C "$WORK" --exclude=./results --exclude=./bin . 2> /dev/null && mv "$OUT/raw-$MODE.tgz.tmp" "$OUT/raw-$MODE.tgz"
}

# The seconds a step may run: its cap, cut to the budget left; 0 when too little is left.
allowance() {
  local cap=$1 left=$((DEADLINE - SECONDS - RESERVE_S - GRACE_S))
  ((left < cap)) && cap=$left
  ((cap < MIN_STEP_S)) && cap=0
  echo "$cap"
}
status_of() { # RC ELAPSED ALLOWED
  if (($1 == 0)); then echo ok; elif (($1 == 124 || $1 == 137)) && (($2 >= $3 - 1)); then echo timeout; else echo failed; fi
}
skip() { # NAME CAP REASON
  selected "$1" || return 0
  echo "=== $1: skipped ($3)"
  record "$1" skipped null 0 "$2" "$3"
  refresh
}
FAILED=0
CURRENT_PID="" CURRENT_T0=0 POLL_PID=""
# step_start NAME CAP: sets STEP_T to the seconds the step may run, or skips it (out of time) and
# returns 1; a skipped step fails the call unless it is the BEST_EFFORT one.
step_start() {
  local name=$1 cap=$2
  STEP_T=$(allowance "$cap")
  if ((STEP_T == 0)); then
    [ "${BEST_EFFORT:-}" = "$name" ] || FAILED=1
    skip "$name" "$cap" "out of time: $((DEADLINE - SECONDS - RESERVE_S - GRACE_S)) s left for steps of the call's ${BUDGET} s, under ${MIN_STEP_S}"
    return 1
  fi
}
# step_end NAME RC SECONDS ALLOWED: records how the step ended; anything but ok fails the call, but a
# timeout of the BEST_EFFORT step.
step_end() {
  local name=$1 rc=$2 s=$3 t=$4 st
  st=$(status_of "$rc" "$s" "$t")
  [ "$st" = ok ] || [ "$st/${BEST_EFFORT:-}" = "timeout/$name" ] || FAILED=1
  echo "=== $name: $st (exit $rc) in ${s}s"
  record "$name" "$st" "$rc" "$s" "$t" ""
  refresh
}
step() {
  local name=$1 cap=$2
  shift 2
  selected "$name" || return 0
  step_start "$name" "$cap" || return 0
  local t=$STEP_T
  echo "=== $name: cap ${t}s, at ${SECONDS}s of ${BUDGET}s: $*"
  record "$name" running null null "$t" ""
  write_steps
  local s0=$SECONDS
  if [[ $name == e2e_* ]]; then
    rm -f "$WORK/smi-${name#e2e_}.txt"
    poll_device_peak "${name#e2e_}" &
    POLL_PID=$!
  fi
  # In the background with `wait`, so a TERM to this script is handled at once (finish stops the step).
  timeout --kill-after=$GRACE_S "$t" "$@" &
  CURRENT_PID=$! CURRENT_T0=$s0
  wait "$CURRENT_PID"
  local rc=$?
  CURRENT_PID=""
  if [ -n "$POLL_PID" ]; then
    kill "$POLL_PID" 2> /dev/null
    wait "$POLL_PID" 2> /dev/null
    POLL_PID=""
  fi
  step_end "$name" "$rc" $((SECONDS - s0)) "$t"
}
# A step in the background (CPU work beside a GPU step); step_wait NAME collects it.
declare -A BG_PID=() BG_T0=() BG_CAP=()
step_bg() {
  local name=$1 cap=$2
  shift 2
  selected "$name" || return 0
  step_start "$name" "$cap" || return 0
  local t=$STEP_T
  echo "=== $name: cap ${t}s, in the background: $*"
  record "$name" running null null "$t" ""
  write_steps
  timeout --kill-after=$GRACE_S "$t" "$@" &
  BG_PID[$name]=$! BG_T0[$name]=$SECONDS BG_CAP[$name]=$t
}
step_wait() {
  local name=$1 pid=${BG_PID[$1]:-}
  [ -n "$pid" ] || return 0
  wait "$pid"
  local rc=$? s=$((SECONDS - ${BG_T0[$name]}))
  unset "BG_PID[$name]"
  step_end "$name" "$rc" "$s" "${BG_CAP[$name]}"
}

# ---- nvidia-smi: the card, and the device peak of an e2e run -----------------------------------------
smi() { command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi "$@"; }
# Polls until killed; writes the most device memory (MiB) seen in WORK/smi-TAG.txt: the card's compute
# processes (the step's process is the only one), or, where the container hides them, the growth of the
# card's used memory over its value at the start. Writes nothing when it sees nothing.
poll_device_peak() {
  local tag=$1 base used apps max=0 v
  base=$(smi --query-gpu=memory.used --format=csv,noheader,nounits 2> /dev/null | head -1)
  [[ $base =~ ^[0-9]+$ ]] || return 0
  while kill -0 $$ 2> /dev/null && sleep 0.25; do
    apps=$(smi --query-compute-apps=used_memory --format=csv,noheader,nounits 2> /dev/null | awk '$1 + 0 > 0 { s += $1 } END { print s + 0 }')
    used=$(smi --query-gpu=memory.used --format=csv,noheader,nounits 2> /dev/null | head -1)
    v=${apps:-0}
    ((v == 0)) && [[ $used =~ ^[0-9]+$ ]] && v=$((used - base))
    if ((v > max)); then
      max=$v
      echo "$max" > "$WORK/smi-$tag.txt.tmp" && mv "$WORK/smi-$tag.txt.tmp" "$WORK/smi-$tag.txt"
    fi
  done
}

# ---- the end, however it comes -----------------------------------------------------------------------
finish() {
  local rc=$?
  trap - EXIT TERM INT
  local name
  # Steps still running (a TERM, or an error of this script): timeout passes the TERM on to its command.
  [ -n "$CURRENT_PID" ] && kill "$CURRENT_PID" 2> /dev/null
  [ -n "$POLL_PID" ] && kill "$POLL_PID" 2> /dev/null
  for name in "${!BG_PID[@]}"; do kill "${BG_PID[$name]}" 2> /dev/null; done
  for name in "${!S_INDEX[@]}"; do
    local i=${S_INDEX[$name]}
    if [ "${S_STATUS[i]}" = running ]; then
      local t0=$CURRENT_T0
      [ -n "${BG_T0[$name]:-}" ] && t0=${BG_T0[$name]}
      record "$name" stopped null $((SECONDS - t0)) "${S_CAP[i]}" "the call ended during this step"
      FAILED=1
    fi
  done
  refresh
  echo
  echo "=== gpu-session $MODE$( ((DRY)) && echo ' --dry') done in ${SECONDS}s of ${BUDGET}s; results in $OUT:"
  ls "$OUT"
  command -v node > /dev/null && timeout 20 node dist/bench/summary.js --dir "$WORK" --results "$WORK/results" --date "$DATE" --print
  ((rc == 0 && FAILED)) && rc=1
  # Let tee write the last lines into the log before the call returns.
  exec > /dev/null 2>&1
  wait "$TEE_PID" 2> /dev/null || sleep 0.3
  exit "$rc"
}
trap finish EXIT
trap 'exit 143' TERM INT

# ---- setup ------------------------------------------------------------------------------------------
echo "=== gpu-session $MODE$( ((DRY)) && echo ' --dry'), budget ${BUDGET}s, $(date -u +%FT%TZ); out $OUT, work $WORK"
if ((DRY)); then
  # A stand-in nvidia-smi that sees no card (the card is then the adapter the benchmarks report).
  mkdir -p "$WORK/bin"
  cat > "$WORK/bin/nvidia-smi" << 'EOF'
#!/bin/sh
case "$*" in
  *--query-gpu=memory.used*) echo 0 ;;
  *--query-compute-apps*) ;;
  *) echo "No devices were found"; exit 6 ;;
esac
EOF
  chmod +x "$WORK/bin/nvidia-smi"
  export PATH="$WORK/bin:$PATH"
else
  # Always (--only or not): on a fresh host nothing runs without it.
  s0=$SECONDS
  if [ -f .gpu-host/enter.sh ]; then
    # shellcheck disable=SC1091
    source .gpu-host/enter.sh
    rc=$?
  else
    echo "no .gpu-host/enter.sh (bench/gpu-prepare.sh packs it): using this host's node" >&2
    rc=0
  fi
  record setup "$( ((rc == 0)) && echo ok || echo failed)" "$rc" $((SECONDS - s0)) null ""
fi
if smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$WORK/gpu.csv.tmp" 2> /dev/null && [ -s "$WORK/gpu.csv.tmp" ]; then
  head -1 "$WORK/gpu.csv.tmp" > "$WORK/gpu.csv"
  cat "$WORK/gpu.csv"
fi
rm -f "$WORK/gpu.csv.tmp"
# The commit measured: git's where the tree is a checkout (-dirty with uncommitted changes), else what
# bench/gpu-prepare.sh wrote beside the build it made.
if git rev-parse HEAD > /dev/null 2>&1; then
  echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- 2> /dev/null || echo -dirty)" > "$WORK/commit.txt"
else
  commit=$(head -1 dist/COMMIT 2> /dev/null)
  echo "${commit:-${FINLLM_COMMIT:-unknown}}" > "$WORK/commit.txt"
fi
echo "commit $(cat "$WORK/commit.txt"), node $(node --version 2> /dev/null || echo missing), python $("$PYTHON" --version 2>&1 | head -1)"
refresh

case $MODE in
  measure) measure_steps ;;
  tests) tests_steps ;;
  all)
    measure_steps
    tests_steps
    ;;
esac
