// Flash attention benchmarks. FLOPs count the two T×S×Dh matmuls of the forward (4·B·Hq·T·S·Dh) and
// the five of the backward (recomputed QKᵀ, dO·Vᵀ, dV, dQ, dK: 10·B·Hq·T·S·Dh), halved (≈) for
// causal masks since fully masked key blocks are skipped. Bytes for decode: the K/V cache read once
// per query head plus q and out.
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { flashAttentionBackward, flashAttentionForward, type FlashAttentionOptions } from '../../src/kernels/attention.js';
import { registerBench } from '../harness.js';

interface Shape {
  label: string;
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  Dh: number;
  causal: boolean;
  gpuOnly: boolean;
}

function causalFraction(s: Shape): number {
  if (!s.causal) return 1;
  // Visible (i, j) pairs with j ≤ i + (S − T): T·(S − T) + T(T+1)/2, over T·S.
  return (s.T * (s.S - s.T) + (s.T * (s.T + 1)) / 2) / (s.T * s.S);
}

function tensors(s: Shape, seed: number) {
  const rng = new Rng(seed);
  const q = Tensor.from(rng.normalArray(s.B * s.T * s.Hq * s.Dh), [s.B, s.T, s.Hq, s.Dh]).keep();
  const k = Tensor.from(rng.normalArray(s.B * s.S * s.Hkv * s.Dh), [s.B, s.S, s.Hkv, s.Dh]).keep();
  const v = Tensor.from(rng.normalArray(s.B * s.S * s.Hkv * s.Dh), [s.B, s.S, s.Hkv, s.Dh]).keep();
  return { q, k, v };
}

const shapes: Shape[] = [
  { label: 'train B8 T512 Hq32 Hkv4 Dh64 causal', B: 8, T: 512, S: 512, Hq: 32, Hkv: 4, Dh: 64, causal: true, gpuOnly: true },
  { label: 'train B8 T512 Hq32 Hkv4 Dh64 full', B: 8, T: 512, S: 512, Hq: 32, Hkv: 4, Dh: 64, causal: false, gpuOnly: true },
  { label: 'small B1 T64 Hq4 Hkv2 Dh16 causal', B: 1, T: 64, S: 64, Hq: 4, Hkv: 2, Dh: 16, causal: true, gpuOnly: false },
];

for (const s of shapes) {
  const opts: FlashAttentionOptions = { causal: s.causal };
  const work = s.B * s.Hq * s.T * s.S * s.Dh * causalFraction(s);
  registerBench({
    family: 'attention',
    name: `forward ${s.label}`,
    flops: 4 * work,
    gpuOnly: s.gpuOnly,
    async setup() {
      const { q, k, v } = tensors(s, 1);
      return { run: () => void flashAttentionForward(q, k, v, opts, 'tiled'), cleanup: () => [q, k, v].forEach((t) => t.dispose()) };
    },
  });
  registerBench({
    family: 'attention',
    name: `backward ${s.label}`,
    flops: 10 * work,
    gpuOnly: s.gpuOnly,
    async setup() {
      const { q, k, v } = tensors(s, 2);
      const { out, lse } = flashAttentionForward(q, k, v, opts, 'tiled');
      out.keep();
      lse.keep();
      const dOut = Tensor.from(new Rng(3).normalArray(q.numel), q.shape).keep();
      return {
        run: () => void flashAttentionBackward(q, k, v, out, lse, dOut, opts),
        cleanup: () => [q, k, v, out, lse, dOut].forEach((t) => t.dispose()),
      };
    },
  });
}

// Decode: one new token against a KV cache of Smax rows of which S are valid.
for (const [label, B, S, Smax, Hq, Hkv, Dh, gpuOnly] of [
  ['decode B1 S512 Hq32 Hkv4 Dh64', 1, 512, 1024, 32, 4, 64, true],
  ['decode B8 S512 Hq32 Hkv4 Dh64', 8, 512, 1024, 32, 4, 64, true],
  ['decode B1 S100 Hq4 Hkv2 Dh16', 1, 100, 128, 4, 2, 16, false],
] as const) {
  registerBench({
    family: 'attention',
    name: label,
    flops: 4 * B * Hq * S * Dh,
    bytes: 4 * (2 * B * S * Hq * Dh + 2 * B * Hq * Dh),
    gpuOnly,
    async setup() {
      const rng = new Rng(4);
      const q = Tensor.from(rng.normalArray(B * Hq * Dh), [B, 1, Hq, Dh]).keep();
      const k = Tensor.from(rng.normalArray(B * Smax * Hkv * Dh), [B, Smax, Hkv, Dh]).keep();
      const v = Tensor.from(rng.normalArray(B * Smax * Hkv * Dh), [B, Smax, Hkv, Dh]).keep();
      const opts: FlashAttentionOptions = { causal: true, qOffset: S - 1, kvLength: S };
      return { run: () => void flashAttentionForward(q, k, v, opts), cleanup: () => [q, k, v].forEach((t) => t.dispose()) };
    },
  });
}
