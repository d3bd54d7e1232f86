// bench/gpu-session.sh's plumbing without a GPU and without running a step: the plan (--list) puts
// the figures the issues need first and produces every e2e tag the summary reads, each call's budget
// fits the device tool's limits, `merge` rebuilds a summary from the calls' raw archives, and the
// kernel bench rejects an id no case has. (The whole session on lavapipe, tiny shapes: `bash
// bench/gpu-session.sh --dry all`, ~35 s warm, ~2 min with a cold shader cache: not part of CI.)
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TRAIN_TAGS, type GpuSummary } from '../../bench/summary.js';

const SCRIPT = join(process.cwd(), 'bench/gpu-session.sh');

function session(...args: string[]) {
  return spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8' });
}

interface PlanStep { name: string; cap: number; command: string }

function plan(...args: string[]): { budget: number; steps: PlanStep[] } {
  const r = session(...args, '--list');
  expect(r.status, r.stderr).toBe(0);
  const [head, ...lines] = r.stdout.trim().split('\n');
  const budget = Number(/budget (\d+)s/.exec(head!)?.[1]);
  const steps = lines.map((l) => {
    const m = /^(\S+)\s+cap\s+(\d+)s\s+(.*)$/.exec(l);
    expect(m, l).not.toBeNull();
    return { name: m![1]!, cap: Number(m![2]), command: m![3]! };
  });
  return { budget, steps };
}

describe('bench/gpu-session.sh', () => {
  it('measure: the kernel ids and e2e runs beside the peer first, every e2e tag the summary reads, within the device limits', () => {
    const { budget, steps } = plan('measure');
    const names = steps.map((s) => s.name);
    const at = (n: string) => names.indexOf(n);
    expect(names).toEqual(['model', 'kernels', 'e2e_bf16', 'peer', 'e2e_nf4', 'peer_kernels', 'e2e_nf4_gc', 'peer_gc', 'e2e_bf16_fp32']);
    expect(at('peer')).toBe(at('e2e_bf16') + 1); // the train_bf16 ratio needs both
    expect(steps.find((s) => s.name === 'kernels')!.command).toContain('--summary-only');
    for (const tag of TRAIN_TAGS) expect(steps.find((s) => s.name === `e2e_${tag}`)?.command, tag).toContain(`--tag ${tag}`);
    for (const s of steps.filter((s) => s.name.startsWith('e2e_'))) expect(s.command).toMatch(/--preset 1\.1b --vocab 32000 --batch 8 --seq 512/);
    for (const s of steps.filter((s) => s.name.startsWith('peer'))) {
      const script = /(bench\/peer\/\S+\.py)/.exec(s.command)?.[1];
      expect(script && existsSync(script), s.command).toBe(true);
    }
    // One command at most 600 s (the call's timeout_s adds ~60 s to the budget); the two calls plus
    // a machine start (≤ 2 min) within the session's 15 minutes of device time.
    const tests = plan('tests');
    expect(budget + 60).toBeLessThanOrEqual(600);
    expect(tests.budget + 60).toBeLessThanOrEqual(600);
    expect(120 + budget + tests.budget).toBeLessThanOrEqual(900 - 60);
    expect(tests.steps.map((s) => s.name)).toEqual(['full_ft_golden', 'tests', 'tests_gemm', 'kernels_all']);
    expect(tests.steps[0]!.command).toContain('make_full_ft_reference.py');
    expect(tests.steps[1]!.command).toContain('FINLLM_TEST_TIER=gpu');
  });

  it('--only keeps the named steps; --dry uses tiny shapes; bad arguments are refused', () => {
    expect(plan('measure', '--only', 'e2e_nf4,peer_gc').steps.map((s) => s.name)).toEqual(['e2e_nf4', 'peer_gc']);
    const dry = session('measure', '--dry', '--list');
    expect(dry.stdout).toMatch(/peer\s+skipped: dry run/);
    expect(dry.stdout).toMatch(/e2e_bf16 .*--preset tiny/);
    const bad = session('measure', '--bogus');
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("unknown argument '--bogus'");
    expect(session('measure', '--budget', 'soon', '--list').stderr).toContain('--budget: expected whole seconds');
  });

  it('merge rebuilds one summary from the raw archives of several calls', () => {
    const root = mkdtempSync(join(tmpdir(), 'finllm-gpu-merge-'));
    const call = (n: number, files: Record<string, unknown>) => {
      const raw = join(root, `raw${n}`);
      mkdirSync(raw);
      for (const [name, v] of Object.entries(files)) writeFileSync(join(raw, name), JSON.stringify(v));
      const dir = join(root, 'fetched', String(n));
      mkdirSync(dir, { recursive: true });
      const t = spawnSync('tar', ['-czf', join(dir, n === 1 ? 'raw-measure.tgz' : 'raw-tests.tgz'), '-C', raw, '.']);
      expect(t.status).toBe(0);
    };
    // dry: true, so the merged summary is written beside the merged files, not into bench/results/gpu.
    call(1, {
      'steps-measure-20261128T100000Z.json': { mode: 'measure', dry: true, started: '2026-11-28T10:00:00Z', steps: [{ name: 'e2e_bf16', status: 'ok', rc: 0, seconds: 50 }] },
      'e2e-bf16-x.json': { tag: 'bf16', precision: 'fp16-mixed', modes: [{ checkpointing: 'none', train_tok_s: 123, peak_mem_gb: 1 }] },
    });
    call(2, {
      'steps-tests-20261128T101000Z.json': { mode: 'tests', dry: true, started: '2026-11-28T10:10:00Z', steps: [{ name: 'tests', status: 'ok', rc: 0, seconds: 80 }] },
      'tests-report.json': { numPassedTests: 7, numFailedTests: 0, numPendingTests: 1, numTodoTests: 0 },
    });
    const r = session('merge', join(root, 'fetched'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('steps: e2e_bf16 ok 50s | tests ok 80s');
    const merged = /merged raw results: (\S+)/.exec(r.stdout)?.[1];
    expect(merged).toBeTruthy();
    const s = JSON.parse(readFileSync(join(merged!, 'summary.json'), 'utf8')) as GpuSummary;
    expect(s.finllm.train.bf16.tok_s).toBe(123);
    expect(s.session.tests).toEqual({ passed: 7, failed: 0, skipped: 1 });
    expect(s.date, 'the first call\'s start').toBe('2026-11-28T10:00:00Z');
    expect(readdirSync(join(merged!, 'results'))).toEqual(['unknown-gpu-20261128.json']);
    expect(session('merge', join(root, 'nothing-here')).status).toBe(1);
    rmSync(merged!, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  });

  it('the kernel bench refuses an id no case has, before it opens the GPU', () => {
    const r = spawnSync(process.execPath, [join(process.cwd(), 'dist/bench/run.js'), '--ids', 'gemm_f16_4096,no_such_case'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('no bench case has the id(s) no_such_case');
  });
});
