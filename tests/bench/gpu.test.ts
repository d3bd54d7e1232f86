// bench/gpu.ts without a GPU: the plan puts the figures the summary needs first and produces every
// e2e tag it reads; --only, --dry and bad arguments; the runner's record of ok, failed, timed-out,
// out-of-time and skipped steps, with the summary and archive rewritten; `merge` of fetched runs.
// (The whole run with tiny shapes on lavapipe, `node dist/bench/gpu.js --dry`, takes ~1-2 min: not
// part of CI.)

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Options, parseArgs, plan, runSteps, type Step, select } from '../../bench/gpu.js';
import { type GpuSummary, TRAIN_TAGS } from '../../bench/summary.js';

const SCRIPT = join(process.cwd(), 'dist/bench/gpu.js');
const base = { dry: false, work: '/tmp/w', python: 'python3' };

describe('bench/gpu.ts plan', () => {
  it('the kernel ids and the e2e runs beside the peer first, every e2e tag the summary reads, the test tier after', () => {
    const steps = plan(base);
    const names = steps.map((s) => s.name);
    expect(names).toEqual([
      'model',
      'kernels',
      'e2e_bf16',
      'peer',
      'e2e_nf4',
      'peer_kernels',
      'e2e_nf4_gc',
      'peer_gc',
      'e2e_bf16_fp32',
      'decode_llamacpp',
      'full_ft_golden',
      'tests',
      'tests_gemm',
      'kernels_all',
    ]);
    expect(names.indexOf('peer')).toBe(names.indexOf('e2e_bf16') + 1); // the train_bf16 ratio needs both
    const cmd = (n: string) => steps.find((s) => s.name === n)!.command.join(' ');
    expect(cmd('kernels')).toContain('--summary-only');
    for (const tag of TRAIN_TAGS) expect(cmd(`e2e_${tag}`), tag).toContain(`--tag ${tag}`);
    for (const s of steps.filter((s) => s.e2eTag))
      expect(s.command.join(' ')).toMatch(/--preset 1\.1b --vocab 32000 --batch 8 --seq 512/);
    for (const s of steps.filter((s) => s.name.startsWith('peer') || s.name === 'full_ft_golden')) {
      const script = s.command.find((a) => a.endsWith('.py'));
      expect(script && existsSync(script), s.command.join(' ')).toBe(true);
    }
    expect(cmd('tests')).toContain('FINLLM_TEST_TIER=gpu');
    expect(steps.find((s) => s.name === 'model')!.background).toBe(true);
    expect(steps.filter((s) => s.bestEffort).map((s) => s.name)).toEqual(['kernels_all']);
    // llama.cpp decodes the very checkpoint the model step draws, beside finllm.
    const decode = steps.find((s) => s.name === 'decode_llamacpp')!;
    expect(decode.command.join(' ')).toContain('--peer llama.cpp');
    expect(decode.command[decode.command.indexOf('--model') + 1]).toMatch(/^\/tmp\/w-model-cache\/1\.1b-[0-9a-f]{12}$/);
    expect(decode.needsModel).toBe(true);
  });

  it('--only keeps steps or groups (and the model an e2e run needs); --dry uses tiny shapes and skips the peers; bad arguments are refused', () => {
    expect(select(plan(base), 'e2e_nf4,peer_gc').map((s) => s.name)).toEqual(['model', 'e2e_nf4', 'peer_gc']);
    expect(select(plan(base), 'tests').map((s) => s.name)).toEqual([
      'full_ft_golden',
      'tests',
      'tests_gemm',
      'kernels_all',
    ]);
    expect(() => select(plan(base), 'e2e_nf4,nope')).toThrow(/--only: no step or group named nope/);
    const dry = plan({ ...base, dry: true });
    expect(dry.find((s) => s.name === 'peer')!.skip).toMatch(/dry run/);
    expect(dry.find((s) => s.name === 'e2e_bf16')!.command.join(' ')).toContain('--preset tiny');
    expect(() => parseArgs(['--bogus'])).toThrow("unknown argument '--bogus'");
    expect(() => parseArgs(['--budget', 'soon'])).toThrow('--budget: expected whole seconds');
    const r = spawnSync(process.execPath, [SCRIPT, '--budget', 'soon'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe("bench/gpu.js: --budget: expected whole seconds, got 'soon'");
  });
});

describe('bench/gpu.ts runner', () => {
  /** Quiet dry-run options with `budget` seconds, working and writing under a fresh temp folder `root`. */
  const dryRun = (budget: number): { root: string; o: Options } => {
    const root = mkdtempSync(join(tmpdir(), 'finllm-gpu-run-'));
    return {
      root,
      o: { ...base, dry: true, work: join(root, 'work'), out: join(root, 'out'), budget, list: false, quiet: true },
    };
  };

  it('records each step (ok, failed, timeout, skipped), keeps a best-effort timeout from failing, rewrites the summary and archive', async () => {
    const { root, o } = dryRun(120);
    const node = (js: string): string[] => [process.execPath, '-e', js];
    const steps: Step[] = [
      {
        name: 'writes',
        group: 'measure',
        cap: 5,
        command: node(
          `require('fs').writeFileSync(${JSON.stringify(join(o.work, 'e2e-bf16-x.json'))}, JSON.stringify({ tag: 'bf16', modes: [{ train_tok_s: 123, peak_mem_gb: 1 }] }))`,
        ),
      },
      { name: 'fails', group: 'measure', cap: 5, command: node('process.exit(3)') },
      { name: 'peer', group: 'measure', cap: 5, command: ['false'], skip: 'dry run: the peers need CUDA torch' },
      { name: 'slow', group: 'tests', cap: 1, bestEffort: true, command: node('setTimeout(() => {}, 60000)') },
    ];
    // Tiny limits: a step needs 1 s, 1 s kept back; the budget leaves every step its cap.
    const rc = await runSteps(o, steps, { minStepS: 1, reserveS: 1, graceS: 1 });
    expect(rc, 'a failed step fails the run').toBe(1);
    const rec = JSON.parse(readFileSync(join(o.out, 'steps.json'), 'utf8')) as {
      steps: { name: string; status: string; rc: number | null; reason?: string }[];
    };
    const by = Object.fromEntries(rec.steps.map((s) => [s.name, s]));
    expect(by.writes!.status).toBe('ok');
    expect(by.fails).toMatchObject({ status: 'failed', rc: 3 });
    expect(by.peer).toMatchObject({ status: 'skipped', reason: 'dry run: the peers need CUDA torch' });
    expect(by.slow!.status).toBe('timeout');
    const summary = JSON.parse(readFileSync(join(o.out, 'summary.json'), 'utf8')) as GpuSummary;
    expect(summary.finllm.train.bf16.tok_s).toBe(123);
    expect(summary.session.steps.map((s) => s.name)).toEqual(['writes', 'fails', 'peer', 'slow']);
    expect(readdirSync(o.out).sort()).toEqual(['gpu.log', 'raw.tgz', 'steps.json', 'summary.json']);
    rmSync(root, { recursive: true, force: true });
  }, 60_000);

  it('skips a step for which the budget leaves too little time, and says so', async () => {
    const { root, o } = dryRun(30);
    const rc = await runSteps(o, [{ name: 'big', group: 'measure', cap: 60, command: ['true'] }], {
      minStepS: 20,
      reserveS: 15,
      graceS: 10,
    });
    expect(rc).toBe(1);
    const rec = JSON.parse(readFileSync(join(o.out, 'steps.json'), 'utf8')) as {
      steps: { status: string; reason?: string }[];
    };
    expect(rec.steps[0]).toMatchObject({ status: 'skipped' });
    expect(rec.steps[0]!.reason).toMatch(/^out of time: [0-5]s left for steps of the budget's 30s, under 20$/);
    rmSync(root, { recursive: true, force: true });
  });

  it('merge builds one summary from the raw archives of several runs', () => {
    const root = mkdtempSync(join(tmpdir(), 'finllm-gpu-merge-'));
    const run = (n: number, files: Record<string, unknown>) => {
      const raw = join(root, `raw${n}`);
      mkdirSync(raw);
      for (const [name, v] of Object.entries(files)) writeFileSync(join(raw, name), JSON.stringify(v));
      const dir = join(root, 'fetched', String(n));
      mkdirSync(dir, { recursive: true });
      expect(spawnSync('tar', ['-czf', join(dir, 'raw.tgz'), '-C', raw, '.']).status).toBe(0);
    };
    // dry: true, so the merged summary is written beside the merged files, not into bench/results/gpu.
    run(1, {
      'steps-20261128T100000Z.json': {
        mode: 'measure',
        dry: true,
        started: '2026-11-28T10:00:00Z',
        steps: [{ name: 'e2e_bf16', status: 'ok', rc: 0, seconds: 50 }],
      },
      'e2e-bf16-x.json': {
        tag: 'bf16',
        precision: 'fp16-mixed',
        modes: [{ checkpointing: 'none', train_tok_s: 123, peak_mem_gb: 1 }],
      },
    });
    run(2, {
      'steps-20261128T101000Z.json': {
        mode: 'tests',
        dry: true,
        started: '2026-11-28T10:10:00Z',
        steps: [{ name: 'tests', status: 'ok', rc: 0, seconds: 80 }],
      },
      'tests-report.json': { numPassedTests: 7, numFailedTests: 0, numPendingTests: 1, numTodoTests: 0 },
    });
    const r = spawnSync(process.execPath, [SCRIPT, 'merge', join(root, 'fetched')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('steps: e2e_bf16 ok 50s | tests ok 80s');
    const merged = /merged raw results: (\S+)/.exec(r.stdout)?.[1];
    expect(merged).toBeTruthy();
    const s = JSON.parse(readFileSync(join(merged!, 'summary.json'), 'utf8')) as GpuSummary;
    expect(s.finllm.train.bf16.tok_s).toBe(123);
    expect(s.session.tests).toEqual({ passed: 7, failed: 0, skipped: 1 });
    expect(s.date, "the first run's start").toBe('2026-11-28T10:00:00Z');
    expect(readdirSync(join(merged!, 'results'))).toEqual(['unknown-gpu-20261128.json']);
    const none = spawnSync(process.execPath, [SCRIPT, 'merge', join(root, 'nothing-here')], { encoding: 'utf8' });
    expect(none.status).toBe(1);
    expect(none.stderr).toContain("merge: 'nothing-here'".replace('nothing-here', join(root, 'nothing-here')));
    rmSync(merged!, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  });

  it('the kernel bench refuses an id no case has, before it opens the GPU', () => {
    const r = spawnSync(
      process.execPath,
      [join(process.cwd(), 'dist/bench/run.js'), '--ids', 'gemm_f16_4096,no_such_case'],
      { encoding: 'utf8' },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('no bench case has the id(s) no_such_case');
  });
});
