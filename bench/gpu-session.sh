#!/usr/bin/env bash
# One call on a lent GPU host measures everything that needs the card, finllm and the peers side by
# side, and ends in one summary JSON (format: docs/gpu-summary.md):
#   1. kernel benchmarks (every case validated against the float64 reference first)
#   2. finllm end-to-end training at the peer's exact shapes (TinyLlama-1.1B, vocabulary 32000,
#      LoRA r=16 on all linear layers, batch 8 × 512): bf16 weights, NF4, NF4 + gradient
#      checkpointing, in fp16-mixed (and bf16 in fp32 for the record), each with nvidia-smi polled
#      for the process's device memory
#   3. the peers: HF transformers + PEFT (bench/peer/peer_peft.py, with and without gradient
#      checkpointing) and torch kernels (bench/peer/peer_kernels.py)
#   4. the GPU test tier (npm run test:gpu: the kernel suites forcing every variant)
#   5. bench/summary.ts: $OUT/summary.json and bench/results/gpu/<card>-<YYYYMMDD>.json (commit it)
# Here first: npm ci && npm run build && bash ../shared/gpu-host/pack.sh
# Then on the device: bash bench/gpu-session.sh   (carry .gpu-host and dist; results land in $OUT)
# Other benchmarks add their figures by writing files the summary reads: attention cases with
# kernel-bench ids attention.<shape>.fwd / .fwd_bwd, decode figures in $OUT/decode*.json.
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
[ -f .gpu-host/enter.sh ] && source .gpu-host/enter.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1 | tee "$OUT/gpu.csv"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || echo "${FINLLM_COMMIT:-unknown}" > "$OUT/commit.txt"

# 1. kernels (writes bench/results/kernels-<time>.json; copied into $OUT)
node dist/bench/run.js 2>&1 | tee "$OUT/kernels.txt"
latest=$(ls -t bench/results/kernels-*.json 2>/dev/null | head -1)
[ -n "$latest" ] && cp "$latest" "$OUT/"

# Runs "$@" in the background and records the most device memory (MiB) nvidia-smi shows for its
# process in $OUT/smi-$tag.txt; where the container hides the pid, the growth of the card's total.
with_device_peak() {
  local tag=$1; shift
  local base
  base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  "$@" &
  local pid=$! max_proc=0 max_total=0 m t
  while kill -0 "$pid" 2>/dev/null; do
    m=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null | awk -F', *' -v p="$pid" '$1 == p { print $2 }')
    t=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    [ -n "$m" ] && [ "$m" -gt "$max_proc" ] && max_proc=$m
    [ -n "$t" ] && [ "$t" -gt "$max_total" ] && max_total=$t
    sleep 0.2
  done
  wait "$pid"
  local rc=$?
  if [ "$max_proc" -gt 0 ]; then echo "$max_proc"; else echo $((max_total - base)); fi > "$OUT/smi-$tag.txt"
  return $rc
}

# 2. end to end
e2e() { local tag=$1; shift; with_device_peak "$tag" node dist/bench/e2e.js --preset 1.1b --vocab 32000 --tag "$tag" --out "$OUT" "$@" 2>&1 | tee -a "$OUT/e2e.txt"; }
e2e bf16 --storage bf16 --precision fp16-mixed --checkpointing none
e2e nf4 --quantize nf4 --precision fp16-mixed --checkpointing none
e2e nf4_gc --quantize nf4 --precision fp16-mixed --checkpointing full
e2e bf16_fp32 --storage bf16 --precision fp32 --checkpointing none

# 3. peers, same card, same call
PYTHONUNBUFFERED=1 python3 bench/peer/peer_peft.py tinyllama-1.1b "$OUT" 0,1 2>&1 | tee "$OUT/peer.txt"
PYTHONUNBUFFERED=1 python3 bench/peer/peer_kernels.py "$OUT" 2>&1 | tee "$OUT/peer_kernels.txt"

# 4. the GPU test tier
FINLLM_TEST_TIER=gpu npx vitest run tests/kernels tests/llama tests/train/precision.test.ts 2>&1 | tail -40 | tee "$OUT/tests.txt"

# 5. the summary
node dist/bench/summary.js --dir "$OUT" --results bench/results/gpu
cp bench/results/gpu/*.json "$OUT/" 2>/dev/null
