# Source me on the GPU host, from the project root: sets up Node.js, the Vulkan loader and node_modules
# from .gpu-host/ (made by bench/gpu-host/pack.sh, which copies this file there), then checks that
# WebGPU finds a GPU adapter. It unpacks .deb files into / : never source it on a developer machine.
_kit=${GPU_HOST_KIT:-$(pwd)/.gpu-host}
if [ ! -d "$_kit" ]; then echo "enter.sh: no $_kit here; run pack.sh first" >&2; return 2 2>/dev/null || exit 2; fi
for _f in "$_kit"/deb/*.deb; do dpkg -x "$_f" / ; done; ldconfig
mkdir -p /tmp/gpu-host/bin
[ -x /tmp/gpu-host/bin/node ] || { xz -dc "$_kit/node.xz" > /tmp/gpu-host/bin/node && chmod +x /tmp/gpu-host/bin/node; }
if [ ! -d /tmp/gpu-host/lib/npm ] && [ -f "$_kit/npm.tar.xz" ]; then
  mkdir -p /tmp/gpu-host/lib && xz -dc "$_kit/npm.tar.xz" | tar -C /tmp/gpu-host/lib -xf -
  printf '#!/bin/sh\nexec node /tmp/gpu-host/lib/npm/bin/npm-cli.js "$@"\n' > /tmp/gpu-host/bin/npm
  printf '#!/bin/sh\nexec node /tmp/gpu-host/lib/npm/bin/npx-cli.js "$@"\n' > /tmp/gpu-host/bin/npx
  chmod +x /tmp/gpu-host/bin/npm /tmp/gpu-host/bin/npx
fi
export PATH=/tmp/gpu-host/bin:$PATH
if [ ! -d node_modules ]; then xz -dc "$_kit/node_modules.tar.xz" | tar -xf - ; fi
mkdir -p node_modules/webgpu/dist/linux-x64
[ -f node_modules/webgpu/dist/linux-x64/dawn.node ] || xz -dc "$_kit/dawn.node.xz" > node_modules/webgpu/dist/linux-x64/dawn.node
# NVIDIA's Vulkan driver manifest, where the driver is mounted outside the usual places
for _icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
  if [ -f "$_icd" ]; then export VK_DRIVER_FILES=$_icd; break; fi
done
_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$_egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$_egl
node -e "import('webgpu').then(async ({create}) => { globalThis.gpu = create([]); const a = await globalThis.gpu.requestAdapter({powerPreference:'high-performance'}); console.log('gpu-host: node', process.version, '| adapter:', a ? a.info.vendor + ' ' + a.info.device + ' (' + a.info.description + ')' : 'NONE'); })" 2>&1 | grep -v artificially
unset _kit _f _icd _egl
