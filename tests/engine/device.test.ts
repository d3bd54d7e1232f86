// Device set-up: the Dawn instance flags (f16 on NVIDIA, real timestamps, opt-in toggles), feature
// switches that really change which kernel runs (checked through FINLLM_DUMP_WGSL in a child
// process, each with its own device), and the subgroup-matrix configurations read from the adapter.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { disabledFeatures, instanceFlags } from '../../src/engine/device.js';
import { resolvePrecision } from '../../src/engine/precision.js';
import { engine } from '../../src/engine/tensor.js';
import { InputError } from '../../src/errors.js';
import { requireFeature, useEngine } from '../helpers/index.js';

useEngine();

const DIST = join(process.cwd(), 'dist/src');

/** Runs one GEMM in fp16-mixed in a fresh process; returns the dumped pipeline files and the result check. */
function runChild(env: Record<string, string>): {
  files: string[];
  dir: string;
  out: string;
  status: number | null;
  stderr: string;
} {
  const dir = mkdtempSync(join(tmpdir(), 'finllm-dump-'));
  const script = `
    import { initEngine, Tensor } from '${DIST}/engine/tensor.js';
    import { setComputePrecision } from '${DIST}/engine/precision.js';
    import '${DIST}/kernels/index.js';
    import { gemm } from '${DIST}/kernels/gemm.js';
    const e = await initEngine();
    setComputePrecision('fp16-mixed'); // the dispatcher must still pick f32 when shader-f16 is off
    const a = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [3, 2]);
    const b = Tensor.from(new Float32Array([1, 10, 100, 1000]), [2, 2]);
    const c = await gemm({ a: { t: a }, b: { t: b } }).toFloat32();
    console.log(JSON.stringify({ c: Array.from(c), f16: e.dev.has('shader-f16'), configs: e.dev.subgroupMatrixConfigs, toggles: e.dev.toggles }));
    e.dev.destroy();`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, FINLLM_DUMP_WGSL: dir, ...env },
    encoding: 'utf8',
    timeout: 240_000,
  });
  return { files: existsSync(dir) ? readdirSync(dir) : [], dir, out: r.stdout, status: r.status, stderr: r.stderr };
}

describe('device', () => {
  it('instance flags: f16 on NVIDIA unless FINLLM_F16_ON_NVIDIA=0, timestamps unquantized, opt-in toggles checked', () => {
    const base = instanceFlags({});
    expect(base.flags).toContain('enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia');
    expect(base.flags).toContain('disable-dawn-features=timestamp_quantization');
    expect(instanceFlags({ FINLLM_F16_ON_NVIDIA: '0' }).flags[0]).toBe('enable-dawn-features=allow_unsafe_apis');
    const opt = instanceFlags({
      FINLLM_DAWN_TOGGLES: 'disable_robustness, disable_workgroup_init',
      FINLLM_BACKEND: 'vulkan',
    });
    expect(opt.flags[0]).toBe(
      'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness,disable_workgroup_init',
    );
    expect(opt.flags).toContain('backend=vulkan');
    expect(() => instanceFlags({ FINLLM_DAWN_TOGGLES: 'skip_everything' })).toThrow(InputError);
    expect(() => instanceFlags({ FINLLM_DAWN_TOGGLES: 'skip_everything' })).toThrow(
      /unknown toggle 'skip_everything'.*disable_robustness/,
    );
    expect(disabledFeatures('shader-f16, subgroups')).toEqual(['shader-f16', 'subgroups']);
    expect(() => disabledFeatures('shader-f32')).toThrow(/unknown feature 'shader-f32'/);
    expect(engine().dev.toggles).toContain('-timestamp_quantization');
  });

  it('subgroup-matrix configurations come from the adapter; without f16 ones `auto` precision is fp32', () => {
    const dev = engine().dev;
    for (const c of dev.subgroupMatrixConfigs) {
      expect(typeof c.componentType).toBe('string');
      expect(Number.isInteger(c.M) && Number.isInteger(c.N) && Number.isInteger(c.K)).toBe(true);
    }
    if (!dev.has('chromium-experimental-subgroup-matrix')) expect(dev.subgroupMatrixConfigs).toEqual([]);
    expect(resolvePrecision('auto', dev)).toBe(dev.hasF16SubgroupMatrix() ? 'fp16-mixed' : 'fp32');
    expect(resolvePrecision('fp32', dev)).toBe('fp32');
  });

  it('FINLLM_DISABLE_FEATURES=shader-f16 changes the kernel that runs; FINLLM_DUMP_WGSL shows which', (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const withF16 = runChild({});
    expect(withF16.status, withF16.stderr).toBe(0);
    const without = runChild({ FINLLM_DISABLE_FEATURES: 'shader-f16' });
    expect(without.status, without.stderr).toBe(0);
    // Each dump opens with its pipeline key (specKey: family, then the whole spec as canonical JSON).
    const gemms = (r: { dir: string; files: string[] }) =>
      r.files
        .map((f) => readFileSync(join(r.dir, f), 'utf8'))
        .filter((src) => src.startsWith('// pipeline key: gemm:'));
    expect(gemms(withF16)).toHaveLength(1);
    expect(gemms(withF16)[0]).toMatch(/^\/\/ pipeline key: gemm:\{"a":.*"compute":"f16"/);
    expect(gemms(without)).toHaveLength(1);
    expect(gemms(without)[0]).toMatch(/^\/\/ pipeline key: gemm:\{"a":.*"compute":"f32"/);
    const src = gemms(withF16)[0]!;
    expect(src).toContain('enable f16;');
    for (const r of [withF16, without]) expect(JSON.parse(r.out).c).toEqual([201, 2010, 403, 4030, 605, 6050]);
    expect(JSON.parse(without.out).f16).toBe(false);
  });

  it('the opt-in toggles create a working device (measured on a GPU before they are turned on by default)', () => {
    const r = runChild({ FINLLM_DAWN_TOGGLES: 'disable_robustness,disable_workgroup_init' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.out) as { c: number[]; toggles: string[] };
    expect(out.c).toEqual([201, 2010, 403, 4030, 605, 6050]);
    expect(out.toggles).toEqual(expect.arrayContaining(['disable_robustness', 'disable_workgroup_init']));
  });
});

describe('FINLLM_FORCE_GPU_SHAPES', () => {
  it('1 forces the GPU-shaped kernels on a software adapter; unset, empty or 0 leaves the choice to the adapter; else a one-line error', async () => {
    const { forceGpuShapes } = await import('../../src/engine/device.js');
    expect(forceGpuShapes({})).toBe(false);
    expect(forceGpuShapes({ FINLLM_FORCE_GPU_SHAPES: '' })).toBe(false);
    expect(forceGpuShapes({ FINLLM_FORCE_GPU_SHAPES: '0' })).toBe(false);
    expect(forceGpuShapes({ FINLLM_FORCE_GPU_SHAPES: '1' })).toBe(true);
    expect(() => forceGpuShapes({ FINLLM_FORCE_GPU_SHAPES: 'yes' })).toThrow(InputError);
    expect(() => forceGpuShapes({ FINLLM_FORCE_GPU_SHAPES: 'yes' })).toThrow(
      /FINLLM_FORCE_GPU_SHAPES must be 0 or 1, got 'yes'/,
    );
  });
});
