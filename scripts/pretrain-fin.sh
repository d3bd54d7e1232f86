#!/usr/bin/env bash
# The pretraining recipe of configs/pretrain-fin.yaml: corpus → tokenizer → random init → full
# training. Each step is skipped when its output exists, so a re-run resumes (training resumes from
# its latest checkpoint). Arguments are passed to `finllm train` (e.g. --env gpu, --set k=v).
#
# Environment: OUT (run folder, default runs/pretrain-fin), DOCS (corpus documents, 200000),
# VAL_DOCS (1000), TOKENIZER_DOCS (20000), VOCAB (2048), PRESET (fin-s), SEED (1).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/pretrain-fin}
DOCS=${DOCS:-200000}
VAL_DOCS=${VAL_DOCS:-1000}
TOKENIZER_DOCS=${TOKENIZER_DOCS:-20000}
VOCAB=${VOCAB:-2048}
PRESET=${PRESET:-fin-s}
SEED=${SEED:-1}
finllm() { node dist/src/cli/main.js "$@"; }

[ -f dist/src/cli/main.js ] || npx tsc -p tsconfig.json
[ -f "$OUT/corpus/train.jsonl" ] || finllm data generate --kind corpus -n "$DOCS" --seed "$SEED" -o "$OUT/corpus/train.jsonl"
[ -f "$OUT/corpus/val.jsonl" ] || finllm data generate --kind corpus -n "$VAL_DOCS" --seed "$((SEED + 1000))" --split val -o "$OUT/corpus/val.jsonl"
if [ ! -f "$OUT/tokenizer/tokenizer.json" ]; then
  finllm data generate --kind corpus -n "$TOKENIZER_DOCS" --seed "$((SEED + 2000))" -o "$OUT/corpus/tokenizer.jsonl"
  finllm tokenizer train --data "$OUT/corpus/tokenizer.jsonl" --vocab-size "$VOCAB" "$OUT/tokenizer"
fi
[ -f "$OUT/init/config.json" ] || finllm init-model --preset "$PRESET" --tokenizer "$OUT/tokenizer" --seed "$SEED" "$OUT/init"
finllm train --config configs/pretrain-fin.yaml \
  --set "model.path=$OUT/init" --set "data.train=$OUT/corpus/train.jsonl" --set "data.val=$OUT/corpus/val.jsonl" \
  --set "output.dir=$OUT/train" "$@"
