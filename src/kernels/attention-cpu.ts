// FlashAttention forward and backward shaped for software adapters (lavapipe: a workgroup's
// invocations run as SIMD loops on one CPU core, split at every barrier). One invocation owns one row
// (a query row in the forward and dQ, a key row in dK/dV) and keeps the whole row's operands and
// accumulators in registers (head dims up to CPU_MAX_DH, the fin presets'); a workgroup is ROWS consecutive rows of one
// (batch, head). The loop over the other side's rows (keys, or queries in dK/dV) has uniform bounds,
// so its K/V (Q/dO) rows are read straight from global memory at addresses uniform over the
// workgroup: one vector load shared by all SIMD lanes, no workgroup staging, no barrier, no exchange
// of partial sums. Rows a lane must not see are masked with selects.
//
// The layouts, uniforms (attention.ts HEADER), masking rules, log2-domain online softmax and the
// results are those of attention.ts, which launches these kernels on software adapters (and where a
// caller asks for them); see there. The forward takes CH keys per step (one rescale of the running
// output per step); the backward recomputes P = exp2(s − lse·log2 e) per (query, key) pair.
import { backwardInputBindings, HEADER, MASK_FLAGS, qkvBindings, visible } from './attention-wgsl.js';
import { type KernelFamily, kernelFamily } from './variants.js';

/**
 * The largest head dim the row-per-invocation kernels take (4 × 8 vec4 of registers per lane in
 * dK/dV). Larger rows make lavapipe's compile of the register arrays take minutes (Dh 128: over
 * 5 min on a loaded 2-core machine); those head dims keep the tiled kernels.
 */
export const CPU_MAX_DH = 32;
/** Rows per workgroup. */
export const CPU_ROWS = 32;
/** Keys per forward step. */
const CH = 4;

export type CpuAttentionKind = 'fwd' | 'dq' | 'dkv';

export interface CpuAttentionSpec {
  kind: CpuAttentionKind;
  /** vec4 per head row (Dh / 4). */
  DV: number;
  ROWS: number;
  qType: 'f32' | 'f16';
  kvType: 'f32' | 'f16';
}

export function cpuAttentionSpec(
  kind: CpuAttentionKind,
  Dh: number,
  qType: 'f32' | 'f16',
  kvType: 'f32' | 'f16',
  rows = CPU_ROWS,
): CpuAttentionSpec {
  if (Dh % 4 !== 0 || Dh < 4 || Dh > CPU_MAX_DH)
    throw new RangeError(
      `attention (software adapter kernels): head dim ${Dh} must be a multiple of 4 in 4..${CPU_MAX_DH}`,
    );
  return { kind, DV: Dh / 4, ROWS: rows, qType, kvType };
}

/** Workgroups of a launch: rows of the query (fwd, dq) or key (dkv) side, heads, batch. */
export function cpuAttentionGrid(
  spec: CpuAttentionSpec,
  d: { B: number; T: number; Sk: number; Hq: number; Hkv: number },
): [number, number, number] {
  return spec.kind === 'dkv' ? [Math.ceil(d.Sk / spec.ROWS), d.Hkv, d.B] : [Math.ceil(d.T / spec.ROWS), d.Hq, d.B];
}

const range = (n: number): number[] => [...Array(n).keys()];

function preamble(s: CpuAttentionSpec): string {
  return `${HEADER}
const DV = ${s.DV}u; const ROWS = ${s.ROWS}u;`;
}

/**
 * WGSL, forward and dQ: this lane's query row i of head h (rowValid: it exists), the keys the
 * workgroup visits (below kHi, the causal limit of its last row; from kLo, the batch row's kvStart,
 * in the forward, the only kernel that takes it), the row's causal limit qlim and its offset qbase.
 */
function queryRowSetup(kvStart: boolean): string {
  const kLo = kvStart
    ? `
  // Keys any row of this workgroup sees (uniform bounds).
  var kLo = 0u;
  if ((p.flags & 4u) != 0u) { kLo = u32(max(KVS[b], 0)); }`
    : '';
  return `${MASK_FLAGS}
  let b = wid.z; let h = wid.y; let hk = h / p.group;
  let i0 = wid.x * ROWS;
  let rowValid = i0 + lid < p.T;
  let i = min(i0 + lid, p.T - 1u);${kLo}
  var kHi = p.S;
  if (CAUSAL) { kHi = u32(clamp(i32(min(i0 + ROWS, p.T)) + p.qOffset, 0, i32(p.S))); }
  let qlim = i32(i) + p.qOffset;
  let qbase = ((b * p.T + i) * p.Hq + h) * DV;`;
}

const ENTRY = `@compute @workgroup_size(ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32)`;

function forwardKernel(s: CpuAttentionSpec): string {
  // Key c of the step: score s_c (log2 domain), visibility ok_c.
  const score = (c: number) => `let j${c} = j0 + ${c}u;
      let kb${c} = ((b * p.Sk + min(j${c}, p.S - 1u)) * p.Hkv + hk) * DV;
      var a${c} = vec4f(0.0);
      for (var w = 0u; w < DV; w++) { a${c} += q[w] * ldK(kb${c} + w); }
      let s${c} = a${c}.x + a${c}.y + a${c}.z + a${c}.w;
      let ok${c} = ${visible({ within: ['rowValid', `j${c} < kHi`], key: `j${c}`, qlim: 'qlim', segment: [`SEG[b * p.T + min(j${c}, p.T - 1u)]`, 'mySeg'] })};
      if (ok${c}) { cmax = max(cmax, s${c}); }`;
  return /* wgsl */ `${preamble(s)}
${qkvBindings(s.qType, s.kvType)}
@group(0) @binding(4) var<storage, read_write> O: array<vec4f>;
@group(0) @binding(5) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(6) var<storage, read> SEG: array<i32>;
@group(0) @binding(7) var<storage, read> KVS: array<i32>;

${ENTRY} {
  ${queryRowSetup(true)}
  var q: array<vec4f, DV>;
  var o: array<vec4f, DV>;
  for (var w = 0u; w < DV; w++) { q[w] = ldQ(qbase + w) * p.scale2; o[w] = vec4f(0.0); }
  var mySeg = 0;
  if (SEGON) { mySeg = SEG[b * p.T + i]; }
  var m = NEG;
  var l = 0.0;
  for (var j0 = kLo; j0 < kHi; j0 += ${CH}u) {
    var cmax = NEG;
    ${range(CH).map(score).join('\n    ')}
    if (cmax > NEG) {
      let mn = max(m, cmax);
      let alpha = exp2(m - mn);
      ${range(CH)
        .map((c) => `let p${c} = select(0.0, exp2(s${c} - mn), ok${c});`)
        .join('\n      ')}
      l = l * alpha + ${range(CH)
        .map((c) => `p${c}`)
        .join(' + ')};
      for (var w = 0u; w < DV; w++) {
        o[w] = o[w] * alpha + ${range(CH)
          .map((c) => `p${c} * ldV(kb${c} + w)`)
          .join(' + ')};
      }
      m = mn;
    }
  }
  if (rowValid) {
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var w = 0u; w < DV; w++) { O[qbase + w] = o[w] * inv; }
    LSE[(b * p.Hq + h) * p.T + i] = select(p.negInf, (m + log2(l)) * LN2, l > 0.0);
  }
}`;
}

function dqKernel(s: CpuAttentionSpec): string {
  return /* wgsl */ `${preamble(s)}
${backwardInputBindings(s.qType, s.kvType)}
@group(0) @binding(7) var<storage, read_write> DQ: array<vec4f>;
@group(0) @binding(8) var<storage, read> SEG: array<i32>;

${ENTRY} {
  ${queryRowSetup(false)}
  var q: array<vec4f, DV>;
  var gr: array<vec4f, DV>;
  var dq: array<vec4f, DV>;
  for (var w = 0u; w < DV; w++) { q[w] = ldQ(qbase + w) * p.scale2; gr[w] = ldDO(qbase + w); dq[w] = vec4f(0.0); }
  let lrow = (b * p.Hq + h) * p.T + i;
  let L2 = LSE[lrow] * LOG2E;
  let Di = DD[lrow];
  var mySeg = 0;
  if (SEGON) { mySeg = SEG[b * p.T + i]; }
  for (var j = 0u; j < kHi; j++) {
    let kb = ((b * p.Sk + j) * p.Hkv + hk) * DV;
    var a = vec4f(0.0);
    var e = vec4f(0.0);
    for (var w = 0u; w < DV; w++) { a += q[w] * ldK(kb + w); e += gr[w] * ldV(kb + w); }
    let ok = ${visible({ within: ['rowValid'], key: 'j', qlim: 'qlim', segment: ['SEG[b * p.T + j]', 'mySeg'] })};
    let ds = select(0.0, exp2(a.x + a.y + a.z + a.w - L2) * (e.x + e.y + e.z + e.w - Di), ok);
    for (var w = 0u; w < DV; w++) { dq[w] += ds * ldK(kb + w); }
  }
  if (rowValid) {
    for (var w = 0u; w < DV; w++) { DQ[qbase + w] = dq[w] * p.scale; }
  }
}`;
}

function dkvKernel(s: CpuAttentionSpec): string {
  return /* wgsl */ `${preamble(s)}
${backwardInputBindings(s.qType, s.kvType)}
@group(0) @binding(7) var<storage, read_write> DK: array<vec4f>;
@group(0) @binding(8) var<storage, read_write> DVo: array<vec4f>;
@group(0) @binding(9) var<storage, read> SEG: array<i32>;

${ENTRY} {
  ${MASK_FLAGS}
  let b = wid.z; let hk = wid.y;
  let key0 = wid.x * ROWS;
  let j = key0 + lid;
  let keyValid = j < p.S;
  let kbase = ((b * p.Sk + min(j, p.Sk - 1u)) * p.Hkv + hk) * DV;
  var k: array<vec4f, DV>;
  var v: array<vec4f, DV>;
  var dk: array<vec4f, DV>;
  var dv: array<vec4f, DV>;
  for (var w = 0u; w < DV; w++) {
    // Rows past kvLength may hold anything (a cache's unwritten rows): never read them.
    k[w] = select(vec4f(0.0), ldK(kbase + w) * p.scale2, keyValid); v[w] = select(vec4f(0.0), ldV(kbase + w), keyValid);
    dk[w] = vec4f(0.0); dv[w] = vec4f(0.0);
  }
  // Query rows that can see some key of this workgroup (uniform bounds).
  var qStart = 0u;
  if (CAUSAL) { qStart = u32(max(i32(key0) - p.qOffset, 0)); }
  var qEnd = p.T;
  if (key0 >= p.S) { qEnd = 0u; }
  var mySeg = 0;
  if (SEGON) { mySeg = SEG[b * p.T + min(j, p.T - 1u)]; }
  for (var hh = 0u; hh < p.group; hh++) {
    let h = hk * p.group + hh;
    for (var i = qStart; i < qEnd; i++) {
      let r = (b * p.Hq + h) * p.T + i;
      let qb = ((b * p.T + i) * p.Hq + h) * DV;
      var a = vec4f(0.0);
      var e = vec4f(0.0);
      for (var w = 0u; w < DV; w++) { a += k[w] * ldQ(qb + w); e += v[w] * ldDO(qb + w); }
      let ok = ${visible({ within: ['keyValid'], key: 'j', qlim: 'i32(i) + p.qOffset', segment: ['SEG[b * p.T + i]', 'mySeg'] })};
      let pr = select(0.0, exp2(a.x + a.y + a.z + a.w - LSE[r] * LOG2E), ok);
      let ds = select(0.0, pr * (e.x + e.y + e.z + e.w - DD[r]), ok);
      for (var w = 0u; w < DV; w++) { dv[w] += pr * ldDO(qb + w); dk[w] += ds * ldQ(qb + w); }
    }
  }
  if (j < p.Sk) {
    for (var w = 0u; w < DV; w++) { DK[kbase + w] = dk[w] * p.scale; DVo[kbase + w] = dv[w]; }
  }
}`;
}

export function cpuAttentionKernel(spec: CpuAttentionSpec): string {
  return spec.kind === 'fwd' ? forwardKernel(spec) : spec.kind === 'dq' ? dqKernel(spec) : dkvKernel(spec);
}

/**
 * One family per kind (keys `attn.cpu.fwd:…`, `attn.cpu.dq:…`, `attn.cpu.dkv:…`); the table is every head
 * dim 4..CPU_MAX_DH × f32 or f16 q/k/v (the backward runs them for training on software adapters, where
 * q, k and v share one dtype) with CPU_ROWS rows per workgroup.
 */
export const cpuAttention: Record<CpuAttentionKind, KernelFamily<CpuAttentionSpec>> = {
  fwd: cpuAttentionFamily('fwd'),
  dq: cpuAttentionFamily('dq'),
  dkv: cpuAttentionFamily('dkv'),
};

function cpuAttentionFamily(kind: CpuAttentionKind): KernelFamily<CpuAttentionSpec> {
  return kernelFamily<CpuAttentionSpec>({
    family: `attn.cpu.${kind}`,
    specs: () =>
      range(CPU_MAX_DH / 4).flatMap((i) =>
        (['f32', 'f16'] as const).map((type) => cpuAttentionSpec(kind, 4 * (i + 1), type, type)),
      ),
    code: cpuAttentionKernel,
    name: (s) => `Dh=${4 * s.DV} ${s.qType}`,
  });
}
