// Flash attention benchmarks: every variant of the attention variant table that the chooser would
// consider for a shape (src/kernels/attention.ts ATTENTION_VARIANTS), forward and forward+backward at
// the three training shapes of the GPU summary (TinyLlama B8 T512 Hq32 Hkv4 Dh64; a Llama-3 8B layer
// B1 T4096 Hq32 Hkv8 Dh128; B8 T512 Hq32 Hkv8 Dh128), all causal, and decoding against a long KV cache
// (flash-decoding split layout vs tiled), f32 and f16 K/V. Before timing, each variant's output is
// validated against a float64 reference on sampled rows (cheap enough for the largest shapes); a
// mismatch fails the case. The variant the model would pick gets the case id
// attention.<shape>.fwd / .fwd_bwd, which the GPU summary reads (finllm.attention.<shape>).
// FLOPs count the two T×S×Dh matmuls of the forward (4·B·Hq·T·S·Dh) and the five of the backward
// (recomputed QKᵀ, dO·Vᵀ, dV, dQ, dK: 10·B·Hq·T·S·Dh) over the causally visible pairs (masked key
// blocks are skipped). Decode bytes: the K/V cache read once per kv head, plus q and out.
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/io/dtype.js';
import {
  type AttentionShape,
  type AttentionVariant,
  attentionVariantsFor,
  chooseAttentionVariant,
  deviceAttentionCaps,
  type FlashAttentionOptions,
  flashAttentionBackward,
  flashAttentionForward,
} from '../../src/kernels/attention.js';
import { registerBench } from '../harness.js';

interface Shape {
  /** Summary key, e.g. B8_T512_Hq32_Hkv4_D64. */
  key: string;
  B: number;
  T: number;
  /** Valid KV rows (S ≥ T: queries are the last T positions). */
  S: number;
  /** KV cache rows (≥ S). */
  Sk: number;
  Hq: number;
  Hkv: number;
  Dh: number;
  kvType: 'f32' | 'f16';
  gpuOnly: boolean;
}

const train = (B: number, T: number, Hq: number, Hkv: number, Dh: number, gpuOnly: boolean): Shape => ({
  key: `B${B}_T${T}_Hq${Hq}_Hkv${Hkv}_D${Dh}`,
  B,
  T,
  S: T,
  Sk: T,
  Hq,
  Hkv,
  Dh,
  kvType: 'f32',
  gpuOnly,
});
const decode = (
  B: number,
  S: number,
  Sk: number,
  Hq: number,
  Hkv: number,
  Dh: number,
  kvType: 'f32' | 'f16',
  gpuOnly: boolean,
): Shape => ({
  key: `decode_B${B}_S${S}_Hq${Hq}_Hkv${Hkv}_D${Dh}${kvType === 'f16' ? '_kvf16' : ''}`,
  B,
  T: 1,
  S,
  Sk,
  Hq,
  Hkv,
  Dh,
  kvType,
  gpuOnly,
});

const TRAIN_SHAPES: Shape[] = [
  train(8, 512, 32, 4, 64, true),
  train(1, 4096, 32, 8, 128, true),
  train(8, 512, 32, 8, 128, true),
  train(1, 64, 4, 2, 16, false),
  train(1, 64, 8, 2, 128, false),
];
const DECODE_SHAPES: Shape[] = [
  decode(1, 4096, 4096, 32, 8, 128, 'f32', true),
  decode(1, 4096, 4096, 32, 8, 128, 'f16', true),
  decode(8, 512, 1024, 32, 4, 64, 'f32', true),
  decode(1, 300, 320, 8, 2, 128, 'f32', false),
  decode(1, 300, 320, 8, 2, 128, 'f16', false),
];

/** Visible (i, j) pairs over T·S with query i at position S − T + i (causal). */
function causalFraction(s: Shape): number {
  return (s.T * (s.S - s.T) + (s.T * (s.T + 1)) / 2) / (s.T * s.S);
}

interface Data {
  q: Float32Array;
  k: Float32Array; // as the kernel sees it (f16-rounded when stored in f16)
  v: Float32Array;
  dOut: Float32Array;
  tq: Tensor;
  tk: Tensor;
  tv: Tensor;
  tdOut: Tensor;
  opts: FlashAttentionOptions;
}

function makeData(s: Shape, seed: number): Data {
  const rng = new Rng(seed);
  const q = rng.normalArray(s.B * s.T * s.Hq * s.Dh);
  let k = rng.normalArray(s.B * s.Sk * s.Hkv * s.Dh);
  let v = rng.normalArray(s.B * s.Sk * s.Hkv * s.Dh);
  const dOut = rng.normalArray(q.length);
  const kvTensor = (x: Float32Array) =>
    (s.kvType === 'f32'
      ? Tensor.from(x, [s.B, s.Sk, s.Hkv, s.Dh])
      : Tensor.from(f32ArrayToF16(x), [s.B, s.Sk, s.Hkv, s.Dh], 'f16')
    ).keep();
  const tk = kvTensor(k);
  const tv = kvTensor(v);
  if (s.kvType === 'f16') {
    k = f16ArrayToF32(f32ArrayToF16(k));
    v = f16ArrayToF32(f32ArrayToF16(v));
  }
  return {
    q,
    k,
    v,
    dOut,
    tk,
    tv,
    tq: Tensor.from(q, [s.B, s.T, s.Hq, s.Dh]).keep(),
    tdOut: Tensor.from(dOut, [s.B, s.T, s.Hq, s.Dh]).keep(),
    opts: { causal: true, qOffset: s.S - s.T, kvLength: s.S },
  };
}

const dispose = (d: Data) =>
  [d.tq, d.tk, d.tv, d.tdOut].forEach((t) => {
    t.dispose();
  });

// ---- float64 reference on sampled rows --------------------------------------------------------

const qIdx = (s: Shape, b: number, i: number, h: number) => ((b * s.T + i) * s.Hq + h) * s.Dh;
const kIdx = (s: Shape, b: number, j: number, hk: number) => ((b * s.Sk + j) * s.Hkv + hk) * s.Dh;

/** Probabilities of query row (b, h, i) over its visible keys, from scratch in f64. */
function rowProbs(s: Shape, d: Data, b: number, h: number, i: number): { p: Float64Array; lse: number } {
  const hk = Math.floor(h / (s.Hq / s.Hkv));
  const scale = 1 / Math.sqrt(s.Dh);
  const last = s.S - s.T + i; // causal limit
  const sc = new Float64Array(last + 1);
  let m = -Infinity;
  for (let j = 0; j <= last; j++) {
    let dot = 0;
    for (let e = 0; e < s.Dh; e++) dot += d.q[qIdx(s, b, i, h) + e]! * d.k[kIdx(s, b, j, hk) + e]!;
    sc[j] = scale * dot;
    m = Math.max(m, sc[j]!);
  }
  let sum = 0;
  for (let j = 0; j <= last; j++) sum += Math.exp(sc[j]! - m);
  const lse = m + Math.log(sum);
  return { p: sc.map((x) => Math.exp(x - lse)), lse };
}

function check(label: string, got: number, want: number, tol = 1e-4): void {
  if (!(Math.abs(got - want) <= tol * (1 + Math.abs(want))))
    throw new Error(`attention bench validation: ${label}: got ${got}, reference ${want}`);
}

function sampleRows(rng: Rng, n: number, T: number): number[] {
  return [0, T - 1, ...Array.from({ length: n }, () => rng.int(T))];
}

/** Checks out/lse (and dq/dk/dv when given) on sampled rows against the f64 reference. */
async function validate(
  s: Shape,
  d: Data,
  out: Tensor,
  lse: Tensor,
  grads?: { dq: Tensor; dk: Tensor; dv: Tensor },
): Promise<void> {
  const rng = new Rng(11);
  const o = await out.toFloat32();
  const l = await lse.toFloat32();
  const group = s.Hq / s.Hkv;
  const scale = 1 / Math.sqrt(s.Dh);
  const dq = grads ? await grads.dq.toFloat32() : null;
  for (const i of sampleRows(rng, 6, s.T)) {
    const b = rng.int(s.B);
    const h = rng.int(s.Hq);
    const hk = Math.floor(h / group);
    const { p, lse: ref } = rowProbs(s, d, b, h, i);
    check(`lse[b${b} h${h} i${i}]`, l[(b * s.Hq + h) * s.T + i]!, ref);
    const row = new Float64Array(s.Dh);
    p.forEach((pj, j) => {
      for (let e = 0; e < s.Dh; e++) row[e] += pj * d.v[kIdx(s, b, j, hk) + e]!;
    });
    row.forEach((x, e) => {
      check(`out[b${b} i${i} h${h} d${e}]`, o[qIdx(s, b, i, h) + e]!, x);
    });
    if (!dq) continue;
    // dQ_i = scale Σ_j P_ij (dP_ij − D_i) k_j with dP_ij = dO_i·v_j and D_i = Σ_j P_ij dP_ij.
    const dp = p.map((_, j) => {
      let x = 0;
      for (let e = 0; e < s.Dh; e++) x += d.dOut[qIdx(s, b, i, h) + e]! * d.v[kIdx(s, b, j, hk) + e]!;
      return x;
    });
    const D = p.reduce((acc, pj, j) => acc + pj * dp[j]!, 0);
    const g = new Float64Array(s.Dh);
    p.forEach((pj, j) => {
      for (let e = 0; e < s.Dh; e++) g[e] += scale * pj * (dp[j]! - D) * d.k[kIdx(s, b, j, hk) + e]!;
    });
    g.forEach((x, e) => {
      check(`dq[b${b} i${i} h${h} d${e}]`, dq[qIdx(s, b, i, h) + e]!, x);
    });
  }
  if (!grads) return;
  // dK_j, dV_j sum over every query row of the kv head's group: P_ij from the kernel's lse (checked on
  // the sampled rows above) keeps this O(T·Dh) per key row.
  const dk = await grads.dk.toFloat32();
  const dv = await grads.dv.toFloat32();
  for (const j of sampleRows(rng, 3, s.S)) {
    const b = rng.int(s.B);
    const hk = rng.int(s.Hkv);
    const gk = new Float64Array(s.Dh);
    const gv = new Float64Array(s.Dh);
    for (let h = hk * group; h < (hk + 1) * group; h++)
      for (let i = Math.max(0, j - (s.S - s.T)); i < s.T; i++) {
        let sc = 0;
        let dpij = 0;
        let D = 0;
        for (let e = 0; e < s.Dh; e++) {
          sc += d.q[qIdx(s, b, i, h) + e]! * d.k[kIdx(s, b, j, hk) + e]!;
          dpij += d.dOut[qIdx(s, b, i, h) + e]! * d.v[kIdx(s, b, j, hk) + e]!;
          D += d.dOut[qIdx(s, b, i, h) + e]! * o[qIdx(s, b, i, h) + e]!;
        }
        const pij = Math.exp(scale * sc - l[(b * s.Hq + h) * s.T + i]!);
        for (let e = 0; e < s.Dh; e++) {
          gv[e] += pij * d.dOut[qIdx(s, b, i, h) + e]!;
          gk[e] += scale * pij * (dpij - D) * d.q[qIdx(s, b, i, h) + e]!;
        }
      }
    gk.forEach((x, e) => {
      check(`dk[b${b} j${j} hk${hk} d${e}]`, dk[kIdx(s, b, j, hk) + e]!, x, 1e-3);
    });
    gv.forEach((x, e) => {
      check(`dv[b${b} j${j} hk${hk} d${e}]`, dv[kIdx(s, b, j, hk) + e]!, x, 1e-3);
    });
  }
}

// ---- cases --------------------------------------------------------------------------------------

const shapeFacts = (s: Shape): AttentionShape => ({
  B: s.B,
  T: s.T,
  S: s.S,
  Hq: s.Hq,
  Hkv: s.Hkv,
  Dh: s.Dh,
  qType: 'f32',
  kvType: s.kvType,
});

/** Variants the chooser would consider for the shape on this device (the table's `preferred`), plus its pick. */
function variants(pass: 'forward' | 'backward', s: Shape): { list: AttentionVariant[]; pick: AttentionVariant } {
  const caps = deviceAttentionCaps();
  const facts = shapeFacts(s);
  return {
    list: attentionVariantsFor(pass, facts, caps).filter((v) => v.preferred(facts)),
    pick: chooseAttentionVariant(pass, facts, caps),
  };
}

const shapeLabel = (s: Shape) =>
  `B${s.B} T${s.T}${s.S !== s.T ? ` S${s.S}` : ''} Hq${s.Hq} Hkv${s.Hkv} Dh${s.Dh}${s.kvType === 'f16' ? ' kv f16' : ''} causal`;

for (const s of TRAIN_SHAPES) {
  const work = s.B * s.Hq * s.T * s.S * s.Dh * causalFraction(s);
  // The variant lists depend on the device: each case resolves its variant in setup (or skips).
  for (const role of ['forward', 'fwd+bwd'] as const) {
    // The model's choice goes into the GPU summary (finllm.attention.<shape>, bench/summary.ts).
    const pickId = `attention.${s.key}.${role === 'forward' ? 'fwd' : 'fwd_bwd'}`;
    for (const which of ['sg', 'wg'] as const) {
      registerBench({
        family: 'attention',
        name: `${role} ${which === 'sg' ? 'subgroup' : 'workgroup'} exchange ${shapeLabel(s)}`,
        ids: [pickId],
        flops: (role === 'forward' ? 4 : 14) * work,
        gpuOnly: s.gpuOnly,
        async setup(ctx) {
          const exchange = which === 'sg' ? 'subgroup' : 'workgroup';
          const fwd = variants('forward', s);
          const bwd = variants('backward', s);
          const fv = fwd.list.find((v) => v.layout === 'tiled' && v.exchange === exchange);
          const bv = bwd.list.find((v) => v.exchange === exchange);
          if (!fv || (role === 'fwd+bwd' && !bv)) return { skip: `no ${exchange} variant on this device` };
          const picked = fv.name === fwd.pick.name && (role === 'forward' || bv?.name === bwd.pick.name);
          if (ctx?.wanted && !(picked && ctx.wanted.has(pickId))) return { skip: 'not the variant the model picks' };
          const d = makeData(s, 1);
          const runFwd = () => flashAttentionForward(d.tq, d.tk, d.tv, d.opts, 'tiled', { exchange });
          const runBwd = (out: Tensor, lse: Tensor) =>
            flashAttentionBackward(d.tq, d.tk, d.tv, out, lse, d.tdOut, d.opts, {}, { exchange });
          const { out, lse } = runFwd();
          const g = role === 'fwd+bwd' ? runBwd(out, lse) : null;
          await validate(s, d, out, lse, g ? { dq: g.dq!, dk: g.dk!, dv: g.dv! } : undefined);
          [out, lse, g?.dq, g?.dk, g?.dv].forEach((t) => {
            t?.dispose();
          });
          return {
            ...(picked ? { id: pickId } : {}),
            run: () => {
              const r = runFwd();
              if (role === 'fwd+bwd') runBwd(r.out, r.lse);
            },
            cleanup: () => dispose(d),
          };
        },
      });
    }
  }
}

for (const s of DECODE_SHAPES) {
  for (const layout of ['split', 'tiled'] as const) {
    for (const which of ['sg', 'wg'] as const) {
      registerBench({
        family: 'attention',
        name: `decode ${layout} ${which === 'sg' ? 'subgroup' : 'workgroup'} ${shapeLabel(s)}`,
        flops: 4 * s.B * s.Hq * s.S * s.Dh,
        bytes: (s.kvType === 'f16' ? 2 : 4) * 2 * s.B * s.S * s.Hkv * s.Dh + 4 * 2 * s.B * s.Hq * s.Dh,
        gpuOnly: s.gpuOnly,
        async setup() {
          const exchange = which === 'sg' ? 'subgroup' : 'workgroup';
          if (!variants('forward', s).list.some((v) => v.layout === layout && v.exchange === exchange))
            return { skip: `no ${layout} ${exchange} variant on this device` };
          const d = makeData(s, 4);
          const run = () => flashAttentionForward(d.tq, d.tk, d.tv, d.opts, layout, { exchange });
          const { out, lse } = run();
          await validate(s, d, out, lse);
          out.dispose();
          lse.dispose();
          return { run: () => void run(), cleanup: () => dispose(d) };
        },
      });
    }
  }
}
