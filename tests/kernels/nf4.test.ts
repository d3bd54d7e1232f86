import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  dequantizeNf4Ref,
  expectWithinSumBound,
  matmulNNRef,
  matmulNTRef,
  NF4_TABLE,
  nf4CodeBnb,
  nf4HalfSpacing,
  quantizeNf4Ref,
} from '../../reference/nf4.js';
import { backward } from '../../src/engine/autograd.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { bf16ArrayToF32, f32ArrayToBf16 } from '../../src/io/dtype.js';
import { SafetensorsReader } from '../../src/io/safetensors.js';
import { binary, sumToSuffix } from '../../src/kernels/elementwise.js';
import { gemm } from '../../src/kernels/gemm.js';
import { nf4Linear } from '../../src/kernels/matmul.js';
import {
  dequantizeNf4,
  disposeNf4,
  type Nf4DoubleQuant,
  type Nf4Weight,
  nf4Absmax,
  nf4FromHost,
  nf4Gemv,
  packNf4Codes,
  quantizeNf4,
  unpackNf4Codes,
} from '../../src/kernels/nf4.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';

useEngine();

const FIXTURES = join(import.meta.dirname, '../fixtures/reference');

async function readCodes(w: Nf4Weight): Promise<Uint8Array> {
  return unpackNf4Codes((await w.codes.read()) as Uint32Array, w.shape[0] * w.shape[1]);
}

/**
 * Weights with the cases that break careless quantizers: per block an exact ±absmax element, values
 * at code·absmax and at midpoint·absmax (ties up to one ulp of x/absmax, where the rounding of the
 * division decides the code), zeros, and an all-zero block.
 */
function nastyWeight(rng: Rng, n: number): Float32Array {
  const w = new Float32Array(n);
  for (let b = 0; b < n; b += 64) {
    const am = Math.fround(0.05 + 0.1 * Math.abs(rng.normal()));
    for (let i = b; i < Math.min(n, b + 64); i++) {
      const r = rng.uniform();
      if (i === b) w[i] = rng.uniform() < 0.5 ? am : -am;
      else if (r < 0.2) w[i] = NF4_TABLE[rng.int(16)]! * am;
      else if (r < 0.5) {
        const k = rng.int(15);
        w[i] = ((NF4_TABLE[k]! + NF4_TABLE[k + 1]!) / 2) * am;
      } else if (r < 0.55) w[i] = 0;
      else w[i] = am * (2 * rng.uniform() - 1);
    }
  }
  if (n >= 128) w.fill(0, 64, 128); // an all-zero block
  return w;
}

describe('NF4 quantization', () => {
  it('GPU codes and absmax equal the PyTorch-semantics CPU quantizer (f32 and bf16 inputs, partial blocks)', async () => {
    const rng = testRng('nf4-quant');
    for (const shape of [
      [1, 1],
      [3, 37],
      [5, 64],
      [7, 200],
      [33, 97],
    ] as [number, number][]) {
      const n = shape[0] * shape[1];
      const data = nastyWeight(rng, n);
      // block maxima at exactly ±am so some elements sit exactly on the code grid
      for (const dtype of ['f32', 'bf16'] as const) {
        const vals = dtype === 'f32' ? data : bf16ArrayToF32(f32ArrayToBf16(data));
        const t = dtype === 'f32' ? Tensor.from(vals, shape) : Tensor.from(f32ArrayToBf16(data), shape, 'bf16');
        const q = quantizeNf4(t);
        const ref = quantizeNf4Ref(vals);
        const codes = await readCodes(q);
        const absmax = await (q.absmax as Tensor).toFloat32();
        expect(Array.from(absmax), `absmax ${dtype} [${shape}]`).toEqual(Array.from(ref.absmax));
        const mism = [...codes].map((c, i) => (c !== ref.codes[i] ? i : -1)).filter((i) => i >= 0);
        expect(
          mism.slice(0, 5).map((i) => `[${i}] x=${vals[i]} gpu ${codes[i]} ref ${ref.codes[i]}`),
          `codes ${dtype} [${shape}]`,
        ).toEqual([]);
        // the packed words of the partial last word carry zeros past the end
        disposeNf4(q);
      }
    }
  });

  it('codes and absmax are identical to the PyTorch fixture for every decoder linear weight of both models', async () => {
    for (const model of ['gqa-f32', 'mqa-bf16-tied-llama3rope']) {
      const weights = await SafetensorsReader.open(join(FIXTURES, model, 'model/model.safetensors'));
      const nf4 = await SafetensorsReader.open(join(FIXTURES, model, 'nf4_reference.safetensors'));
      let checked = 0;
      let bnbDiffers = 0;
      for (const key of nf4.names().filter((k) => k.endsWith('.nf4_codes'))) {
        const name = key.slice(0, -'.nf4_codes'.length);
        const info = weights.info(name);
        const w = await weights.readF32(name); // bf16 -> f32 exactly, as torch_dtype=float32 loading does
        const wantCodes = (await nf4.readTyped(key)) as Uint8Array;
        const wantAbsmax = await nf4.readF32(`${name}.absmax`);
        const t =
          info.dtype === 'BF16'
            ? Tensor.from(await weights.readU16(name), info.shape, 'bf16')
            : Tensor.from(w, info.shape);
        const q = quantizeNf4(t);
        const codes = await readCodes(q);
        const absmax = await (q.absmax as Tensor).toFloat32();
        expect(Array.from(absmax), `${model} ${name} absmax`).toEqual(Array.from(wantAbsmax));
        let first = -1;
        for (let i = 0; i < codes.length; i++)
          if (codes[i] !== wantCodes[i]) {
            first = i;
            break;
          }
        expect(first, `${model} ${name}: first differing code`).toBe(-1);
        expect(Array.from(quantizeNf4Ref(w).codes)).toEqual(Array.from(wantCodes)); // the CPU twin too
        for (let i = 0; i < w.length; i++) if (nf4CodeBnb(w[i]!, wantAbsmax[i >> 6]!) !== wantCodes[i]) bnbDiffers++;
        checked += codes.length;
        disposeNf4(q);
      }
      console.log(
        `[nf4] ${model}: ${checked} codes identical to the fixture; bitsandbytes' midpoint tree would differ on ${bnbDiffers}`,
      );
      expect(checked).toBeGreaterThan(10000);
      await weights.close();
      await nf4.close();
    }
  });

  it('pack/unpack round trip and nf4FromHost', async () => {
    const rng = testRng('nf4-pack');
    const codes = Uint8Array.from({ length: 77 }, () => rng.int(16));
    expect(Array.from(unpackNf4Codes(packNf4Codes(codes), 77))).toEqual(Array.from(codes));
    const absmax = rng.uniformArray(2, 0.5, 2);
    const w = nf4FromHost([7, 11], codes, absmax);
    expectClose(
      await dequantizeNf4(w).toFloat32(),
      dequantizeNf4Ref(codes, absmax),
      { atol: 0, rtol: 0 },
      'dequant of host codes',
    );
  });

  it('dequantization is exactly code·absmax and within half the local code spacing of the input', async () => {
    const rng = testRng('nf4-dequant');
    for (const shape of [
      [1, 5],
      [9, 71],
      [16, 128],
    ] as [number, number][]) {
      const n = shape[0] * shape[1];
      const data = nastyWeight(rng, n);
      const q = quantizeNf4(Tensor.from(data, shape));
      const deq = await dequantizeNf4(q).toFloat32();
      const ref = quantizeNf4Ref(data);
      // exact: one f32 multiply, correctly rounded in WGSL
      expectClose(deq, dequantizeNf4Ref(ref.codes, ref.absmax), { atol: 0, rtol: 0 }, `dequant [${shape}]`);
      for (let i = 0; i < n; i++) {
        const am = ref.absmax[i >> 6]!;
        // nearest-code rounding error ≤ half the gap of the bracketing codes (×absmax), plus the
        // rounding of x/absmax (≤ 2^-24) and of code·absmax (≤ 2^-24 relative)
        const bound = am === 0 ? 0 : nf4HalfSpacing(data[i]! / am) * am + 2 ** -23 * am;
        expect(Math.abs(deq[i]! - data[i]!), `element ${i} x=${data[i]} am=${am}`).toBeLessThanOrEqual(bound);
      }
      disposeNf4(q);
    }
  });

  it('double quantization: offset is the mean, int8 codes round (absmax − offset)/scale, decoded absmax within scale/2', async () => {
    const rng = testRng('nf4-dq');
    for (const shape of [
      [3, 64],
      [40, 1000],
    ] as [number, number][]) {
      const n = shape[0] * shape[1];
      const data = rng.normalArray(n, 0, 0.05);
      const q = quantizeNf4(Tensor.from(data, shape), { doubleQuant: true });
      const dq = q.absmax as Nf4DoubleQuant;
      const ref = quantizeNf4Ref(data);
      const nb = ref.absmax.length;
      const offset = (await dq.absmaxOffset.toFloat32())[0]!;
      const scales = await dq.absmaxScale.toFloat32();
      const qbytes = new Int8Array(((await dq.qabsmax.read()) as Uint32Array).buffer);
      let mean = 0;
      for (const a of ref.absmax) mean += a;
      mean /= nb;
      // f32 sum of nb positive terms: relative error ≤ nb·2^-24
      expect(Math.abs(offset - mean)).toBeLessThanOrEqual((nb + 2) * 2 ** -24 * mean);
      const decoded = await nf4Absmax(q).toFloat32();
      for (let g = 0; g < Math.ceil(nb / 256); g++) {
        let m = 0;
        for (let b = g * 256; b < Math.min(nb, g * 256 + 256); b++)
          m = Math.max(m, Math.abs(Math.fround(ref.absmax[b]! - offset)));
        expect(scales[g]).toBeCloseTo(m / 127, 9);
        for (let b = g * 256; b < Math.min(nb, g * 256 + 256); b++) {
          const exact = (ref.absmax[b]! - offset) / scales[g]!;
          // the kernel multiplies by fl(127/m); a different integer is allowed only right at a .5 tie
          if (Math.abs(Math.abs(exact - Math.trunc(exact)) - 0.5) > 1e-4)
            expect(qbytes[b], `q[${b}] exact ${exact}`).toBe(Math.round(exact) + 0);
          else expect(Math.abs(qbytes[b]! - exact)).toBeLessThanOrEqual(0.5 + 1e-4);
          expect(Math.abs(decoded[b]! - ref.absmax[b]!)).toBeLessThanOrEqual(
            (scales[g]! / 2) * (1 + 1e-4) + 1e-6 * ref.absmax[b]!,
          );
        }
      }
      // dequantization with double-quantized absmax = codes × decoded absmax (f32 mul/add: ≤ 2 ulp)
      expectClose(
        await dequantizeNf4(q).toFloat32(),
        dequantizeNf4Ref(ref.codes, decoded),
        { atol: 1e-9, rtol: 2.5e-7 },
        'dq dequant',
      );
      disposeNf4(q);
    }
  });
});

describe('nf4Linear (the GEMM with the NF4 loader; GEMV at decode)', () => {
  const cases: [number, number, number][] = [
    // [M, in, out]: GEMV rows (1, 3), tiled rows with partial tiles, aligned (in % 8 == 0) and not
    [1, 64, 70],
    [3, 37, 5],
    [1, 200, 129],
    [5, 64, 1],
    [67, 96, 70],
    [70, 37, 65],
    [130, 128, 33],
  ];
  for (const dqMode of [false, true]) {
    it(`forward and input gradient vs f64 on the dequantized weight${dqMode ? ' (double-quantized absmax)' : ''}`, async () => {
      const rng = testRng(`nf4-linear-${dqMode}`);
      for (const [M, K, N] of cases) {
        const wData = rng.normalArray(N * K, 0, 0.05);
        const q = quantizeNf4(Tensor.from(wData, [N, K]), { doubleQuant: dqMode });
        const codes = await readCodes(q);
        const absmax = await nf4Absmax(q).toFloat32();
        const wDeq = dequantizeNf4Ref(codes, absmax);
        const xData = rng.normalArray(M * K);
        const gData = rng.normalArray(M * N);
        const x = Tensor.from(xData, [M, K]);
        x.requiresGrad = true;
        const y = nf4Linear(x, q);
        backward(y, Tensor.from(gData, [M, N]));
        // f32 sums of K products (absmax folded in per word on the GEMV path, dq decode: +2 roundings)
        expectWithinSumBound(
          await y.toFloat32(),
          matmulNTRef(xData, wDeq, M, K, N),
          K,
          `y [${M}x${K}]·[${N}x${K}]ᵀ`,
          6,
        );
        expectWithinSumBound(
          await x.grad!.toFloat32(),
          matmulNNRef(gData, wDeq, M, N, K),
          N,
          `dX [${M}x${N}]·[${N}x${K}]`,
          6,
        );
        // both kernels agree on the same problem (forces the other path: GEMM at decode rows, GEMV otherwise)
        const other =
          M <= 4
            ? gemm({ a: { t: Tensor.from(xData, [M, K]) }, b: { t: q, trans: true } })
            : nf4Gemv(Tensor.from(xData, [M, K]), q);
        expectWithinSumBound(
          await other.toFloat32(),
          matmulNTRef(xData, wDeq, M, K, N),
          K,
          `other path [${M}x${K}]·[${N}x${K}]ᵀ`,
          6,
        );
        x.grad!.dispose();
        disposeNf4(q);
      }
    });
  }

  it('batched input [B, T, in] and finite-difference gradient', async () => {
    const rng = testRng('nf4-fd');
    const q = quantizeNf4(Tensor.from(rng.normalArray(9 * 24, 0, 0.3), [9, 24]));
    const x3 = Tensor.from(rng.normalArray(2 * 3 * 24), [2, 3, 24]);
    const y3 = nf4Linear(x3, q);
    expect(y3.shape).toEqual([2, 3, 9]);
    const w = rng.normalArray(6 * 9);
    await gradCheck(
      'nf4Linear',
      ([x]) => sumToSuffix(binary('mul', nf4Linear(x!, q), Tensor.from(w, [6, 9])), [1]),
      [{ data: rng.normalArray(6 * 24), shape: [6, 24] }],
      rng,
    );
  });
});
