// loraLinear benchmark cases (base GEMM with the fused LoRA prologue, down-projection, the
// gradients), validated before timing on sampled elements of y (forward) and dX, dA, dB
// (forward + backward) against float64 sums computed here from the definition (PEFT semantics,
// dropout mask from the same hash). Tolerance per element: (terms + 8)·2⁻²⁴·Σ|terms| in fp32; in
// fp16-mixed additionally 8·2⁻¹⁰·Σ|terms| (every GEMM operand rounded to f16, at most two GEMMs
// chained). Exact bounds live in the kernel tests; here a wrong kernel must not be timed.

import { dropoutKeepRef } from '../../reference/lora.js';
import { backward } from '../../src/engine/autograd.js';
import { type Precision, withPrecision } from '../../src/engine/precision.js';
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { loraLinear } from '../../src/kernels/lora.js';
import { dequantizeNf4, disposeNf4, keepNf4, type Nf4Weight, quantizeNf4 } from '../../src/kernels/nf4.js';
import { registerBench } from '../harness.js';
import { samplePoints } from '../validate.js';
import { hostTensor } from './matmul.js';

// [M, in, out, r, gpuOnly]: the training shape (batch 8 × 512 tokens, q_proj of a 1B model) and a lavapipe one.
const cases: [number, number, number, number, boolean][] = [
  [8 * 512, 2048, 2048, 16, true],
  [64, 256, 256, 8, false],
];
const P = 0.05;
const SCALE = 2;

interface Host {
  M: number;
  K: number;
  N: number;
  r: number;
  seed: number;
  x: Float32Array;
  w: Float32Array;
  a: Float32Array;
  b: Float32Array;
  g: Float32Array;
}

/** Checks sampled elements of `got` ([rows, cols]) against value/absSum functions. */
function check(
  label: string,
  got: Float32Array,
  rows: number,
  cols: number,
  terms: number,
  f16: boolean,
  at: (i: number, j: number) => [number, number],
): string | null {
  for (const [i, j] of samplePoints(rows, cols, 24)) {
    const [v, mag] = at(i, j);
    const tol = ((terms + 8) * 2 ** -24 + (f16 ? 8 * 2 ** -10 : 0)) * mag + 1e-30;
    const e = Math.abs(got[i * cols + j]! - v);
    if (!(e <= tol)) return `${label}[${i}, ${j}] got ${got[i * cols + j]} want ${v} (tol ${tol.toExponential(2)})`;
  }
  return null;
}

/** f64 references of y, dX, dA, dB at sampled elements (lazily computing u and gu rows). */
async function validateLora(
  h: Host,
  f16: boolean,
  y: Float32Array,
  grads: { dx: Float32Array; dA: Float32Array; dB: Float32Array } | null,
): Promise<string | null> {
  const { M, K, N, r, seed } = h;
  const keep = (m: number, k: number) => (dropoutKeepRef(seed, m * K + k, P) ? 1 / (1 - P) : 0);
  const uRow = (m: number): [number[], number[]] => {
    const u: number[] = [];
    const ua: number[] = [];
    for (let j = 0; j < r; j++) {
      let s = 0,
        sa = 0;
      for (let k = 0; k < K; k++) {
        const t = h.x[m * K + k]! * keep(m, k) * h.a[j * K + k]!;
        s += t;
        sa += Math.abs(t);
      }
      u.push(s);
      ua.push(sa);
    }
    return [u, ua];
  };
  const bad = check('y', y, M, N, 2 * K + r, f16, (m, n) => {
    const [u, ua] = uRow(m);
    let s = 0,
      sa = 0;
    for (let k = 0; k < K; k++) {
      const t = h.x[m * K + k]! * h.w[n * K + k]!;
      s += t;
      sa += Math.abs(t);
    }
    for (let j = 0; j < r; j++) {
      s += SCALE * u[j]! * h.b[n * r + j]!;
      sa += SCALE * ua[j]! * Math.abs(h.b[n * r + j]!);
    }
    return [s, sa];
  });
  if (bad || !grads) return bad;
  const gu = new Float64Array(M * r);
  const gua = new Float64Array(M * r);
  for (let m = 0; m < M; m++)
    for (let j = 0; j < r; j++) {
      let s = 0,
        sa = 0;
      for (let n = 0; n < N; n++) {
        const t = h.g[m * N + n]! * h.b[n * r + j]!;
        s += t;
        sa += Math.abs(t);
      }
      gu[m * r + j] = SCALE * s;
      gua[m * r + j] = SCALE * sa;
    }
  const dA = check('dA', grads.dA, r, K, M + N, f16, (j, k) => {
    let s = 0,
      sa = 0;
    for (let m = 0; m < M; m++) {
      const xv = h.x[m * K + k]! * keep(m, k);
      s += gu[m * r + j]! * xv;
      sa += gua[m * r + j]! * Math.abs(xv);
    }
    return [s, sa];
  });
  if (dA) return dA;
  const us = new Map<number, [number[], number[]]>();
  const dB = check('dB', grads.dB, N, r, M + K, f16, (n, j) => {
    let s = 0,
      sa = 0;
    for (let m = 0; m < M; m++) {
      if (!us.has(m)) us.set(m, uRow(m));
      const [u, ua] = us.get(m)!;
      s += h.g[m * N + n]! * u[j]!;
      sa += Math.abs(h.g[m * N + n]!) * ua[j]!;
    }
    return [SCALE * s, SCALE * sa];
  });
  if (dB) return dB;
  return check('dX', grads.dx, M, K, 2 * N + r, f16, (m, k) => {
    let s = 0,
      sa = 0;
    for (let n = 0; n < N; n++) {
      const t = h.g[m * N + n]! * h.w[n * K + k]!;
      s += t;
      sa += Math.abs(t);
    }
    for (let j = 0; j < r; j++) {
      const t = gu[m * r + j]! * h.a[j * K + k]! * keep(m, k);
      s += t;
      sa += gua[m * r + j]! * Math.abs(h.a[j * K + k]!) * keep(m, k);
    }
    return [s, sa];
  });
}

for (const [M, K, N, r, gpuOnly] of cases) {
  for (const base of ['nf4', 'f32'] as const) {
    for (const precision of ['fp32', 'fp16-mixed'] as Precision[]) {
      for (const withBackward of [false, true]) {
        // forward: base 2MKN + LoRA 2Mr(K+N); backward adds dX (2MKN) and the LoRA grads (≈ 3·2Mr(K+N))
        const flops = 2 * M * K * N + 2 * M * r * (K + N) + (withBackward ? 2 * M * K * N + 6 * M * r * (K + N) : 0);
        registerBench({
          family: 'lora',
          name: `loraLinear ${base} base ${withBackward ? 'fwd+bwd' : 'fwd'} ${M}x${K}->${N} r=${r} dropout ${P} ${precision}`,
          flops,
          gpuOnly,
          ...(precision === 'fp16-mixed' ? { needs: ['shader-f16' as const] } : {}),
          async setup() {
            const rng = new Rng(7);
            const wf = hostTensor(rng, [N, K], 'f32', 0.02);
            let w: Tensor | Nf4Weight = wf.t;
            let wValues = wf.values;
            if (base === 'nf4') {
              w = keepNf4(quantizeNf4(wf.t));
              wValues = await dequantizeNf4(w).toFloat32(); // exact code·absmax (tested in nf4.test.ts)
              wf.t.dispose();
            }
            const x = hostTensor(rng, [M, K]);
            const g = hostTensor(rng, [M, N]);
            const A = hostTensor(rng, [r, K], 'f32', 0.02);
            const B = hostTensor(rng, [N, r], 'f32', 0.02);
            A.t.requiresGrad = withBackward;
            B.t.requiresGrad = withBackward;
            x.t.requiresGrad = withBackward;
            let seed = 1;
            const step = (s: number) =>
              withPrecision(precision, () => {
                const y = loraLinear(x.t, w, A.t, B.t, SCALE, { dropout: P, seed: s });
                if (withBackward) backward(y, g.t);
                return y;
              });
            const clear = () => {
              for (const t of [x.t, A.t, B.t]) {
                t.grad?.dispose();
                t.grad = null;
              }
            };
            return {
              run: () => {
                step(seed++);
                clear();
              },
              cleanup: () => {
                if (w instanceof Tensor) w.dispose();
                else disposeNf4(w);
                for (const t of [x.t, g.t, A.t, B.t]) t.dispose();
              },
              validate: async () => {
                const y = step(12345);
                const grads = withBackward
                  ? {
                      dx: await x.t.grad!.toFloat32(),
                      dA: await A.t.grad!.toFloat32(),
                      dB: await B.t.grad!.toFloat32(),
                    }
                  : null;
                const problem = await validateLora(
                  { M, K, N, r, seed: 12345, x: x.values, w: wValues, a: A.values, b: B.values, g: g.values },
                  precision === 'fp16-mixed',
                  await y.toFloat32(),
                  grads,
                );
                y.dispose();
                clear();
                return problem;
              },
            };
          },
        });
      }
    }
  }
}
