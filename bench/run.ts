// `npm run bench [-- --filter matmul] [--reps 20]`: times every registered kernel case on this
// machine's adapter, prints a table and writes bench/results/<timestamp>.json.
import { mkdirSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { initEngine, tidy } from '../src/engine/tensor.js';
import { VALIDATED_FAMILIES, registeredBenches } from './harness.js';
import './kernels/index.js';

interface Result {
  family: string;
  name: string;
  id?: string;
  validated?: boolean;
  medianMs: number | null;
  minMs: number | null;
  gflops: number | null;
  gbps: number | null;
  runs: number;
  skipped?: string;
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
const failures: string[] = [];
console.log(`adapter: ${dev.name}${software ? ' (software renderer: small shapes only)' : ''}`);
console.log(`features: ${[...dev.features].join(', ') || 'none'}`);
for (const c of registeredBenches()) {
  if (filter && !`${c.family} ${c.name}`.includes(filter)) continue;
  if (c.gpuOnly && software) {
    results.push({ family: c.family, name: c.name, id: c.id, medianMs: null, minMs: null, gflops: null, gbps: null, runs: 0, skipped: 'software adapter' });
    continue;
  }
  const missing = (c.needs ?? []).filter((f) => !dev.has(f));
  if (missing.length) {
    results.push({ family: c.family, name: c.name, id: c.id, medianMs: null, minMs: null, gflops: null, gbps: null, runs: 0, skipped: `needs ${missing.join(', ')}` });
    continue;
  }
  let ready: Awaited<ReturnType<typeof c.setup>>;
  try {
    ready = await c.setup();
  } catch (err) {
    // A setup that checks its own results (attention) throws on a mismatch.
    failures.push(`${c.family} ${c.name}: ${(err as Error).message}`);
    results.push({ family: c.family, name: c.name, id: c.id, validated: false, medianMs: null, minMs: null, gflops: null, gbps: null, runs: 0, skipped: 'INVALID' });
    console.error(`INVALID ${c.family} ${c.name}: ${(err as Error).message}`);
    continue;
  }
  if ('skip' in ready) {
    results.push({ family: c.family, name: c.name, id: c.id, medianMs: null, minMs: null, gflops: null, gbps: null, runs: 0, skipped: ready.skip });
    continue;
  }
  const { run, cleanup, validate } = ready;
  const id = ready.id ?? c.id;
  if (!validate && VALIDATED_FAMILIES.has(c.family)) throw new Error(`bench case '${c.family} ${c.name}' has no validate(): every ${c.family} case must be checked before it is timed`);
  const problem = validate ? await validate() : null;
  if (problem) {
    cleanup?.();
    failures.push(problem);
    results.push({ family: c.family, name: c.name, id, validated: false, medianMs: null, minMs: null, gflops: null, gbps: null, runs: 0, skipped: 'INVALID' });
    console.error(`INVALID ${c.family} ${c.name}: ${problem}`);
    continue;
  }
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
    id,
    validated: validate ? true : undefined,
    medianMs: med === null ? null : med * 1e3,
    minMs: times.length ? times[0]! * 1e3 : null,
    gflops: med && c.flops ? c.flops / med / 1e9 : null,
    gbps: med && c.bytes ? c.bytes / med / 1e9 : null,
    runs: times.length,
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
writeFileSync(
  `${file}.tmp`,
  JSON.stringify({ adapter: dev.name, vendor: dev.info.vendor, device: dev.info.device, features: [...dev.features], toggles: dev.toggles, software, reps, date: new Date().toISOString(), results }, null, 2),
);
renameSync(`${file}.tmp`, file);
console.log(`\nwrote ${file}`);
dev.destroy();
if (failures.length) {
  console.error(`${failures.length} case(s) failed validation against the float64 reference:\n${failures.join('\n')}`);
  process.exitCode = 1;
}
