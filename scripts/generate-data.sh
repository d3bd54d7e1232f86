#!/usr/bin/env bash
# Writes every committed data file (data/finetune, data/eval, data/sample) with `finllm data
# generate`, byte for byte: data/README.md says what each file is for. Each line is one file; a
# test (tests/pipeline/synthetic.test.ts) runs these lines and compares the output with the
# committed files, so edit a line here when a file changes, and rerun this script after changing
# the generator (src/pipeline/data/synthetic.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
finllm() { node dist/src/cli/main.js "$@"; }
[ -f dist/src/cli/main.js ] || npx tsc -p tsconfig.json

# Fine-tuning tasks of configs/default.yaml: 1,000 records per task, 15 per task for validation.
finllm data generate --kind tasks -n 1000 --seed 101 --split train -o data/finetune/train.jsonl
finllm data generate --kind tasks -n 15 --seed 102 --split val -o data/finetune/val.jsonl

# Evaluation suites (held-out companies), in the evaluation layout.
finllm data generate --kind tasks -n 60 --seed 103 --split eval --eval --tasks sentiment -o data/eval/fin-sentiment.jsonl
finllm data generate --kind tasks -n 60 --seed 104 --split eval --eval --tasks figures -o data/eval/fin-figures.jsonl
finllm data generate --kind tasks -n 60 --seed 105 --split eval --eval --tasks summary -o data/eval/fin-summary.jsonl

# The small sample of configs/tiny-sample.yaml and the tests: every task kind, one per template.
finllm data generate --kind tasks -n 50 --seed 201 --split train --tasks sentiment,figures,summary,analysis,transcript,chat,completion -o data/sample/train.jsonl
finllm data generate --kind tasks -n 7 --seed 202 --split val --tasks sentiment,figures,summary,analysis,transcript,chat,completion -o data/sample/val.jsonl
