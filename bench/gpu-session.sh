#!/usr/bin/env bash
# One call on a lent GPU host does everything that needs the card, in this order:
#   kernel benchmarks → the peer's kernels (torch SDPA, GEMM) → finllm end-to-end (1.1B and 160M
#   shapes) → the peer (HF + PEFT) on the same card → the test suite on the GPU. Results land in $OUT
#   (or ./gpu-results), with $OUT/summary.json in the format of bench/results/gpu/*.json.
# Here, first: npm ci && npm run build && bash ../shared/gpu-host/pack.sh; cp ../shared/bench/peer_*.py bench/
# Then, on the device: bash bench/gpu-session.sh   (carry .gpu-host and dist)
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
source .gpu-host/enter.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
node dist/bench/run.js 2>&1 | tee "$OUT/kernels.txt"
cp bench/results/kernels-*.json "$OUT/" 2>/dev/null
[ -f bench/peer_kernels.py ] && PYTHONUNBUFFERED=1 python3 bench/peer_kernels.py "$OUT" 2>&1 | tee "$OUT/peer-kernels.txt"
for p in 1.1b 160m; do
  node dist/bench/e2e.js --preset "$p" --storage bf16 2>&1 | tee -a "$OUT/e2e.txt"
  node dist/bench/e2e.js --preset "$p" --quantize nf4 2>&1 | tee -a "$OUT/e2e.txt"
done
cp bench/results/e2e-*.json "$OUT/" 2>/dev/null
[ -f bench/peer_peft.py ] && PYTHONUNBUFFERED=1 python3 bench/peer_peft.py tinyllama-1.1b,llama-160m "$OUT" 2>&1 | tee "$OUT/peer.txt"
npx vitest run 2>&1 | tail -40 | tee "$OUT/tests.txt"
node dist/bench/gpu-summary.js "$OUT"
