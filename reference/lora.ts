// Float64 reference for LoRA (PEFT semantics), written from the math:
//   y  = x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ,   drop(x)[m,k] = keep(m,k) ? x[m,k]/(1−p) : 0
//   gu = s·g·B;  dA = guᵀ·drop(x);  dB = s·gᵀ·(drop(x)·Aᵀ);  dX = g·W + keep ⊙ (gu·A)/(1−p)
// keep(m, k) is the GPU hash stream: hashUniform(seed, m·K + k) ≥ p (p as f32).
import { hashUniform } from '../src/engine/random.js';

export interface LoraRefInput {
  M: number;
  K: number;
  N: number;
  r: number;
  x: ArrayLike<number>;
  w: ArrayLike<number>; // [N, K]
  a: ArrayLike<number>; // [r, K]
  b: ArrayLike<number>; // [N, r]
  g: ArrayLike<number>; // [M, N]
  scale: number;
  dropout: number;
  seed: number;
}

export interface LoraRefOutput {
  y: Float64Array;
  dx: Float64Array;
  dA: Float64Array;
  dB: Float64Array;
}

export function dropoutKeepRef(seed: number, index: number, p: number): boolean {
  return p === 0 || hashUniform(seed, index) >= Math.fround(p);
}

export function loraRef(inp: LoraRefInput, abs = false): LoraRefOutput {
  const { M, K, N, r, scale: s, dropout: p, seed } = inp;
  const v = (a: ArrayLike<number>, i: number) => (abs ? Math.abs(a[i]!) : a[i]!);
  const inv = 1 / (1 - p);
  const dx0 = new Float64Array(M * K);
  for (let i = 0; i < M * K; i++) dx0[i] = dropoutKeepRef(seed, i, p) ? v(inp.x, i) * inv : 0;
  const u = new Float64Array(M * r);
  for (let m = 0; m < M; m++)
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += dx0[m * K + k]! * v(inp.a, j * K + k);
      u[m * r + j] = acc;
    }
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let base = 0;
      for (let k = 0; k < K; k++) base += v(inp.x, m * K + k) * v(inp.w, n * K + k);
      let low = 0;
      for (let j = 0; j < r; j++) low += u[m * r + j]! * v(inp.b, n * r + j);
      y[m * N + n] = base + s * low;
    }
  const gu = new Float64Array(M * r);
  for (let m = 0; m < M; m++)
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let n = 0; n < N; n++) acc += v(inp.g, m * N + n) * v(inp.b, n * r + j);
      gu[m * r + j] = s * acc;
    }
  const dA = new Float64Array(r * K);
  for (let j = 0; j < r; j++)
    for (let k = 0; k < K; k++) {
      let acc = 0;
      for (let m = 0; m < M; m++) acc += gu[m * r + j]! * dx0[m * K + k]!;
      dA[j * K + k] = acc;
    }
  const dB = new Float64Array(N * r);
  for (let n = 0; n < N; n++)
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let m = 0; m < M; m++) acc += v(inp.g, m * N + n) * u[m * r + j]!;
      dB[n * r + j] = s * acc;
    }
  const dx = new Float64Array(M * K);
  for (let m = 0; m < M; m++)
    for (let k = 0; k < K; k++) {
      let base = 0;
      for (let n = 0; n < N; n++) base += v(inp.g, m * N + n) * v(inp.w, n * K + k);
      let low = 0;
      for (let j = 0; j < r; j++) low += gu[m * r + j]! * v(inp.a, j * K + k);
      dx[m * K + k] = base + (dropoutKeepRef(seed, m * K + k, p) ? low * inv : 0);
    }
  return { y, dx, dA, dB };
}
