// `npm run bench [-- --filter matmul] [--reps 20]`: times every registered kernel case on this
// machine's adapter, prints a table and writes bench/results/kernels-<timestamp>.json.
//
//   --filter TEXT      only cases whose "family name" contains TEXT
//   --ids a,b,...      only the cases with these ids (bench/harness.ts `id`, or one of `ids` for a
//                      case whose id is known only on the device, e.g. the attention variant the
//                      model picks: the other variants skip before they prepare anything)
//   --summary-only     only the ids the GPU summary reads (bench/summary.ts summaryKernelIds), so a
//                      GPU session need not time every variant; combines with --ids
//   --json FILE        write the results to FILE instead of bench/results/kernels-<timestamp>.json
//   --reps N           timed runs per case (default 25 on a GPU, 3 on a software adapter)
//
// The JSON is rewritten after every case, so a run stopped part-way (a timeout) keeps what it
// measured; `complete: false` until the last case is done.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { initEngine, tidy } from '../src/engine/tensor.js';
import { type BenchCase, registeredBenches, VALIDATED_FAMILIES } from './harness.js';
import { summaryKernelIds } from './summary.js';
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
  /** Process CPU time per timed run (all threads, lavapipe's included): on a shared CPU less noisy than wall time. */
  cpuMs?: number | null;
  /** GFLOP per CPU-second (software adapters: the kernel's speed on one core's worth of CPU time). */
  gflopsPerCpuS?: number | null;
  runs: number;
  skipped?: string;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const filter = arg('filter');
const idList = [
  ...(arg('ids')?.split(',').filter(Boolean) ?? []),
  ...(process.argv.includes('--summary-only') ? summaryKernelIds() : []),
];
const wanted: ReadonlySet<string> | undefined = idList.length ? new Set(idList) : undefined;
if (wanted) {
  const known = new Set(registeredBenches().flatMap((c) => [c.id, ...(c.ids ?? [])]));
  const unknown = [...wanted].filter((id) => !known.has(id));
  if (unknown.length) {
    console.error(`bench: --ids: no bench case has the id(s) ${unknown.join(', ')}`);
    process.exit(1);
  }
}
const e = await initEngine();
const dev = e.dev;
const software = dev.info.isSoftware;
const reps = Number(arg('reps') ?? (software ? 3 : 25));
const results: Result[] = [];
const failures: string[] = [];
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const file = arg('json') ?? join(process.cwd(), 'bench', 'results', `kernels-${stamp}.json`);
mkdirSync(dirname(file), { recursive: true });
const startedAt = new Date().toISOString();
/** Rewrites the results file (temp file, then rename): after every case, so a stopped run keeps its figures. */
function save(complete: boolean): void {
  const body = {
    adapter: dev.name,
    vendor: dev.info.vendor,
    device: dev.info.device,
    features: [...dev.features],
    subgroupMatrixConfigs: dev.subgroupMatrixConfigs,
    toggles: dev.toggles,
    software,
    reps,
    date: startedAt,
    complete,
    ...(wanted ? { ids: [...wanted] } : {}),
    results,
  };
  writeFileSync(`${file}.tmp`, JSON.stringify(body, null, 2));
  renameSync(`${file}.tmp`, file);
}
const selected = (c: BenchCase) =>
  (!filter || `${c.family} ${c.name}`.includes(filter)) &&
  (!wanted || [c.id, ...(c.ids ?? [])].some((id) => id !== undefined && wanted.has(id)));
console.log(`adapter: ${dev.name}${software ? ' (software renderer: small shapes only)' : ''}`);
console.log(`features: ${[...dev.features].join(', ') || 'none'}`);
console.log(
  `subgroup-matrix configurations: ${dev.subgroupMatrixConfigs.map((c) => `${c.componentType}→${c.resultComponentType} ${c.M}×${c.N}×${c.K}`).join(', ') || 'none'}`,
);
const cases = registeredBenches().filter(selected);
console.log(
  `${cases.length} case(s)${wanted ? ` for ${wanted.size} id(s)` : ''}${filter ? ` matching '${filter}'` : ''}`,
);
for (const c of cases) {
  save(false);
  if (c.gpuOnly && software) {
    results.push({
      family: c.family,
      name: c.name,
      id: c.id,
      medianMs: null,
      minMs: null,
      gflops: null,
      gbps: null,
      runs: 0,
      skipped: 'software adapter',
    });
    continue;
  }
  const missing = (c.needs ?? []).filter((f) => !dev.has(f));
  if (missing.length) {
    results.push({
      family: c.family,
      name: c.name,
      id: c.id,
      medianMs: null,
      minMs: null,
      gflops: null,
      gbps: null,
      runs: 0,
      skipped: `needs ${missing.join(', ')}`,
    });
    continue;
  }
  console.log(`- ${c.family} ${c.name}`); // progress: the log shows which case a stopped run was in
  let ready: Awaited<ReturnType<typeof c.setup>>;
  try {
    ready = await c.setup(wanted ? { wanted } : {});
  } catch (err) {
    // A setup that checks its own results (attention) throws on a mismatch.
    failures.push(`${c.family} ${c.name}: ${(err as Error).message}`);
    results.push({
      family: c.family,
      name: c.name,
      id: c.id,
      validated: false,
      medianMs: null,
      minMs: null,
      gflops: null,
      gbps: null,
      runs: 0,
      skipped: 'INVALID',
    });
    console.error(`INVALID ${c.family} ${c.name}: ${(err as Error).message}`);
    continue;
  }
  if ('skip' in ready) {
    results.push({
      family: c.family,
      name: c.name,
      id: c.id,
      medianMs: null,
      minMs: null,
      gflops: null,
      gbps: null,
      runs: 0,
      skipped: ready.skip,
    });
    continue;
  }
  const { run, cleanup, validate } = ready;
  const id = ready.id ?? c.id;
  if (wanted && !(id !== undefined && wanted.has(id))) {
    cleanup?.();
    results.push({
      family: c.family,
      name: c.name,
      id,
      medianMs: null,
      minMs: null,
      gflops: null,
      gbps: null,
      runs: 0,
      skipped: 'id not asked for',
    });
    continue;
  }
  if (!validate && VALIDATED_FAMILIES.has(c.family))
    throw new Error(
      `bench case '${c.family} ${c.name}' has no validate(): every ${c.family} case must be checked before it is timed`,
    );
  const problem = validate ? await validate() : null;
  if (problem) {
    cleanup?.();
    failures.push(problem);
    results.push({
      family: c.family,
      name: c.name,
      id,
      validated: false,
      medianMs: null,
      minMs: null,
      gflops: null,
      gbps: null,
      runs: 0,
      skipped: 'INVALID',
    });
    console.error(`INVALID ${c.family} ${c.name}: ${problem}`);
    continue;
  }
  const times: number[] = [];
  for (let i = 0; i < 2; i++) await dev.timeGpu(() => tidy(run)); // warm-up: compile, caches
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) {
    const t = await dev.timeGpu(() => tidy(run));
    if (t !== null) times.push(t);
  }
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / reps;
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
    cpuMs,
    gflopsPerCpuS: c.flops ? c.flops / (cpuMs / 1000) / 1e9 : null,
    runs: times.length,
  });
}

const fmt = (v: number | null, d = 3) => (v === null ? '-' : v >= 100 ? v.toFixed(0) : v.toPrecision(d));
const rows = results.map((r) => [
  r.family,
  r.name,
  r.skipped ?? fmt(r.medianMs),
  fmt(r.minMs),
  fmt(r.gflops),
  fmt(r.gbps),
  fmt(r.cpuMs ?? null),
  fmt(r.gflopsPerCpuS ?? null),
]);
const header = ['family', 'case', 'median ms', 'min ms', 'GFLOP/s', 'GB/s', 'CPU ms', 'GFLOP/CPU-s'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const r of rows) console.log(line(r));

save(true);
console.log(`\nwrote ${file}`);
dev.destroy();
if (failures.length) {
  console.error(`${failures.length} case(s) failed validation against the float64 reference:\n${failures.join('\n')}`);
  process.exitCode = 1;
}
