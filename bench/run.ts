// `npm run bench [-- --filter matmul] [--reps 20]`: times every registered kernel case on this
// machine's adapter, prints a table and writes bench/results/<timestamp>.json.
import { mkdirSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { initEngine, tidy } from '../src/engine/tensor.js';
import { registeredBenches } from './harness.js';
import './kernels/index.js';

interface Result {
  family: string;
  name: string;
  medianMs: number | null;
  minMs: number | null;
  gflops: number | null;
  gbps: number | null;
  runs: number;
  skipped?: string;
  /** Path of the median ms in the GPU summary's `finllm` object. */
  summary?: string[];
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const e = await initEngine();
const dev = e.dev;
const filter = arg('filter');
const software = dev.info.isSoftware;
const reps = Number(arg('reps') ?? (software ? 3 : 25));
const results: Result[] = [];
let failed = 0;
console.log(`adapter: ${dev.name}${software ? ' (software renderer: small shapes only)' : ''}`);
console.log(`features: ${[...dev.features].join(', ') || 'none'}`);
for (const c of registeredBenches()) {
  if (filter && !`${c.family} ${c.name}`.includes(filter)) continue;
  if (c.gpuOnly && software) {
    results.push({ family: c.family, name: c.name, medianMs: null, minMs: null, gflops: null, gbps: null, runs: 0, skipped: 'software adapter' });
    continue;
  }
  let ready: Awaited<ReturnType<typeof c.setup>>;
  try {
    ready = await c.setup();
  } catch (err) {
    failed++;
    console.error(`${c.family} ${c.name}: ${(err as Error).message}`);
    results.push({ family: c.family, name: c.name, medianMs: null, minMs: null, gflops: null, gbps: null, runs: 0, skipped: 'FAILED (see log)' });
    continue;
  }
  if ('skip' in ready) {
    results.push({ family: c.family, name: c.name, medianMs: null, minMs: null, gflops: null, gbps: null, runs: 0, skipped: ready.skip });
    continue;
  }
  const { run, cleanup } = ready;
  const times: number[] = [];
  for (let i = 0; i < 2; i++) await dev.timeGpu(() => tidy(run)); // warm-up: compile, caches
  for (let i = 0; i < reps; i++) {
    const t = await dev.timeGpu(() => tidy(run));
    if (t !== null) times.push(t);
  }
  cleanup?.();
  await dev.sync();
  times.sort((a, b) => a - b);
  const med = times.length ? times[Math.floor(times.length / 2)]! : null;
  results.push({
    family: c.family,
    name: c.name,
    medianMs: med === null ? null : med * 1e3,
    minMs: times.length ? times[0]! * 1e3 : null,
    gflops: med && c.flops ? c.flops / med / 1e9 : null,
    gbps: med && c.bytes ? c.bytes / med / 1e9 : null,
    runs: times.length,
    summary: ready.summary,
  });
}

const fmt = (v: number | null, d = 3) => (v === null ? '-' : v >= 100 ? v.toFixed(0) : v.toPrecision(d));
const rows = results.map((r) => [r.family, r.name, r.skipped ?? fmt(r.medianMs), fmt(r.minMs), fmt(r.gflops), fmt(r.gbps)]);
const header = ['family', 'case', 'median ms', 'min ms', 'GFLOP/s', 'GB/s'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const r of rows) console.log(line(r));

const dir = join(process.cwd(), 'bench', 'results');
mkdirSync(dir, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const file = join(dir, `kernels-${stamp}.json`);
// The GPU summary's finllm entries these cases feed (bench/gpu-session.sh merges them).
const summary: Record<string, unknown> = {};
for (const r of results) {
  if (!r.summary || r.medianMs === null) continue;
  let node = summary;
  for (const k of r.summary.slice(0, -1)) node = (node[k] ??= {}) as Record<string, unknown>;
  node[r.summary.at(-1)!] = Number(r.medianMs.toPrecision(4));
}
writeFileSync(`${file}.tmp`, JSON.stringify({ adapter: dev.name, features: [...dev.features], software, reps, date: new Date().toISOString(), results, summary }, null, 2));
renameSync(`${file}.tmp`, file);
console.log(`\nwrote ${file}`);
dev.destroy();
if (failed > 0) {
  console.error(`${failed} case(s) failed`);
  process.exitCode = 1;
}
