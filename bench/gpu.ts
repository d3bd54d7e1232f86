// The GPU benchmark: finllm and the PyTorch peers side by side on one card, within a time budget,
// ending in one summary JSON (format: docs/gpu-summary.md).
//
//   node dist/bench/gpu.js [--budget S] [--only STEP|GROUP,...] [--out DIR] [--work DIR] [--dry] [--list]
//   node dist/bench/gpu.js merge DIR...      one summary from the raw.tgz archives found under DIR...
//   (npm run bench:gpu -- ... builds first)
//
// Steps run in the order of what matters most: the kernel cases the summary reads, the four
// end-to-end training runs at TinyLlama-1.1B shapes with the HF + PEFT peer right after the first,
// the torch kernel peer, then the GPU test tier and every kernel variant with the time left. Groups
// `measure` and `tests` name the two halves for --only. Each step runs under its own cap, cut to what
// is left of the budget; a step with under MIN_STEP_S left is skipped, and `kernels_all` is best
// effort. After every step, and at any end (SIGTERM included), OUT holds a consistent record:
// steps.json (each step's status: ok, failed, timeout, skipped with a reason, stopped), summary.json
// (bench/summary.ts over everything in the work folder), raw.tgz (the raw results) and gpu.log.
// The work folder keeps the raw results across runs, so a later run with --only (a rerun of a step
// that failed) adds to the same summary. --dry runs every step with tiny shapes on whatever adapter
// there is (lavapipe here), without the peers: it checks the plumbing and measures nothing.
//
// The commit measured: git where the tree is a checkout, else $FINLLM_COMMIT. The card: nvidia-smi
// where present (it is also polled during each e2e run for the device's peak memory), else the
// adapter the benchmarks report.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { randomModelDir } from './random-model.js';
import { buildSummary, formatSummary, readSessionDir, type SessionStep, main as summaryMain } from './summary.js';

export interface Limits {
  /** A step given less than this is skipped: its figures would be cut short anyway. */
  minStepS: number;
  /** Seconds kept back at the end for the last summary and archive. */
  reserveS: number;
  /** A step past its cap gets SIGTERM, then SIGKILL this much later. */
  graceS: number;
}
export const LIMITS: Limits = { minStepS: 20, reserveS: 15, graceS: 10 };

export type Group = 'measure' | 'tests';

export interface Step {
  name: string;
  group: Group;
  /** Seconds the step may run at most (cut to the budget left). */
  cap: number;
  command: string[];
  /** Runs beside the next steps (CPU work); the e2e steps wait for it. */
  background?: boolean;
  /** A timeout or lack of time does not fail the run. */
  bestEffort?: boolean;
  /** Skipped with this reason instead of run. */
  skip?: string;
  /** Loads the random checkpoint the background `model` step draws: waits for it. */
  needsModel?: boolean;
  /** e2e runs: the tag whose device peak nvidia-smi is polled for. */
  e2eTag?: string;
  /** The file the step leaves in its own folder, moved into the work folder afterwards. */
  moveOut?: { from: string; to: string };
}

export interface PlanOptions {
  dry: boolean;
  work: string;
  python: string;
}

/** Every step, in the order they run. */
export function plan(o: PlanOptions): Step[] {
  const model = o.dry ? ['--preset', 'tiny', '--vocab', '600'] : ['--preset', '1.1b', '--vocab', '32000'];
  const run = o.dry
    ? ['--batch', '2', '--seq', '32', '--steps', '2', '--new-tokens', '8', '--ttft-prompt', '32']
    : ['--batch', '8', '--seq', '512', '--steps', '10', '--new-tokens', '128', '--ttft-prompt', '512'];
  const cache = `${o.work}-model-cache`;
  const node = process.execPath;
  const e2e = (tag: string, cap: number, ...flags: string[]): Step => ({
    name: `e2e_${tag}`,
    group: 'measure',
    cap,
    e2eTag: tag,
    needsModel: true,
    command: [
      node,
      'dist/bench/e2e.js',
      ...model,
      ...run,
      '--model-cache',
      cache,
      '--tag',
      tag,
      '--out',
      o.work,
      ...flags,
    ],
  });
  const python = (name: string, group: Group, cap: number, ...args: string[]): Step => ({
    name,
    group,
    cap,
    command: ['env', 'PYTHONUNBUFFERED=1', o.python, ...args],
    ...(o.dry ? { skip: 'dry run: the peers need CUDA torch' } : {}),
  });
  const peer = (name: string, gc: 0 | 1): Step => ({
    ...python(
      name,
      'measure',
      150,
      'bench/peer/peer_peft.py',
      'tinyllama-1.1b',
      join(o.work, `peer-run-${name}`),
      String(gc),
    ),
    moveOut: {
      from: join(o.work, `peer-run-${name}`, 'peer.json'),
      to: join(o.work, gc ? 'peer-gc.json' : 'peer.json'),
    },
  });
  const preset = o.dry ? 'tiny' : '1.1b';
  const llamacpp = existsSync('tests/llamacpp/node_modules/node-llama-cpp/package.json');
  const vitest = [node, 'node_modules/vitest/vitest.mjs', 'run', '--reporter=default', '--reporter=json'];
  const tier = o.dry
    ? ['tests/kernels/swiglu.test.ts']
    : ['tests/kernels', 'tests/llama', 'tests/pipeline/train/precision.test.ts'];
  return [
    {
      name: 'model',
      group: 'measure',
      cap: 240,
      background: true,
      command: [node, 'dist/bench/random-model.js', '--cache', cache, ...model],
    },
    {
      name: 'kernels',
      group: 'measure',
      cap: 150,
      command: [
        node,
        'dist/bench/run.js',
        '--summary-only',
        ...(o.dry
          ? [
              '--ids',
              'gemm_f32_256,gemm_f16_256,attention.B1_T64_Hq4_Hkv2_D16.fwd,attention.B1_T64_Hq4_Hkv2_D16.fwd_bwd',
              '--reps',
              '2',
            ]
          : []),
        '--json',
        join(o.work, 'kernels-summary.json'),
      ],
    },
    e2e('bf16', 150, '--storage', 'bf16', '--precision', 'fp16-mixed', '--checkpointing', 'none'),
    peer('peer', 0),
    e2e('nf4', 150, '--quantize', 'nf4', '--precision', 'fp16-mixed', '--checkpointing', 'none'),
    python('peer_kernels', 'measure', 90, 'bench/peer/peer_kernels.py', o.work),
    e2e('nf4_gc', 150, '--quantize', 'nf4', '--precision', 'fp16-mixed', '--checkpointing', 'full', '--skip-decode'),
    peer('peer_gc', 1),
    e2e('bf16_fp32', 150, '--storage', 'bf16', '--precision', 'fp32', '--checkpointing', 'none', '--skip-decode'),
    // llama.cpp decoding the same (GGUF-exported) checkpoint beside finllm: a same-card decode peer.
    {
      name: 'decode_llamacpp',
      group: 'measure',
      cap: 150,
      needsModel: true,
      command: [
        node,
        'dist/bench/decode.js',
        '--model',
        randomModelDir(cache, preset, { vocabSize: o.dry ? 600 : 32000 }),
        '--storage',
        'bf16',
        '--batch',
        '1',
        '--prompt',
        '64',
        '--new-tokens',
        o.dry ? '8' : '128',
        '--ttft-prompt',
        '0',
        '--peer',
        'llama.cpp',
        '--peer-threads',
        '4',
        '--json',
        join(o.work, 'llamacpp-decode.json'),
      ],
      ...(llamacpp ? {} : { skip: 'llama.cpp is not installed (tests/llamacpp: npm ci --omit=optional there)' }),
    },
    // PyTorch's full fine-tuning trajectory on the reference fixtures, for tests/pipeline/train/full-trajectory.test.ts.
    python(
      'full_ft_golden',
      'tests',
      60,
      'tests/fixtures/reference/make_full_ft_reference.py',
      'tests/fixtures/reference',
      join(o.work, 'full-ft'),
    ),
    // The GPU test tier, with the GEMM variant matrix (its largest file) in a step of its own.
    {
      name: 'tests',
      group: 'tests',
      cap: 120,
      command: [
        'env',
        'FINLLM_TEST_TIER=gpu',
        ...vitest,
        `--outputFile.json=${join(o.work, 'tests-report.json')}`,
        ...tier,
        '--exclude',
        'tests/kernels/gemm.test.ts',
      ],
    },
    {
      name: 'tests_gemm',
      group: 'tests',
      cap: 120,
      command: [
        'env',
        'FINLLM_TEST_TIER=gpu',
        ...vitest,
        `--outputFile.json=${join(o.work, 'tests-report-gemm.json')}`,
        'tests/kernels/gemm.test.ts',
        ...(o.dry ? ['-t', 'the variant choice'] : []),
      ],
    },
    {
      name: 'kernels_all',
      group: 'tests',
      cap: 600,
      bestEffort: true,
      command: [
        node,
        'dist/bench/run.js',
        ...(o.dry ? ['--filter', 'elementwise', '--reps', '2'] : []),
        '--json',
        join(o.work, 'kernels-all.json'),
      ],
    },
  ];
}

/** Keeps the steps --only names (step names or groups); an unknown name is an error. */
export function select(steps: Step[], only: string | undefined): Step[] {
  if (!only) return steps;
  const names = only
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const known = new Set<string>([...steps.map((s) => s.name), 'measure', 'tests']);
  const unknown = names.filter((n) => !known.has(n));
  if (unknown.length)
    throw new UsageError(
      `--only: no step or group named ${unknown.join(', ')} (steps: ${steps.map((s) => s.name).join(', ')}; groups: measure, tests)`,
    );
  const picked = steps.filter((s) => names.includes(s.name) || names.includes(s.group));
  // An e2e run needs the model step's checkpoint: keep it (it is a no-op when the cache holds it).
  if (picked.some((s) => s.needsModel) && !picked.some((s) => s.name === 'model'))
    picked.unshift(steps.find((s) => s.name === 'model')!);
  return picked;
}

export class UsageError extends Error {}

export interface Options extends PlanOptions {
  budget: number;
  only?: string;
  out: string;
  list: boolean;
  /** Write progress to gpu.log only, not to stdout. */
  quiet?: boolean;
}

export function parseArgs(argv: string[]): Options {
  const o: Options = {
    dry: false,
    list: false,
    budget: 700,
    out: resolve('gpu-results'),
    work: '/tmp/finllm-gpu',
    python: process.env.PYTHON ?? 'python3',
  };
  let outSet = false;
  let workSet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a}: a value is expected`);
      return v;
    };
    if (a === '--dry') o.dry = true;
    else if (a === '--list') o.list = true;
    else if (a === '--only') o.only = value();
    else if (a === '--out') {
      o.out = resolve(value());
      outSet = true;
    } else if (a === '--work') {
      o.work = resolve(value());
      workSet = true;
    } else if (a === '--budget') {
      const v = value();
      if (!/^\d+$/.test(v) || Number(v) <= 0) throw new UsageError(`--budget: expected whole seconds, got '${v}'`);
      o.budget = Number(v);
    } else
      throw new UsageError(
        `unknown argument '${a}' (usage: bench/gpu.js [--budget S] [--only STEP|GROUP,...] [--out DIR] [--work DIR] [--dry] [--list] | merge DIR...)`,
      );
  }
  // A dry run never mixes with a real run's folders.
  if (o.dry && !outSet) o.out = mkdtempSync(join(tmpdir(), 'finllm-gpu-dry-'));
  if (o.dry && !workSet) o.work = mkdtempSync(join(tmpdir(), 'finllm-gpu-dry-work-'));
  return o;
}

interface Record_ extends SessionStep {
  cap_s: number | null;
}

/** Runs the steps within the budget; returns the exit code (0: every step ok or skipped as planned). */
export async function runSteps(
  o: Options,
  steps: Step[] = select(plan(o), o.only),
  limits: Limits = LIMITS,
): Promise<number> {
  const { minStepS: MIN_STEP_S, reserveS: RESERVE_S, graceS: GRACE_S } = limits;
  mkdirSync(o.out, { recursive: true });
  mkdirSync(o.work, { recursive: true });
  const t0 = Date.now();
  const elapsed = () => Math.round((Date.now() - t0) / 1000);
  const started = new Date().toISOString();
  const stamp = started.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const log = join(o.out, 'gpu.log');
  const say = (line: string) => {
    if (!o.quiet) process.stdout.write(`${line}\n`);
    appendFileSync(log, `${line}\n`);
  };
  const records: Record_[] = [];
  const record = (r: Record_) => {
    const i = records.findIndex((x) => x.name === r.name);
    if (i >= 0) records[i] = r;
    else records.push(r);
  };
  let failed = false;

  const refresh = () => {
    const steps = { mode: o.only ?? 'all', dry: o.dry, budget_s: o.budget, started, steps: records };
    writeAtomic(join(o.work, `steps-${stamp}.json`), JSON.stringify(steps, null, 1));
    writeAtomic(join(o.out, 'steps.json'), JSON.stringify(steps, null, 1));
    try {
      writeAtomic(
        join(o.out, 'summary.json'),
        `${JSON.stringify(buildSummary({ ...readSessionDir(o.work), date: started }), null, 2)}\n`,
      );
    } catch (err) {
      say(`summary: ${(err as Error).message}`);
    }
    const tar = spawnSync('tar', ['-czf', join(o.out, 'raw.tgz.tmp'), '-C', o.work, '.']);
    if (tar.status === 0) renameSync(join(o.out, 'raw.tgz.tmp'), join(o.out, 'raw.tgz'));
  };

  // The card and the commit, once.
  const smi = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], {
    encoding: 'utf8',
  });
  if (!o.dry && smi.status === 0 && smi.stdout.trim())
    writeAtomic(join(o.work, 'gpu.csv'), `${smi.stdout.trim().split('\n')[0]}\n`);
  const git = spawnSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8' });
  const dirty = git.status === 0 && spawnSync('git', ['diff', '--quiet', 'HEAD', '--']).status !== 0;
  writeAtomic(
    join(o.work, 'commit.txt'),
    `${git.status === 0 ? `${git.stdout.trim()}${dirty ? '-dirty' : ''}` : (process.env.FINLLM_COMMIT ?? 'unknown')}\n`,
  );
  say(`=== bench/gpu.js${o.dry ? ' --dry' : ''}: budget ${o.budget}s, ${started}; out ${o.out}, work ${o.work}`);
  refresh();

  const running = new Map<string, { child: ChildProcess; t0: number; cap: number; done: Promise<void> }>();
  const allowance = (cap: number) => {
    const left = o.budget - elapsed() - RESERVE_S - GRACE_S;
    const t = Math.min(cap, left);
    return t < MIN_STEP_S ? 0 : t;
  };

  const launch = (s: Step, t: number): Promise<void> => {
    const s0 = Date.now();
    record({ name: s.name, status: 'running', rc: null, seconds: null, cap_s: t });
    refresh();
    say(
      `=== ${s.name}: cap ${t}s, at ${elapsed()}s of ${o.budget}s${s.background ? ', in the background' : ''}: ${s.command.join(' ')}`,
    );
    const child = spawn(s.command[0]!, s.command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const tee = (chunk: Buffer) => {
      if (!o.quiet) process.stdout.write(chunk);
      appendFileSync(log, chunk);
    };
    child.stdout!.on('data', tee);
    child.stderr!.on('data', tee);
    let timedOut = false;
    const kill = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), GRACE_S * 1000).unref();
    }, t * 1000);
    const poll = s.e2eTag && !o.dry ? pollDevicePeak(join(o.work, `smi-${s.e2eTag}.txt`)) : null;
    const done = new Promise<void>((res) => {
      child.on('error', (err) => say(`${s.name}: ${err.message}`));
      child.on('close', (code, signal) => {
        clearTimeout(kill);
        poll?.stop();
        running.delete(s.name);
        const rc = code ?? (signal === 'SIGKILL' ? 137 : 143);
        const status = rc === 0 ? 'ok' : timedOut ? 'timeout' : 'failed';
        if (status !== 'ok' && !(status === 'timeout' && s.bestEffort)) failed = true;
        if (s.moveOut && existsSync(s.moveOut.from)) renameSync(s.moveOut.from, s.moveOut.to);
        const seconds = Math.round((Date.now() - s0) / 1000);
        record({ name: s.name, status, rc, seconds, cap_s: t });
        say(`=== ${s.name}: ${status} (exit ${rc}) in ${seconds}s`);
        refresh();
        res();
      });
    });
    running.set(s.name, { child, t0: s0, cap: t, done });
    return done;
  };

  const finish = (signal?: NodeJS.Signals) => {
    for (const [name, r] of running) {
      r.child.kill('SIGTERM');
      record({
        name,
        status: 'stopped',
        rc: null,
        seconds: Math.round((Date.now() - r.t0) / 1000),
        cap_s: r.cap,
        reason: 'the run ended during this step',
      });
      failed = true;
    }
    refresh();
    say(
      `=== bench/gpu.js done in ${elapsed()}s of ${o.budget}s${signal ? ` (${signal})` : ''}; results in ${o.out}: ${readdirSync(o.out).join(', ')}`,
    );
    say(formatSummary(buildSummary({ ...readSessionDir(o.work), date: started })));
  };
  const onSignal = (signal: NodeJS.Signals) => {
    finish(signal);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);

  for (const s of steps) {
    if (s.skip) {
      record({ name: s.name, status: 'skipped', rc: null, seconds: 0, cap_s: s.cap, reason: s.skip });
      say(`=== ${s.name}: skipped (${s.skip})`);
      refresh();
      continue;
    }
    if (s.needsModel) await running.get('model')?.done;
    const t = allowance(s.cap);
    if (t === 0) {
      if (!s.bestEffort) failed = true;
      const reason = `out of time: ${o.budget - elapsed() - RESERVE_S - GRACE_S}s left for steps of the budget's ${o.budget}s, under ${MIN_STEP_S}`;
      record({ name: s.name, status: 'skipped', rc: null, seconds: 0, cap_s: s.cap, reason });
      say(`=== ${s.name}: skipped (${reason})`);
      refresh();
      continue;
    }
    const done = launch(s, t);
    if (!s.background) await done;
  }
  await Promise.all([...running.values()].map((r) => r.done));
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  finish();
  return failed ? 1 : 0;
}

/**
 * Polls nvidia-smi until stopped; writes the most device memory (MiB) seen into `file`: the card's
 * compute processes, or, where the container hides them, the growth of the card's used memory since
 * the start. Writes nothing where nvidia-smi sees nothing.
 */
function pollDevicePeak(file: string): { stop: () => void } {
  const query = (q: string) =>
    spawnSync('nvidia-smi', [`--query-${q}`, '--format=csv,noheader,nounits'], { encoding: 'utf8' });
  const used = () => Number(query('gpu=memory.used').stdout?.split('\n')[0]);
  const base = used();
  if (!Number.isFinite(base)) return { stop: () => {} };
  let max = 0;
  const timer = setInterval(() => {
    const apps = (query('compute-apps=used_memory').stdout ?? '')
      .split('\n')
      .reduce((s, l) => s + Math.max(Number(l) || 0, 0), 0);
    const v = apps > 0 ? apps : used() - base;
    if (Number.isFinite(v) && v > max) {
      max = v;
      writeAtomic(file, `${max}\n`);
    }
  }, 250);
  return { stop: () => clearInterval(timer) };
}

function writeAtomic(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

/** One summary from the raw.tgz archives under the folders (runs fetched from elsewhere). */
export function merge(dirs: string[]): { folder: string; file: string } {
  if (!dirs.length) throw new UsageError("merge: name the folder(s) holding the runs' raw.tgz");
  for (const d of dirs) if (!existsSync(d)) throw new UsageError(`merge: '${d}' is not a folder`);
  const find = spawnSync('find', [...dirs, '-name', 'raw*.tgz'], { encoding: 'utf8' });
  const raws = find.stdout.split('\n').filter(Boolean).sort();
  if (!raws.length) throw new UsageError(`merge: no raw*.tgz under ${dirs.join(' ')}`);
  const folder = mkdtempSync(join(tmpdir(), 'finllm-gpu-merged-'));
  for (const r of raws)
    if (spawnSync('tar', ['-xzf', r, '-C', folder]).status !== 0) throw new Error(`merge: cannot unpack ${r}`);
  rmSync(join(folder, 'summary.json'), { force: true });
  const { file, summary } = summaryMain(['--dir', folder]);
  console.log(formatSummary(summary));
  return { folder, file };
}

if (process.argv[1] && basename(process.argv[1]) === 'gpu.js') {
  const argv = process.argv.slice(2);
  try {
    if (argv[0] === 'merge') {
      const { folder, file } = merge(argv.slice(1));
      console.log(`wrote ${file}\nmerged raw results: ${folder}`);
    } else {
      const o = parseArgs(argv);
      if (o.list) {
        console.log(
          `bench/gpu.js${o.dry ? ' --dry' : ''}: budget ${o.budget}s (steps stop ${LIMITS.reserveS}s before it)`,
        );
        for (const s of select(plan(o), o.only))
          console.log(
            `${s.name.padEnd(14)} ${s.skip ? `skipped: ${s.skip}` : `cap ${String(s.cap).padStart(4)}s  ${s.command.join(' ')}${s.background ? '   (in the background)' : ''}`}`,
          );
      } else process.exitCode = await runSteps(o);
    }
  } catch (err) {
    process.stderr.write(`bench/gpu.js: ${(err as Error).message}\n`);
    process.exit(err instanceof UsageError ? 1 : 2);
  }
}
