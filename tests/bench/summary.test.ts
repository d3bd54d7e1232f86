// bench/summary.ts on fake GPU benchmark outputs (no GPU, no engine): every key of the summary format
// is present, figures come from the right files and case ids, unmeasured ones are null, and the
// CLI writes <dir>/summary.json plus bench/results/gpu/<card>-<date>.json.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { registeredBenches } from '../../bench/harness.js';
import {
  ATTENTION_SHAPES,
  buildSummary,
  cardSlug,
  DECODE_KEYS,
  type GpuSummary,
  readSessionDir,
  summaryKernelIds,
  TRAIN_TAGS,
} from '../../bench/summary.js';
import '../../bench/kernels/index.js';

const CLI = join(process.cwd(), 'dist/bench/summary.js');

function fakeSession(opts: { peer: boolean; decode: boolean }): string {
  const dir = mkdtempSync(join(tmpdir(), 'finllm-gpu-run-'));
  const w = (name: string, v: unknown) => writeFileSync(join(dir, name), typeof v === 'string' ? v : JSON.stringify(v));
  w('gpu.csv', 'NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB\n');
  w('commit.txt', 'abc1234\n');
  w('kernels-2026-11-28T10-00-00-000Z.json', {
    results: [
      { id: 'gemm_f32_4096', medianMs: 4, gflops: 34000 },
      { id: 'gemm_f16_4096', medianMs: 1, gflops: 130000 },
      { id: 'nf4_gemm_fwd.fp32', medianMs: 5, gflops: 9000 },
      { id: 'nf4_gemm_fwd.fp16-mixed', medianMs: 2, gflops: 100000 },
      { id: 'nf4_gemm_dx.fp16-mixed', medianMs: 2, gflops: 90000 },
      { id: 'f16_gemm_same_shape', medianMs: 1, gflops: 120000 },
      { id: 'attention.B8_T512_Hq32_Hkv4_D64.fwd', medianMs: 0.5, gflops: null },
      { id: 'attention.B8_T512_Hq32_Hkv4_D64.fwd_bwd', medianMs: 1.5, gflops: null },
      { name: 'no id', medianMs: 3, gflops: 1 },
    ],
  });
  w('e2e-bf16-2026.json', {
    tag: 'bf16',
    precision: 'fp16-mixed',
    modes: [{ checkpointing: 'none', train_tok_s: 9000, peak_mem_gb: 20, skipped_steps: 0 }],
    decode_tok_s: 30,
  });
  w('e2e-nf4-2026.json', {
    tag: 'nf4',
    precision: 'fp16-mixed',
    modes: [{ checkpointing: 'none', train_tok_s: 7000, peak_mem_gb: 18, skipped_steps: 1 }],
    decode_tok_s: 25,
  });
  w('smi-bf16.txt', '24576\n');
  w('smi-nf4.txt', 'not a number');
  if (opts.peer) {
    w('peer.json', {
      'tinyllama-1.1b': { train_tok_s: 29805, peak_mem_gb: 16.1, decode_tok_s: 13.6 },
      'tinyllama-1.1b-gc': { train_tok_s: 13919, peak_mem_gb: 4.69 },
    });
    w('peer_kernels.json', {
      sdpa_B8_T512_Hq32_Hkv4_D64: { fwd_ms: 0.054, fwd_bwd_ms: 0.248 },
      sdpa_B1_T4096_Hq32_Hkv8_D128: { fwd_ms: 0.255, fwd_bwd_ms: 1.12 },
      'gemm4096_torch.float16': 765,
      'gemm4096_torch.float32': 51.9,
    });
  }
  if (opts.decode) w('decode-2026.json', { b8_nf4_tok_s: 120, ttft_512_ms: 35, b1_nf4_tok_s: 40 });
  return dir;
}

/** Every key of the format in docs/gpu-summary.md, as paths. */
function expectAllKeys(s: GpuSummary): void {
  for (const k of ['card', 'driver', 'date', 'commit', 'peer', 'finllm']) expect(s, k).toHaveProperty(k);
  for (const k of [
    'train_tok_s',
    'peak_gb',
    'train_tok_s_gc',
    'peak_gb_gc',
    'decode_tok_s',
    'gemm_f16_tflops',
    'gemm_f32_tflops',
  ])
    expect(s.peer, `peer.${k}`).toHaveProperty(k);
  for (const k of [
    'gemm_f16_tflops',
    'gemm_f32_tflops',
    'nf4_gemm_fwd_tflops',
    'nf4_gemm_dx_tflops',
    'f16_gemm_same_shape_tflops',
  ])
    expect(s.finllm, `finllm.${k}`).toHaveProperty(k);
  for (const shape of ATTENTION_SHAPES) {
    expect(Object.keys(s.peer.sdpa[shape]).sort()).toEqual(['fwd_bwd_ms', 'fwd_ms']);
    expect(Object.keys(s.finllm.attention[shape]).sort()).toEqual(['fwd_bwd_ms', 'fwd_ms']);
  }
  for (const tag of TRAIN_TAGS)
    for (const k of ['precision', 'tok_s', 'pool_peak_gb', 'device_peak_gb'])
      expect(s.finllm.train[tag], `train.${tag}.${k}`).toHaveProperty(k);
  for (const k of DECODE_KEYS) expect(s.finllm.decode, `decode.${k}`).toHaveProperty(k);
}

describe('GPU benchmark summary', () => {
  it('maps every figure from its file and case id; unmeasured figures are null', () => {
    const s = buildSummary(readSessionDir(fakeSession({ peer: true, decode: true })));
    expectAllKeys(s);
    expect(s.card).toBe('NVIDIA H100 80GB HBM3');
    expect(s.driver).toBe('580.159.04');
    expect(s.commit).toBe('abc1234');
    expect(s.finllm.gemm_f32_tflops).toBe(34);
    expect(s.finllm.gemm_f16_tflops).toBe(130);
    expect(s.finllm.nf4_gemm_fwd_tflops, 'fp16-mixed preferred over fp32').toBe(100);
    expect(s.finllm.nf4_gemm_dx_tflops).toBe(90);
    expect(s.finllm.f16_gemm_same_shape_tflops).toBe(120);
    expect(s.finllm.attention.B8_T512_Hq32_Hkv4_D64).toEqual({ fwd_ms: 0.5, fwd_bwd_ms: 1.5 });
    expect(s.finllm.attention.B1_T4096_Hq32_Hkv8_D128).toEqual({ fwd_ms: null, fwd_bwd_ms: null });
    expect(s.finllm.train.bf16).toEqual({
      precision: 'fp16-mixed',
      tok_s: 9000,
      pool_peak_gb: 20,
      device_peak_gb: (24576 * 2 ** 20) / 1e9,
      skipped_steps: 0,
    });
    expect(s.finllm.train.nf4.device_peak_gb, 'an unreadable smi file is null').toBeNull();
    expect(s.finllm.train.nf4_gc).toEqual({
      precision: null,
      tok_s: null,
      pool_peak_gb: null,
      device_peak_gb: null,
      skipped_steps: null,
    });
    expect(s.finllm.decode).toEqual({ b1_nf4_tok_s: 40, b1_bf16_tok_s: 30, b8_nf4_tok_s: 120, ttft_512_ms: 35 });
    expect(s.peer.train_tok_s).toBe(29805);
    expect(s.peer.peak_gb_gc).toBe(4.69);
    expect(s.peer.gemm_f16_tflops).toBe(765);
    expect(s.peer.sdpa.B8_T512_Hq32_Hkv8_D128).toEqual({ fwd_ms: null, fwd_bwd_ms: null });
    expect(s.ratios.train_bf16).toBeCloseTo(9000 / 29805, 12);
    expect(s.ratios.nf4_fwd_vs_f16).toBeCloseTo(100 / 120, 12);
  });

  it('without peer or decode outputs: those figures are null, batch-1 decode falls back to the e2e runs', () => {
    const s = buildSummary(readSessionDir(fakeSession({ peer: false, decode: false })));
    expectAllKeys(s);
    expect(s.peer.train_tok_s).toBeNull();
    expect(s.peer.sdpa.B8_T512_Hq32_Hkv4_D64).toEqual({ fwd_ms: null, fwd_bwd_ms: null });
    expect(s.ratios.train_bf16).toBeNull();
    expect(s.finllm.decode).toEqual({ b1_nf4_tok_s: 25, b1_bf16_tok_s: 30, b8_nf4_tok_s: null, ttft_512_ms: null });
  });

  it("the e2e runs' decode blocks (batch 1 and 8, time to first token) fill what the decode benchmark did not measure", () => {
    const dir = fakeSession({ peer: false, decode: false });
    writeFileSync(
      join(dir, 'e2e-nf4-2026.json'),
      JSON.stringify({
        tag: 'nf4',
        precision: 'fp16-mixed',
        modes: [{ checkpointing: 'none', train_tok_s: 7000, peak_mem_gb: 18, skipped_steps: 1 }],
        decode_tok_s: 25,
        decode: { b1_nf4_tok_s: 26, b8_nf4_tok_s: 150, ttft_512_ms: 41, ttft_ms: 41 },
      }),
    );
    const s = buildSummary(readSessionDir(dir));
    expect(s.finllm.decode).toEqual({ b1_nf4_tok_s: 26, b1_bf16_tok_s: 30, b8_nf4_tok_s: 150, ttft_512_ms: 41 });
  });

  it('a partial session: the card from the adapter without nvidia-smi, peer runs merged from their files, each step recorded', () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-gpu-run-'));
    const w = (name: string, v: unknown) => writeFileSync(join(dir, name), JSON.stringify(v));
    w('kernels-summary.json', {
      adapter: 'NVIDIA H200',
      complete: false,
      results: [{ id: 'gemm_f16_4096', medianMs: 1, gflops: 300000 }],
    });
    w('kernels-all.json', { adapter: 'NVIDIA H200', results: [{ id: 'gemm_f16_4096', medianMs: 2, gflops: 150000 }] });
    w('peer.json', { 'tinyllama-1.1b': { train_tok_s: 30000, peak_mem_gb: 16 } });
    w('peer-gc.json', { 'tinyllama-1.1b-gc': { train_tok_s: 14000, peak_mem_gb: 4.7 } });
    w('steps-measure.json', {
      mode: 'measure',
      dry: false,
      budget_s: 480,
      steps: [
        { name: 'kernels', status: 'ok', rc: 0, seconds: 41 },
        { name: 'e2e_bf16', status: 'timeout', rc: 124, seconds: 120, cap_s: 120 },
        { name: 'e2e_bf16_fp32', status: 'skipped', rc: null, seconds: 0, reason: 'out of time' },
      ],
    });
    w('steps-tests.json', { mode: 'tests', steps: [{ name: 'tests', status: 'failed', rc: 1, seconds: 88 }] });
    w('tests-report.json', { numPassedTests: 500, numFailedTests: 2, numPendingTests: 3, numTodoTests: 0 });
    w('tests-report-gemm.json', { numPassedTests: 20, numFailedTests: 1, numPendingTests: 0, numTodoTests: 1 });
    const s = buildSummary(readSessionDir(dir));
    expectAllKeys(s);
    expect(s.card).toBe('NVIDIA H200');
    expect(s.driver).toBeNull();
    expect(s.finllm.gemm_f16_tflops, 'kernels-summary.json sorts after kernels-all.json: its figure wins').toBe(300);
    expect(s.peer.train_tok_s).toBe(30000);
    expect(s.peer.train_tok_s_gc).toBe(14000);
    expect(s.peer.peak_gb_gc).toBe(4.7);
    expect(s.finllm.train.bf16.tok_s).toBeNull();
    expect(s.session.dry).toBe(false);
    expect(s.session.steps.map((st) => `${st.mode}:${st.name}:${st.status}`)).toEqual([
      'measure:kernels:ok',
      'measure:e2e_bf16:timeout',
      'measure:e2e_bf16_fp32:skipped',
      'tests:tests:failed',
    ]);
    expect(s.session.steps[1]).toMatchObject({ rc: 124, seconds: 120, cap_s: 120 });
    expect(s.session.tests, 'the reports are summed').toEqual({ passed: 520, failed: 3, skipped: 4 });
    // Without any step record (a summary of hand-made outputs): no steps, no test counts.
    const plain = buildSummary(readSessionDir(fakeSession({ peer: false, decode: false })));
    expect(plain.session).toEqual({ dry: false, steps: [], tests: null });
  });

  it('every kernel id the summary reads is registered by a bench case (bench/run.ts --summary-only selects by them)', () => {
    const known = new Set(registeredBenches().flatMap((c) => [c.id, ...(c.ids ?? [])]));
    const ids = summaryKernelIds();
    expect(ids).toContain('gemm_f16_4096');
    expect(ids).toContain('attention.B1_T4096_Hq32_Hkv8_D128.fwd_bwd');
    expect(ids.filter((id) => !known.has(id))).toEqual([]);
  });

  it('card slugs', () => {
    expect(cardSlug('NVIDIA H100 80GB HBM3')).toBe('h100');
    expect(cardSlug('NVIDIA H200')).toBe('h200');
    expect(cardSlug('NVIDIA A100-SXM4-40GB')).toBe('a100');
    expect(cardSlug(null)).toBe('unknown-gpu');
  });

  it('the CLI writes summary.json and the dated per-card file; a missing folder is an error', () => {
    expect(existsSync(CLI), `${CLI}: run npm run build`).toBe(true);
    const dir = fakeSession({ peer: true, decode: false });
    const results = mkdtempSync(join(tmpdir(), 'finllm-gpu-results-'));
    const r = spawnSync(process.execPath, [CLI, '--dir', dir, '--results', results, '--date', '2026-11-28T10:00:00Z'], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const file = join(results, 'h100-20261128.json');
    expect(r.stdout).toContain(file);
    const written = JSON.parse(readFileSync(file, 'utf8')) as GpuSummary;
    expect(written).toEqual(JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')));
    expect(written.date).toBe('2026-11-28T10:00:00Z');
    const bad = spawnSync(process.execPath, [CLI, '--dir', join(dir, 'nope')], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/usage: summary --dir/);
  });
});
