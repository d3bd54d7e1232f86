// How much memory the GPU has for our buffers. WebGPU has no such query, and Dawn's node binding
// (npm webgpu 0.6.2) does not expose Vulkan's memory heaps either (Dawn has the feature
// 'adapter-properties-memory-heaps' natively, but GPUAdapterInfo in this binding carries only vendor,
// architecture, device, description and subgroup sizes). So, in order:
//   1. FINLLM_GPU_MEMORY (e.g. `24GB`, `80GiB`, `512MiB`): the user's number, always wins;
//   2. NVIDIA: `nvidia-smi --query-gpu=name,memory.total,memory.used` (the row whose name matches
//      the adapter; with several non-matching rows, the smallest, to stay on the safe side);
//   3. AMD (amdgpu): /sys/class/drm/card*/device/mem_info_vram_{total,used};
//   4. a software adapter (Mesa lavapipe, SwiftShader): buffers live in system RAM, so RAM it is
//      (MemAvailable from /proc/meminfo as what is free);
//   5. otherwise unknown (integrated GPUs share system RAM in ways we cannot see): null.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../errors.js';

export interface DeviceMemory {
  /** Bytes of memory on the device (or given by FINLLM_GPU_MEMORY). */
  totalBytes: number;
  /** Bytes free for this process when asked (total minus what others use), when known. */
  availableBytes: number | null;
  /** Where the numbers come from, for messages. */
  source: string;
}

/** The adapter fields the lookup uses. */
export interface AdapterIdentity {
  vendor: string;
  device: string;
  description: string;
  isSoftware: boolean;
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/**
 * A byte size as people write it: `24GB` (10⁹), `24GiB` or `24G` (2³⁰), `512MiB`, `1.5e9` (bytes).
 * Throws a RangeError saying what was expected.
 */
export function parseByteSize(text: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  const value = m && unit !== undefined ? Number(m[1]) * unit : NaN;
  if (!(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(
      `${JSON.stringify(text)} is not a memory size: expected a number with an optional unit, e.g. 24GB, 80GiB, 512MiB`,
    );
  }
  return Math.floor(value);
}

/** The device's memory from FINLLM_GPU_MEMORY. A bad value is an InputError naming the variable. */
function fromEnvironment(): DeviceMemory | null {
  const raw = process.env.FINLLM_GPU_MEMORY;
  if (raw === undefined || raw.trim() === '') return null;
  try {
    const bytes = parseByteSize(raw);
    return { totalBytes: bytes, availableBytes: bytes, source: 'FINLLM_GPU_MEMORY' };
  } catch (err) {
    throw new InputError(`environment variable FINLLM_GPU_MEMORY: ${(err as Error).message}`);
  }
}

/** nvidia-smi rows: name, total and used MiB. Exported for tests. */
export function parseNvidiaSmi(csv: string): { name: string; totalBytes: number; usedBytes: number }[] {
  return csv
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const parts = l.split(',').map((s) => s.trim());
      const used = Number(parts.pop());
      const total = Number(parts.pop());
      return { name: parts.join(','), totalBytes: total * 2 ** 20, usedBytes: used * 2 ** 20 };
    })
    .filter((r) => r.totalBytes > 0 && Number.isFinite(r.usedBytes));
}

/** Picks the row for this adapter: the one whose name it mentions, else the smallest. Exported for tests. */
export function pickGpuRow<T extends { name: string; totalBytes: number }>(
  rows: T[],
  adapter: AdapterIdentity,
): T | null {
  if (rows.length === 0) return null;
  const text = `${adapter.device} ${adapter.description}`.toLowerCase();
  const named = rows.filter((r) => r.name && text.includes(r.name.toLowerCase().replace(/^nvidia\s+/, '')));
  const pool = named.length > 0 ? named : rows;
  return pool.reduce((a, b) => (b.totalBytes < a.totalBytes ? b : a));
}

function fromNvidiaSmi(adapter: AdapterIdentity): DeviceMemory | null {
  let out: string;
  try {
    out = execFileSync('nvidia-smi', ['--query-gpu=name,memory.total,memory.used', '--format=csv,noheader,nounits'], {
      encoding: 'utf8',
      timeout: 10_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    return null; // not installed or not working: fall through
  }
  const row = pickGpuRow(parseNvidiaSmi(out), adapter);
  if (!row) return null;
  return {
    totalBytes: row.totalBytes,
    availableBytes: Math.max(0, row.totalBytes - row.usedBytes),
    source: `nvidia-smi (${row.name})`,
  };
}

function fromAmdgpuSysfs(): DeviceMemory | null {
  const root = '/sys/class/drm';
  if (!existsSync(root)) return null;
  const cards: { totalBytes: number; usedBytes: number; name: string }[] = [];
  for (const card of readdirSync(root).filter((c) => /^card[0-9]+$/.test(c))) {
    try {
      const dev = join(root, card, 'device');
      const total = Number(readFileSync(join(dev, 'mem_info_vram_total'), 'utf8'));
      const used = Number(readFileSync(join(dev, 'mem_info_vram_used'), 'utf8'));
      if (total > 0) cards.push({ totalBytes: total, usedBytes: used, name: card });
    } catch {
      // not an amdgpu card
    }
  }
  if (cards.length === 0) return null;
  const card = cards.reduce((a, b) => (b.totalBytes < a.totalBytes ? b : a));
  return {
    totalBytes: card.totalBytes,
    availableBytes: Math.max(0, card.totalBytes - card.usedBytes),
    source: `amdgpu sysfs (${card.name})`,
  };
}

function fromSystemRam(): DeviceMemory {
  let available: number | null = null;
  try {
    const m = /^MemAvailable:\s+([0-9]+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) available = Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return { totalBytes: totalmem(), availableBytes: available, source: 'system RAM (software adapter)' };
}

/** The device's memory as best this platform can tell (see the header), or null when unknown. */
export function deviceMemory(adapter: AdapterIdentity): DeviceMemory | null {
  const env = fromEnvironment();
  if (env) return env;
  const text = `${adapter.vendor} ${adapter.description}`.toLowerCase();
  if (adapter.isSoftware) return fromSystemRam();
  if (text.includes('nvidia')) return fromNvidiaSmi(adapter);
  if (text.includes('amd') || text.includes('radeon') || text.includes('ati')) return fromAmdgpuSysfs();
  return null;
}

/** Bytes in a human unit (GiB, MiB or KiB). */
export function formatBytes(bytes: number): string {
  if (bytes >= 1 << 30) return `${(bytes / (1 << 30)).toFixed(2)} GiB`;
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${(bytes / 1024).toFixed(0)} KiB`;
}
