import { describe, expect, it } from 'vitest';
import { llama3InvFreqRef, ropeRef } from '../../reference/rope.js';
import { backward, noGrad, zeroGrad } from '../../src/engine/autograd.js';
import { Tensor, tidy } from '../../src/engine/tensor.js';
import { binary, cast, sumToSuffix } from '../../src/kernels/elementwise.js';
import {
  type RopeScalingLlama3,
  type RopeTables,
  rope,
  ropeInvFreq,
  ropeTableData,
  ropeTables,
} from '../../src/kernels/rope.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, expectNoGrowth, testRng, useEngine } from '../helpers/index.js';

useEngine();

// transformers' float32 inv_freq, computed with numpy float32 (IEEE-rounded +, −, ×, ÷ like torch's CPU
// kernels; `s / t` written as reciprocal(t) * s, as torch's Tensor.__rtruediv__ does). The pow is
// the correctly rounded f32 of the f64 pow: numpy's own float32 power is off by an ulp in 4 of 32
// TinyLlama entries, and torch's (Sleef, ≤ 1 ulp) may be too, so HF may differ from these by an ulp
// in a few entries; everything else in the chain is matched bit for bit.
//   e = (arange(0, dim, 2).astype(f32) / f32(dim)); p = f32(f64(theta) ** f64(e)); inv = reciprocal(p) * f32(1)
//   llama3: wavelen = reciprocal(inv) * f32(2π); il = where(wavelen > f32(old/low), inv / f32(factor), inv)
//           s = (reciprocal(wavelen) * f32(old) − f32(low)) / f32(high − low)
//           sm = (f32(1) − s) * il / f32(factor) + s * il; med = ~(wavelen < f32(old/high)) & ~(wavelen > f32(old/low))
//           inv = where(med, sm, il)
// (script: numpy 2.4, values as f32 bit patterns)
const NUMPY_F32_INV_FREQ_BITS: Record<string, number[]> = {
  llama32_1b: [
    1065353216, 1059709382, 1054963644, 1049992931, 1044812720, 1040434848, 1034871981, 1030233703, 1025116360,
    1020030793, 1015523779, 1010044269, 1005516623, 1000248322, 995260192, 984164251, 971060768, 952867063, 933446029,
    928558209, 923781368, 918476020, 914179523, 908595819, 903811268, 898893515, 893679120, 889347892, 883754919,
    879076685, 874013863, 868893104,
  ],
  llama31_8b: [
    1065353216, 1062243009, 1059709382, 1057645444, 1054963644, 1052224381, 1049992931, 1047774305, 1044812720,
    1042400160, 1040434848, 1037480348, 1034871981, 1032747160, 1030233703, 1027413636, 1025116360, 1023079743,
    1020030793, 1017547065, 1015523779, 1012729580, 1010044269, 1007856767, 1005516623, 1002613366, 1000248322,
    998321717, 995260192, 990772486, 984863005, 979408798, 973706706, 967045384, 960179666, 952658054, 950223245,
    948239807, 945335425, 942703001, 940558584, 938099311, 935253236, 932934773, 930956739, 927879669, 925373035,
    923331087, 920588484, 917878407, 915670731, 913386368, 910456336, 908069481, 906125108, 903112712, 900532135,
    898429952, 895853901, 893063879, 890791079, 888686786, 885670320, 883213055,
  ],
  tinyllama: [
    1065353216, 1061157137, 1058010522, 1054337179, 1050798235, 1047712803, 1043732615, 1040747895, 1036831949,
    1033475085, 1030116802, 1026341397, 1023510243, 1019364175, 1016180025, 1012562930, 1008981770, 1005959600,
    1001931932, 998911607, 995049016, 991652109, 988353832, 984533390, 981668463, 977573004, 974350870, 970790693,
    967166816, 964208661, 960132947, 957076594,
  ],
  dim48: [
    1065353216, 1060006184, 1055761980, 1050798235, 1046256949, 1041649018, 1036831949, 1032554324, 1027481237,
    1023510243, 1018199494, 1014004726, 1008981770, 1004486377, 999823482, 995049016, 990720361, 985686830, 981668463,
    976394426, 972249692, 967166816, 962717863, 957999346,
  ],
  fixture_llama3rope: [1065353216, 1019646896, 999950536, 980350799, 960060705, 940558584, 920588484, 900532135],
};

const bitsToF32 = (bits: number[]) => new Float32Array(Uint32Array.from(bits).buffer);

const LLAMA32: RopeScalingLlama3 = {
  type: 'llama3',
  factor: 32,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192,
};
const LLAMA31: RopeScalingLlama3 = {
  type: 'llama3',
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192,
};
const CONFIGS = [
  { name: 'llama32_1b', headDim: 64, theta: 500000, scaling: LLAMA32 },
  { name: 'llama31_8b', headDim: 128, theta: 500000, scaling: LLAMA31 },
  { name: 'tinyllama', headDim: 64, theta: 10000, scaling: null },
  { name: 'dim48', headDim: 48, theta: 10000, scaling: null },
  // tests/fixtures/reference/mqa-bf16-tied-llama3rope (head_dim 16, original context 32)
  {
    name: 'fixture_llama3rope',
    headDim: 16,
    theta: 500000,
    scaling: { ...LLAMA31, originalMaxPositionEmbeddings: 32 },
  },
];
const refScaling = (s: RopeScalingLlama3 | null) =>
  s ? { factor: s.factor, low: s.lowFreqFactor, high: s.highFreqFactor, orig: s.originalMaxPositionEmbeddings } : null;

describe('rope tables', () => {
  it("'hf-float32' inv_freq matches transformers' float32 arithmetic bit for bit", () => {
    for (const c of CONFIGS) {
      const ours = Float32Array.from(ropeInvFreq({ headDim: c.headDim, theta: c.theta, scaling: c.scaling }));
      expect(Array.from(ours), c.name).toEqual(Array.from(bitsToF32(NUMPY_F32_INV_FREQ_BITS[c.name]!)));
    }
  });

  it('inv_freq with llama3 scaling agrees with the f64 definition', () => {
    for (const c of CONFIGS) {
      const ref = llama3InvFreqRef(c.headDim, c.theta, refScaling(c.scaling));
      // float64 mode: the same math in another order (pow vs exp·log): a few f64 ulp of |e·ln θ| ≤ 14.
      expectClose(
        ropeInvFreq({ headDim: c.headDim, theta: c.theta, scaling: c.scaling, precision: 'float64' }),
        ref,
        { rtol: 1e-13 },
        `${c.name} float64`,
      );
      // hf-float32: the f32 exponent's rounding (2^-25 relative) is amplified by |e·ln θ| ≤ 13.2 in the
      // pow (4e-7), plus ~6 further f32 roundings (4e-7): rtol 1e-6.
      expectClose(
        ropeInvFreq({ headDim: c.headDim, theta: c.theta, scaling: c.scaling }),
        ref,
        { rtol: 1e-6 },
        `${c.name} hf-float32`,
      );
    }
    // The three llama3 bands are all exercised: unchanged, divided by factor, and smoothed.
    const ref = llama3InvFreqRef(128, 500000, refScaling(LLAMA31));
    const base = llama3InvFreqRef(128, 500000, null);
    const kinds = new Set(
      Array.from(ref, (v, i) =>
        v === base[i] ? 'same' : Math.abs(v * 8 - base[i]!) < 1e-12 * base[i]! ? 'scaled' : 'smooth',
      ),
    );
    expect([...kinds].sort()).toEqual(['same', 'scaled', 'smooth']);
  });

  it('cos/sin tables agree with cos(pos·inv_freq) from the definition, and upload unchanged', async () => {
    const maxPositions = 300;
    for (const c of CONFIGS) {
      const inv = llama3InvFreqRef(c.headDim, c.theta, refScaling(c.scaling));
      const half = c.headDim / 2;
      const want = (fn: (a: number) => number) =>
        Float64Array.from({ length: maxPositions * half }, (_, k) => fn(Math.floor(k / half) * inv[k % half]!));
      const opts = { headDim: c.headDim, theta: c.theta, scaling: c.scaling, maxPositions };
      // float64: one f32 rounding of a value ≤ 1 (6e-8) plus the angle's f64 error: atol 1.2e-7.
      const t64 = ropeTableData({ ...opts, precision: 'float64' });
      expectClose(t64.cos, want(Math.cos), { atol: 1.2e-7 }, `${c.name} float64 cos`);
      expectClose(t64.sin, want(Math.sin), { atol: 1.2e-7 }, `${c.name} float64 sin`);
      // hf-float32: the angle pos·inv carries inv's relative error (≤ 1e-6, above) and the f32
      // product's rounding (6e-8): |Δ| ≤ pos·inv·1.1e-6 + 1.2e-7, checked element by element.
      const t32 = ropeTableData(opts);
      const bad: string[] = [];
      for (let k = 0; k < maxPositions * half; k++) {
        const angle = Math.floor(k / half) * inv[k % half]!;
        const bound = angle * 1.1e-6 + 1.2e-7;
        const errC = Math.abs(t32.cos[k]! - Math.cos(angle));
        const errS = Math.abs(t32.sin[k]! - Math.sin(angle));
        if (!(errC <= bound && errS <= bound)) bad.push(`[${k}] cos err ${errC}, sin err ${errS}, bound ${bound}`);
      }
      expect(bad.slice(0, 5), `${c.name} hf-float32 table`).toEqual([]);
      const tables = ropeTables(opts);
      expect(tables.cos.shape).toEqual([maxPositions, half]);
      expect(Array.from(await tables.cos.toFloat32())).toEqual(Array.from(t32.cos));
      expect(Array.from(await tables.sin.toFloat32())).toEqual(Array.from(t32.sin));
      tables.cos.dispose();
      tables.sin.dispose();
    }
  });
});

// The rotation: y = a·c − b·s in f32 has error ≤ ~2 ulp of |a·c| + |b·s| ≤ |a| + |b| (≲ 10 for
// unit-normal inputs): atol 2e-6, rtol 1e-6.
const ROT_TOL = { atol: 2e-6, rtol: 1e-6 };

describe('rope kernel vs float64 reference', () => {
  it('forward and backward on odd shapes with packed (restarting) positions', async () => {
    const rng = testRng('rope');
    const maxPositions = 64;
    // [B, T, H, Dh]: Dh 2 (one pair), 16, 48; heads 1, 3, 5, 12; T prime.
    const shapes: [number, number, number, number][] = [
      [1, 1, 1, 2],
      [2, 5, 3, 16],
      [1, 7, 12, 16],
      [3, 13, 5, 48],
      [1, 3, 2, 130],
    ];
    for (const shape of shapes) {
      const [b, t, h, dh] = shape;
      const tables = ropeTables({ headDim: dh, theta: 10000, scaling: dh === 48 ? LLAMA31 : null, maxPositions });
      const tab = { cos: await tables.cos.toFloat32(), sin: await tables.sin.toFloat32() };
      const n = b * t * h * dh;
      // Packing: each row holds examples whose positions restart at 0; plus one random position.
      const pos = Int32Array.from(
        { length: b * t },
        (_, k) => ((k % t) % 4) + (k % 3 === 2 ? rng.int(maxPositions - 4) : 0),
      );
      const xData = rng.normalArray(n);
      const gData = rng.normalArray(n);
      const x = Tensor.from(xData, shape);
      x.requiresGrad = true;
      const positions = Tensor.from(pos, [b * t]);
      const y = rope(x, positions, tables);
      backward(y, Tensor.from(gData, shape));
      const label = `[${shape}]`;
      expectClose(await y.toFloat32(), ropeRef(xData, pos, h, dh, tab.cos, tab.sin), ROT_TOL, `${label} forward`);
      expectClose(
        await x.grad!.toFloat32(),
        ropeRef(gData, pos, h, dh, tab.cos, tab.sin, true),
        ROT_TOL,
        `${label} backward`,
      );
      // In place (no autograd) gives the same values.
      const xi = Tensor.from(xData, shape);
      const yi = noGrad(() => rope(xi, positions, tables, { inPlace: true }));
      expect(yi).toBe(xi);
      expect(Array.from(await xi.toFloat32())).toEqual(Array.from(await y.toFloat32()));
      tables.cos.dispose();
      tables.sin.dispose();
    }
  });

  it('f16 result (fp16-mixed attention inputs): forward within f16 rounding of the reference, backward the f32 inverse rotation', async () => {
    // The kernel computes each value in f32 (ROT_TOL) and rounds it to f16 once: an extra error of at
    // most u·|y| with u = 2⁻¹¹ (round to nearest, 11-bit significand), stated as rtol.
    const rng = testRng('rope f16');
    const maxPositions = 64;
    for (const shape of [
      [2, 5, 3, 16],
      [1, 7, 5, 4],
      [3, 13, 2, 132],
    ] as [number, number, number, number][]) {
      const [b, t, h, dh] = shape;
      const tables = ropeTables({ headDim: dh, theta: 10000, scaling: null, maxPositions });
      const tab = { cos: await tables.cos.toFloat32(), sin: await tables.sin.toFloat32() };
      const n = b * t * h * dh;
      const pos = Int32Array.from({ length: b * t }, () => rng.int(maxPositions));
      const xData = rng.normalArray(n);
      const gData = rng.normalArray(n);
      const x = Tensor.from(xData, shape);
      x.requiresGrad = true;
      const positions = Tensor.from(pos, [b * t]);
      const y = rope(x, positions, tables, { dtype: 'f16' });
      expect(y.dtype).toBe('f16');
      expect(y.byteSize).toBe(n * 2);
      backward(y, Tensor.from(gData, shape));
      const label = `[${shape}] f16`;
      expectClose(
        await noGrad(() => cast(y, 'f32')).toFloat32(),
        ropeRef(xData, pos, h, dh, tab.cos, tab.sin),
        { atol: ROT_TOL.atol, rtol: ROT_TOL.rtol + 2 ** -11 },
        `${label} forward`,
      );
      expectClose(
        await x.grad!.toFloat32(),
        ropeRef(gData, pos, h, dh, tab.cos, tab.sin, true),
        ROT_TOL,
        `${label} backward`,
      );
      tables.cos.dispose();
      tables.sin.dispose();
    }
    const tables = ropeTables({ headDim: 6, theta: 10000, scaling: null, maxPositions: 4 });
    expect(() =>
      rope(Tensor.from(new Float32Array(12), [1, 2, 1, 6]), Tensor.from(new Int32Array([0, 1]), [2]), tables, {
        dtype: 'f16',
      }),
    ).toThrow(/multiple of 4/);
    tables.cos.dispose();
    tables.sin.dispose();
  });

  for (const dtype of ['f32', 'f16'] as const) {
    it(`a position outside the table poisons only its token with NaN (${dtype} result)`, async () => {
      const rng = testRng(`rope-oob${dtype === 'f16' ? ' f16' : ''}`);
      const tables = ropeTables({ headDim: 8, theta: 10000, scaling: null, maxPositions: 10 });
      const out = rope(
        Tensor.from(rng.normalArray(4 * 2 * 8), [1, 4, 2, 8]),
        Tensor.from(new Int32Array([0, 10, 9, -1]), [4]),
        tables,
        dtype === 'f16' ? { dtype } : {},
      );
      const y = await (dtype === 'f16' ? cast(out, 'f32') : out).toFloat32();
      const tok = (k: number) => Array.from(y.slice(k * 16, (k + 1) * 16));
      expect(tok(1).every(Number.isNaN)).toBe(true);
      expect(tok(3).every(Number.isNaN)).toBe(true);
      expect(tok(0).some(Number.isNaN) || tok(2).some(Number.isNaN)).toBe(false);
      tables.cos.dispose();
      tables.sin.dispose();
    });
  }

  it('inPlace is refused while autograd records for x', () => {
    const tables: RopeTables = ropeTables({ headDim: 4, theta: 10000, scaling: null, maxPositions: 4 });
    const x = Tensor.from(new Float32Array(8), [1, 2, 1, 4]);
    x.requiresGrad = true;
    expect(() => rope(x, Tensor.from(new Int32Array([0, 1]), [2]), tables, { inPlace: true })).toThrow(/inPlace/);
    tables.cos.dispose();
    tables.sin.dispose();
  });

  it('finite differences agree with backward', async () => {
    const rng = testRng('rope-fd');
    const shape = [2, 3, 2, 6];
    const tables = ropeTables({ headDim: 6, theta: 10000, scaling: null, maxPositions: 8 });
    const positions = Tensor.from(new Int32Array([0, 1, 2, 5, 0, 7]), [6]).keep();
    const probe = rng.normalArray(72);
    await gradCheck(
      'rope',
      ([x]) => sumToSuffix(binary('mul', rope(x!, positions, tables), Tensor.from(probe, shape)), [1]),
      [{ data: rng.normalArray(72), shape }],
      rng,
    );
    positions.dispose();
    tables.cos.dispose();
    tables.sin.dispose();
  });
  it('frees every temporary under tidy: no pool growth', async () => {
    const rng = testRng('rope-leak');
    const tables = ropeTables({ headDim: 8, theta: 10000, scaling: null, maxPositions: 4 });
    const x = Tensor.from(rng.normalArray(2 * 3 * 8), [1, 2, 3, 8]).keep();
    const positions = Tensor.from(new Int32Array([0, 3]), [2]).keep();
    x.requiresGrad = true;
    await expectNoGrowth(() => {
      tidy(() => backward(sumToSuffix(rope(x, positions, tables), [1])));
      zeroGrad([x]);
    });
    for (const t of [x, positions, tables.cos, tables.sin]) t.dispose();
  });
});
