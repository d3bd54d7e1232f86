// The GPU benchmark summary: one JSON per measured card (format in docs/gpu-summary.md),
// assembled from what bench/gpu.ts leaves in its work folder:
//
//   gpu.csv            nvidia-smi: name, driver_version, memory.total (one line, no header); without
//                      it the card is the adapter name the kernel or e2e benchmark reported
//   commit.txt         the git commit measured
//   kernels*.json      bench/run.ts results; figures are found by case id (harness `id`); files are
//                      read in name order and a later file's figure wins
//   e2e-*.json         bench/e2e.ts results, one per `--tag` (bf16, nf4, nf4_gc, ...)
//   smi-<tag>.txt      the most GPU memory (MiB) nvidia-smi showed for that e2e process
//   peer.json, peer-*.json  bench/peer/peer_peft.py (one file per run; their keys are merged)
//   peer_kernels.json  bench/peer/peer_kernels.py
//   llamacpp-decode.json  bench/decode.ts --peer llama.cpp: llama.cpp's batch-1 tok/s beside finllm's
//   decode*.json       decode figures (b1/b8 tokens/s, time to first token) from the decode benchmark
//   steps*.json        bench/gpu.ts: each step's status, exit code and seconds (`session`)
//   tests-report*.json the GPU test tier's vitest JSON reports (`session.tests`: passed, failed, skipped, summed)
//
// Every key of the format is present; a figure that was not measured is null. Where the figures of
// other benchmarks come from is the table SOURCES below: attention (kernel ids
// `attention.<shape>.fwd` / `.fwd_bwd`, median ms) and decode (decode*.json keys) are filled in as
// soon as those benchmarks write them.
//
//   node dist/bench/summary.js --dir <work folder> [--results bench/results/gpu]
// writes <dir>/summary.json and <results>/<card-slug>-<YYYYMMDD>.json.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

export const ATTENTION_SHAPES = ['B8_T512_Hq32_Hkv4_D64', 'B1_T4096_Hq32_Hkv8_D128', 'B8_T512_Hq32_Hkv8_D128'] as const;
export const TRAIN_TAGS = ['bf16', 'nf4', 'nf4_gc'] as const;
export const DECODE_KEYS = ['b1_nf4_tok_s', 'b1_bf16_tok_s', 'b8_nf4_tok_s', 'ttft_512_ms'] as const;

/** Where each finllm kernel figure comes from: kernel-bench case ids (first present wins). */
export const SOURCES = {
  gemm_f16_tflops: ['gemm_f16_4096'],
  gemm_f32_tflops: ['gemm_f32_4096'],
  nf4_gemm_fwd_tflops: ['nf4_gemm_fwd.fp16-mixed', 'nf4_gemm_fwd.fp32'],
  nf4_gemm_dx_tflops: ['nf4_gemm_dx.fp16-mixed', 'nf4_gemm_dx.fp32'],
  f16_gemm_same_shape_tflops: ['f16_gemm_same_shape'],
  /** Attention: `${id}.${shape}.fwd` and `.fwd_bwd` (median ms), registered by the attention bench. */
  attention: 'attention',
} as const;

/** Every kernel-bench case id the summary reads (bench/run.ts --summary-only times just these). */
export function summaryKernelIds(): string[] {
  const ids: string[] = [];
  for (const v of Object.values(SOURCES)) if (typeof v !== 'string') ids.push(...v);
  for (const s of ATTENTION_SHAPES) ids.push(`${SOURCES.attention}.${s}.fwd`, `${SOURCES.attention}.${s}.fwd_bwd`);
  return ids;
}

export interface KernelResult {
  id?: string;
  family?: string;
  name?: string;
  medianMs: number | null;
  gflops: number | null;
  gbps?: number | null;
}

/** One checkpointing mode's training figures of an e2e run. */
export interface E2eMode {
  checkpointing?: string;
  train_tok_s: number;
  peak_mem_gb: number;
  skipped_steps?: number;
}

/** bench/e2e.ts output; the GPU benchmark runs one checkpointing mode per tag (the first is used). */
export interface E2eResult {
  tag?: string | null;
  preset?: string;
  precision?: string;
  modes: E2eMode[];
  decode_tok_s?: number;
  /** The e2e run's decode block: the summary's decode keys for its weights (bench/e2e.ts). */
  decode?: Record<string, number | null>;
}

/** One step of a bench/gpu.ts run, as its steps-*.json records it. */
export interface SessionStep {
  name: string;
  /**
   * ok, failed (exit code ≠ 0), timeout (stopped at its time cap), skipped (`reason`: a dry run's
   * peers, or out of time), stopped (the call ended during it: a TERM), or running (the call was
   * killed during it).
   */
  status: string;
  rc: number | null;
  seconds: number | null;
  cap_s?: number | null;
  reason?: string;
}

export interface SessionRecord {
  mode?: string;
  dry?: boolean;
  budget_s?: number;
  started?: string;
  steps: SessionStep[];
}

export interface SessionInputs {
  /** The nvidia-smi line: "name, driver, memory". */
  gpuCsv?: string;
  /** The WebGPU adapter's name from the benchmarks' results (the card where nvidia-smi is absent). */
  adapter?: string;
  /** bench/gpu.ts's step records, one per run. */
  sessions?: SessionRecord[];
  /** The GPU test tier's counts. */
  tests?: { passed: number; failed: number; skipped: number };
  commit?: string;
  date?: string;
  kernels: KernelResult[];
  e2e: E2eResult[];
  /** Device peak per e2e tag, MiB. */
  smiPeakMiB: Record<string, number>;
  peer?: Record<string, { train_tok_s?: number; peak_mem_gb?: number; decode_tok_s?: number }>;
  peerKernels?: Record<string, unknown>;
  decode?: Record<string, number | null>;
  /** bench/decode.ts --peer llama.cpp: finllm and llama.cpp decoding the same model in one run. */
  llamacpp?: { finllm?: { batch: number; tokS: number }[]; peers?: { build: string; tokS: number }[] };
}

type Num = number | null;
type AttentionFigures = Record<(typeof ATTENTION_SHAPES)[number], { fwd_ms: Num; fwd_bwd_ms: Num }>;

export interface GpuSummary {
  card: string | null;
  driver: string | null;
  date: string;
  commit: string | null;
  peer: {
    train_tok_s: Num;
    peak_gb: Num;
    train_tok_s_gc: Num;
    peak_gb_gc: Num;
    decode_tok_s: Num;
    gemm_f16_tflops: Num;
    gemm_f32_tflops: Num;
    sdpa: AttentionFigures;
    /** llama.cpp (node-llama-cpp) decoding the same GGUF-exported model, batch 1, in the same run. */
    llamacpp_cpu_decode_tok_s: Num;
    llamacpp_vulkan_decode_tok_s: Num;
  };
  finllm: {
    gemm_f16_tflops: Num;
    gemm_f32_tflops: Num;
    nf4_gemm_fwd_tflops: Num;
    nf4_gemm_dx_tflops: Num;
    f16_gemm_same_shape_tflops: Num;
    attention: AttentionFigures;
    train: Record<
      (typeof TRAIN_TAGS)[number],
      { precision: string | null; tok_s: Num; pool_peak_gb: Num; device_peak_gb: Num; skipped_steps: Num }
    >;
    decode: Record<(typeof DECODE_KEYS)[number], Num>;
  };
  /** finllm / peer in the same call (null where either side is missing). */
  ratios: {
    train_bf16: Num;
    train_nf4: Num;
    gemm_f16: Num;
    gemm_f32: Num;
    nf4_fwd_vs_f16: Num;
    nf4_dx_vs_f16: Num;
    decode_vs_llamacpp_vulkan: Num;
  };
  /**
   * How the figures were obtained: each run's steps (status, exit code, seconds), so a
   * null figure reads as "timed out" or "failed" rather than "not measured", and the GPU test tier's
   * counts (null where it did not run).
   */
  session: {
    dry: boolean;
    steps: (SessionStep & { mode: string | null })[];
    tests: { passed: number; failed: number; skipped: number } | null;
  };
}

const num = (v: unknown): Num => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const ratio = (a: Num, b: Num): Num => (a !== null && b !== null && b > 0 ? a / b : null);

function kernelById(kernels: KernelResult[], id: string): KernelResult | undefined {
  // The newest results come last: later files override earlier ones.
  for (let i = kernels.length - 1; i >= 0; i--) if (kernels[i]!.id === id) return kernels[i];
  return undefined;
}

function tflops(kernels: KernelResult[], ids: readonly string[]): Num {
  for (const id of ids) {
    const g = num(kernelById(kernels, id)?.gflops);
    if (g !== null) return g / 1000;
  }
  return null;
}

function attention(kernels: KernelResult[]): AttentionFigures {
  const out = {} as AttentionFigures;
  for (const s of ATTENTION_SHAPES) {
    out[s] = {
      fwd_ms: num(kernelById(kernels, `${SOURCES.attention}.${s}.fwd`)?.medianMs),
      fwd_bwd_ms: num(kernelById(kernels, `${SOURCES.attention}.${s}.fwd_bwd`)?.medianMs),
    };
  }
  return out;
}

function peerSdpa(pk: Record<string, unknown> | undefined): AttentionFigures {
  const out = {} as AttentionFigures;
  for (const s of ATTENTION_SHAPES) {
    const v = pk?.[`sdpa_${s}`] as { fwd_ms?: number; fwd_bwd_ms?: number } | undefined;
    out[s] = { fwd_ms: num(v?.fwd_ms), fwd_bwd_ms: num(v?.fwd_bwd_ms) };
  }
  return out;
}

/** Short name of a card for file names: "NVIDIA H100 80GB HBM3" → "h100". */
export function cardSlug(card: string | null): string {
  if (!card) return 'unknown-gpu';
  const lower = card.toLowerCase();
  const model = /\b([a-z]{1,2}\d{2,4}[a-z]?)\b/.exec(lower.replace(/nvidia|geforce|rtx|tesla/g, ' '));
  return model ? model[1]! : lower.replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'unknown-gpu';
}

export function buildSummary(inp: SessionInputs): GpuSummary {
  const [smiCard, driver] = (inp.gpuCsv ?? '').split(',').map((s) => s.trim());
  const card = smiCard || inp.adapter;
  const k = inp.kernels;
  const byTag = (tag: string) => {
    for (let i = inp.e2e.length - 1; i >= 0; i--) if (inp.e2e[i]!.tag === tag) return inp.e2e[i];
    return undefined;
  };
  const train = {} as GpuSummary['finllm']['train'];
  for (const tag of TRAIN_TAGS) {
    const r = byTag(tag);
    const m = r?.modes?.[0];
    const smi = inp.smiPeakMiB[tag];
    train[tag] = {
      precision: r?.precision ?? null,
      tok_s: num(m?.train_tok_s),
      pool_peak_gb: num(m?.peak_mem_gb),
      device_peak_gb: typeof smi === 'number' && smi > 0 ? (smi * 2 ** 20) / 1e9 : null,
      skipped_steps: num(m?.skipped_steps),
    };
  }
  const decode = {} as GpuSummary['finllm']['decode'];
  for (const key of DECODE_KEYS) decode[key] = num(inp.decode?.[key]);
  // The e2e runs measure decode too (batch 1 and 8, time to first token): used where the decode
  // benchmark did not run.
  for (const key of DECODE_KEYS) for (const r of inp.e2e) decode[key] ??= num(r.decode?.[key]);
  decode.b1_nf4_tok_s ??= num(byTag('nf4')?.decode_tok_s);
  decode.b1_bf16_tok_s ??= num(byTag('bf16')?.decode_tok_s);

  const peerMain = inp.peer?.['tinyllama-1.1b'];
  const peerGc = inp.peer?.['tinyllama-1.1b-gc'];
  const finllm: GpuSummary['finllm'] = {
    gemm_f16_tflops: tflops(k, SOURCES.gemm_f16_tflops),
    gemm_f32_tflops: tflops(k, SOURCES.gemm_f32_tflops),
    nf4_gemm_fwd_tflops: tflops(k, SOURCES.nf4_gemm_fwd_tflops),
    nf4_gemm_dx_tflops: tflops(k, SOURCES.nf4_gemm_dx_tflops),
    f16_gemm_same_shape_tflops: tflops(k, SOURCES.f16_gemm_same_shape_tflops),
    attention: attention(k),
    train,
    decode,
  };
  const peer: GpuSummary['peer'] = {
    train_tok_s: num(peerMain?.train_tok_s),
    peak_gb: num(peerMain?.peak_mem_gb),
    train_tok_s_gc: num(peerGc?.train_tok_s),
    peak_gb_gc: num(peerGc?.peak_mem_gb),
    decode_tok_s: num(peerMain?.decode_tok_s),
    gemm_f16_tflops: num(inp.peerKernels?.['gemm4096_torch.float16']),
    gemm_f32_tflops: num(inp.peerKernels?.['gemm4096_torch.float32']),
    sdpa: peerSdpa(inp.peerKernels),
    llamacpp_cpu_decode_tok_s: num(inp.llamacpp?.peers?.find((p) => p.build === 'cpu')?.tokS),
    llamacpp_vulkan_decode_tok_s: num(inp.llamacpp?.peers?.find((p) => p.build === 'vulkan')?.tokS),
  };
  const oursBeside = num(inp.llamacpp?.finllm?.find((m) => m.batch === 1)?.tokS);
  return {
    card: card || null,
    driver: driver || null,
    // The session's start where the steps record it (a merge of several calls: the first).
    date:
      inp.date ??
      (inp.sessions ?? [])
        .map((r) => r.started)
        .filter((d): d is string => !!d)
        .sort()[0] ??
      new Date().toISOString(),
    commit: inp.commit || null,
    peer,
    finllm,
    ratios: {
      train_bf16: ratio(train.bf16.tok_s, peer.train_tok_s),
      train_nf4: ratio(train.nf4.tok_s, peer.train_tok_s),
      gemm_f16: ratio(finllm.gemm_f16_tflops, peer.gemm_f16_tflops),
      gemm_f32: ratio(finllm.gemm_f32_tflops, peer.gemm_f32_tflops),
      nf4_fwd_vs_f16: ratio(finllm.nf4_gemm_fwd_tflops, finllm.f16_gemm_same_shape_tflops),
      nf4_dx_vs_f16: ratio(finllm.nf4_gemm_dx_tflops, finllm.f16_gemm_same_shape_tflops),
      decode_vs_llamacpp_vulkan: ratio(oursBeside, peer.llamacpp_vulkan_decode_tok_s),
    },
    session: {
      dry: (inp.sessions ?? []).some((r) => r.dry === true),
      steps: (inp.sessions ?? []).flatMap((r) => (r.steps ?? []).map((st) => ({ mode: r.mode ?? null, ...st }))),
      tests: inp.tests ?? null,
    },
  };
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (err) {
    if (existsSync(file)) process.stderr.write(`summary: ignoring unreadable ${file}: ${(err as Error).message}\n`);
    return undefined;
  }
}

/** Reads a bench/gpu.ts work folder (file names in the header). */
export function readSessionDir(dir: string): SessionInputs {
  const files = readdirSync(dir).sort();
  const text = (name: string) =>
    existsSync(join(dir, name)) ? readFileSync(join(dir, name), 'utf8').trim() : undefined;
  const kernels: KernelResult[] = [];
  let adapter: string | undefined;
  for (const f of files.filter((f) => /^kernels.*\.json$/.test(f))) {
    const k = readJson<{ adapter?: string; results?: KernelResult[] }>(join(dir, f));
    kernels.push(...(k?.results ?? []));
    adapter ??= k?.adapter;
  }
  const e2e = files
    .filter((f) => /^e2e.*\.json$/.test(f))
    .map((f) => readJson<E2eResult & { adapter?: string }>(join(dir, f)))
    .filter((r): r is E2eResult & { adapter?: string } => !!r);
  adapter ??= e2e.find((r) => r.adapter)?.adapter;
  const smiPeakMiB: Record<string, number> = {};
  for (const f of files.filter((f) => /^smi-.+\.txt$/.test(f))) {
    const v = Number(readFileSync(join(dir, f), 'utf8').trim());
    if (Number.isFinite(v)) smiPeakMiB[basename(f, '.txt').slice(4)] = v;
  }
  let decode: Record<string, number | null> | undefined;
  for (const f of files.filter((f) => /^decode.*\.json$/.test(f)))
    decode = { ...decode, ...readJson<Record<string, number | null>>(join(dir, f)) };
  let peer: SessionInputs['peer'];
  for (const f of files.filter((f) => /^peer(-[\w.-]+)?\.json$/.test(f))) {
    const p = readJson<NonNullable<SessionInputs['peer']>>(join(dir, f));
    if (p) peer = { ...peer, ...p };
  }
  const sessions = files
    .filter((f) => /^steps.*\.json$/.test(f))
    .map((f) => readJson<SessionRecord>(join(dir, f)))
    .filter((r): r is SessionRecord => !!r && Array.isArray(r.steps));
  let tests: SessionInputs['tests'];
  for (const f of files.filter((f) => /^tests-report.*\.json$/.test(f))) {
    const r = readJson<{
      numPassedTests?: number;
      numFailedTests?: number;
      numPendingTests?: number;
      numTodoTests?: number;
    }>(join(dir, f));
    if (typeof r?.numPassedTests !== 'number') continue;
    tests ??= { passed: 0, failed: 0, skipped: 0 };
    tests.passed += r.numPassedTests;
    tests.failed += r.numFailedTests ?? 0;
    tests.skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  }
  return {
    gpuCsv: text('gpu.csv')?.split('\n')[0],
    ...(adapter ? { adapter } : {}),
    commit: text('commit.txt'),
    kernels,
    e2e,
    smiPeakMiB,
    ...(peer ? { peer } : {}),
    peerKernels: readJson(join(dir, 'peer_kernels.json')),
    llamacpp: readJson(join(dir, 'llamacpp-decode.json')),
    ...(decode ? { decode } : {}),
    ...(sessions.length ? { sessions } : {}),
    ...(tests ? { tests } : {}),
  };
}

function writeJsonAtomic(file: string, value: unknown): void {
  writeFileSync(`${file}.tmp`, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

const fmt = (v: Num, digits = 3): string =>
  v === null ? '-' : Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(digits);

/** A short human-readable digest: the steps, then the figures the issues track, finllm beside the peer. */
export function formatSummary(s: GpuSummary): string {
  const lines: string[] = [];
  const steps = s.session.steps.map(
    (st) =>
      `${st.name} ${st.status}${st.seconds !== null ? ` ${st.seconds}s` : ''}${st.status === 'skipped' && st.reason ? ` (${st.reason})` : ''}`,
  );
  if (steps.length) lines.push(`steps: ${steps.join(' | ')}`);
  lines.push(
    `card: ${s.card ?? '-'}, driver ${s.driver ?? '-'}, commit ${s.commit ?? '-'}, ${s.date}${s.session.dry ? ' (DRY RUN: nothing here is a GPU figure)' : ''}`,
  );
  const t = s.finllm.train;
  lines.push(
    `train tok/s: bf16 ${fmt(t.bf16.tok_s)} (x${fmt(s.ratios.train_bf16)} peer), nf4 ${fmt(t.nf4.tok_s)} (x${fmt(s.ratios.train_nf4)}), nf4_gc ${fmt(t.nf4_gc.tok_s)}; peer ${fmt(s.peer.train_tok_s)}, gc ${fmt(s.peer.train_tok_s_gc)}`,
  );
  lines.push(
    `peak GB: pool bf16 ${fmt(t.bf16.pool_peak_gb)} nf4 ${fmt(t.nf4.pool_peak_gb)} nf4_gc ${fmt(t.nf4_gc.pool_peak_gb)}; device bf16 ${fmt(t.bf16.device_peak_gb)} nf4 ${fmt(t.nf4.device_peak_gb)} nf4_gc ${fmt(t.nf4_gc.device_peak_gb)}; peer ${fmt(s.peer.peak_gb)}, gc ${fmt(s.peer.peak_gb_gc)}`,
  );
  const f = s.finllm;
  lines.push(
    `GEMM TFLOP/s: f16 ${fmt(f.gemm_f16_tflops)} (peer ${fmt(s.peer.gemm_f16_tflops)}), f32 ${fmt(f.gemm_f32_tflops)} (peer ${fmt(s.peer.gemm_f32_tflops)}, x${fmt(s.ratios.gemm_f32)}); nf4 fwd ${fmt(f.nf4_gemm_fwd_tflops)} dx ${fmt(f.nf4_gemm_dx_tflops)} vs f16 ${fmt(f.f16_gemm_same_shape_tflops)} (x${fmt(s.ratios.nf4_fwd_vs_f16)}, x${fmt(s.ratios.nf4_dx_vs_f16)})`,
  );
  for (const shape of ATTENTION_SHAPES) {
    const a = f.attention[shape];
    const p = s.peer.sdpa[shape];
    lines.push(
      `attention ${shape} ms: fwd ${fmt(a.fwd_ms)} (sdpa ${fmt(p.fwd_ms)}), fwd+bwd ${fmt(a.fwd_bwd_ms)} (sdpa ${fmt(p.fwd_bwd_ms)})`,
    );
  }
  const d = f.decode;
  lines.push(
    `decode: b1 nf4 ${fmt(d.b1_nf4_tok_s)} tok/s, b1 bf16 ${fmt(d.b1_bf16_tok_s)}, b8 nf4 ${fmt(d.b8_nf4_tok_s)}, ttft 512 ${fmt(d.ttft_512_ms)} ms; peer b1 ${fmt(s.peer.decode_tok_s)}; llama.cpp vulkan ${fmt(s.peer.llamacpp_vulkan_decode_tok_s)} (x${fmt(s.ratios.decode_vs_llamacpp_vulkan)}), cpu ${fmt(s.peer.llamacpp_cpu_decode_tok_s)}`,
  );
  if (s.session.tests)
    lines.push(
      `GPU test tier: ${s.session.tests.passed} passed, ${s.session.tests.failed} failed, ${s.session.tests.skipped} skipped`,
    );
  return lines.join('\n');
}

/** CLI: reads --dir, writes <dir>/summary.json and <results>/<slug>-<YYYYMMDD>.json; --print also prints the digest. */
export function main(argv: string[]): { file: string; summary: GpuSummary } {
  const arg = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const dir = arg('dir');
  if (!dir || !existsSync(dir))
    throw new Error(
      'usage: summary --dir <bench/gpu.ts work folder> [--results bench/results/gpu] [--date ISO] [--print]',
    );
  const inputs = readSessionDir(dir);
  const date = arg('date');
  if (date) inputs.date = date;
  const summary = buildSummary(inputs);
  writeJsonAtomic(join(dir, 'summary.json'), summary);
  // A dry run's summary (lavapipe, tiny shapes) never goes beside the committed GPU results by default.
  const results = arg('results') ?? (summary.session.dry ? join(dir, 'results') : join('bench', 'results', 'gpu'));
  mkdirSync(results, { recursive: true });
  const file = join(results, `${cardSlug(summary.card)}-${summary.date.slice(0, 10).replace(/-/g, '')}.json`);
  writeJsonAtomic(file, summary);
  return { file, summary };
}

if (process.argv[1] && basename(process.argv[1]) === 'summary.js') {
  try {
    const { file, summary } = main(process.argv.slice(2));
    console.log(`wrote ${file}`);
    if (process.argv.includes('--print')) console.log(formatSummary(summary));
  } catch (err) {
    process.stderr.write(`summary: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
