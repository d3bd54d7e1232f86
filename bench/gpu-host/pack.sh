#!/usr/bin/env bash
# Pack what a bare Linux GPU host (NVIDIA driver present; no Node.js, no Vulkan loader, no network)
# needs to run this project: Node.js and npm, the Vulkan/GL loader packages, and node_modules.
# Run from the project root after `npm ci`: `bash bench/gpu-host/pack.sh`. Writes .gpu-host/
# (~40 MB; git-ignored). Then ship the project tree plus .gpu-host/ to the host and, there, from the
# project root: `source .gpu-host/enter.sh` (bench/gpu-session.sh does it). Needs apt-get (here, not
# there) for the loader packages. bench/gpu-prepare.sh runs this when .gpu-host is missing or older
# than package-lock.json.
#
# --slim: only what bench/gpu-session.sh needs (~9 MB less, so the tree plus the kit stay well inside
# the device tool's 64 MiB): no npm, and node_modules without the dev dependencies that only the type
# checker (typescript), the serve tests (openai) and the report screenshot (playwright-core) use;
# `npm test` does not work there then, `node node_modules/vitest/vitest.mjs run tests/kernels` does.
set -euo pipefail
slim=0
[ "${1:-}" = --slim ] && slim=1
root=$(pwd)
[ -f package.json ] || { echo "pack.sh: run me from the project root" >&2; exit 2; }
[ -d node_modules ] || { echo "pack.sh: run npm ci first" >&2; exit 2; }
kit=$root/.gpu-host
mkdir -p "$kit/deb"
# .gitignore lists /.gpu-host/ (in a worktree .git is a file, so .git/info/exclude is no place for it)
git check-ignore -q .gpu-host 2>/dev/null || echo "pack.sh: warning: .gpu-host is not git-ignored here; it must not be committed" >&2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cp "$here/enter.sh" "$kit/enter.sh"
node_bin=$(command -v node)
if [ ! -f "$kit/node.xz" ] || [ "$node_bin" -nt "$kit/node.xz" ]; then
  xz -T0 -6 -c "$node_bin" > "$kit/node.xz"
fi
if ((slim)); then
  rm -f "$kit/npm.tar.xz"
else
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  [ -f "$kit/npm.tar.xz" ] || tar -C "$(dirname "$npm_dir")" -cf - "$(basename "$npm_dir")" | xz -T0 -3 > "$kit/npm.tar.xz"
fi
if ! ls "$kit"/deb/libvulkan1_*.deb >/dev/null 2>&1; then
  (cd "$kit/deb" && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>&1 | grep -v unsandboxed || true)
fi
# node_modules without the prebuilt Dawn binaries for other platforms; Dawn for linux-x64 compressed on its own
# (node_modules may be a link to another checkout's: its target is packed under the name node_modules)
nm=$(readlink -f node_modules)
b=$(basename "$nm")
excludes=(--exclude="$b/webgpu/dist" --exclude="$b/.cache")
((slim)) && excludes+=(--exclude="$b/typescript" --exclude="$b/openai" --exclude="$b/playwright-core")
tar -C "$(dirname "$nm")" --transform "s,^$b,node_modules," "${excludes[@]}" -cf - "$b" | xz -T0 -3 > "$kit/node_modules.tar.xz"
xz -T0 -6 -c node_modules/webgpu/dist/linux-x64/dawn.node > "$kit/dawn.node.xz"
git rev-parse HEAD > "$kit/packed-at" 2>/dev/null || true
echo "$( ((slim)) && echo slim || echo full)" > "$kit/variant"
du -sh "$kit"; ls -la "$kit"
