#!/usr/bin/env bash
# Here, before a GPU session (bench/gpu-session.sh): makes everything its device calls need, in the
# tree they send, and prints the calls.
#   1. builds dist/ (tsc) and writes dist/COMMIT (the commit built, -dirty with uncommitted changes:
#      the device's copy of the tree has no git history, so the summary's `commit` comes from here)
#   2. packs .gpu-host/ (Node.js, node_modules, Dawn, the Vulkan loader .debs; bench/gpu-host/pack.sh
#      --slim: what the session needs, ~44 MiB) when it is missing, not slim, or older than
#      package-lock.json or the packing scripts (~2.5 min on 2 cores)
#   3. checks that what travels (tracked and untracked-not-ignored files, plus the carried .gpu-host
#      and dist) fits the device tool's 64 MiB, and that no link (a worktree's node_modules) would
#      travel dangling
#
#   bash bench/gpu-prepare.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -e node_modules ] || { echo "gpu-prepare: no node_modules here: run npm ci first" >&2; exit 1; }

npx tsc -p tsconfig.json
echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- || echo -dirty)" > dist/COMMIT
echo "built dist/ at $(cat dist/COMMIT)"

kit=.gpu-host/node_modules.tar.xz
if [ ! -f "$kit" ] || [ "$(cat .gpu-host/variant 2> /dev/null)" != slim ] || [ package-lock.json -nt "$kit" ] || [ bench/gpu-host/pack.sh -nt "$kit" ] || [ bench/gpu-host/enter.sh -nt "$kit" ]; then
  bash bench/gpu-host/pack.sh --slim
else
  echo ".gpu-host is up to date ($(du -sh .gpu-host | cut -f1))"
fi

# What the device tool sends: the tree, plus what `carry` names.
links=$(git ls-files -co --exclude-standard | while read -r f; do [ -L "$f" ] && echo "$f"; done || true)
if [ -n "$links" ]; then
  echo "gpu-prepare: these links would travel as links and dangle on the device (the device copies the checkout the session was started in; call from one where they are real folders or ignored): $links" >&2
fi
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2> /dev/null | tail -1 | cut -f1)
carried=$(du -sb .gpu-host dist | awk '{ s += $1 } END { print s }')
total=$((tree + carried))
limit=$((64 * 1024 * 1024))
awk -v t="$tree" -v c="$carried" 'BEGIN { m = 1048576; printf "travels: tree %.1f MiB + .gpu-host and dist %.1f MiB = %.1f MiB of 64 MiB\n", t / m, c / m, (t + c) / m }'
if ((total > limit)); then
  echo "gpu-prepare: over the device tool's 64 MiB: ignore or remove what need not travel" >&2
  exit 1
fi

cat << 'EOF'

Device calls (tool `run`; each call: the command, timeout_s, carry):
  1. bash bench/gpu-session.sh measure     timeout_s 540   carry [".gpu-host", "dist"]
  2. at once after 1 (the machine stays warm ~30 s):
     bash bench/gpu-session.sh tests       timeout_s 260   carry [".gpu-host", "dist"]
     or, if 1 reports failed / timeout steps and the time left allows, rerun those first:
     bash bench/gpu-session.sh measure --only STEP,STEP --budget S    timeout_s S+60
  then give_back. Each call returns (under its files_at) steps-<mode>.json, summary.json,
  raw-<mode>.tgz and session-<mode>.log: copy them into a folder of their own per call
  (e.g. gpu-results/1, gpu-results/2) before the next call.
Here afterwards: bash bench/gpu-session.sh merge gpu-results   (one summary from every call's raw
results: writes bench/results/gpu/<card>-<YYYYMMDD>.json; commit it)
EOF
