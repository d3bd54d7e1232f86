// Flash attention (forward and FlashAttention-2 style backward), f32, no T×S matrix in memory.
//
// Layouts (the natural ones after the q/k/v projections, no transposes):
//   q, out [B, T, Hq, Dh];  k, v [B, Sk, Hkv, Dh] of which the first S = kvLength rows are used (a KV
//   cache may be larger);  lse [B, Hq, T] (natural log, −∞ for a row that sees no key);
//   segmentIds i32 [B·T] (sequence packing, needs T == S).
// Query row i (of T) sees key j (of S) iff  (¬causal ∨ j ≤ i + qOffset) ∧ (¬segments ∨ seg_i = seg_j)
//   ∧ j ≥ kvStart[b] (optional i32 [B], left-padded batched decoding; forward only).
// GQA/MQA: query head h reads kv head h / (Hq/Hkv).
//
// Kernels (one pipeline per head dim and tile shape; causal and segment masking are uniform flags,
// which keeps the number of pipelines — and lavapipe's slow shader compiles — down):
//  - attnForwardTiled: a workgroup owns ROWS query rows of one (b, h); TPR threads per row each hold a
//    slice of q and of the output accumulator in registers. K/V blocks of BK rows are staged in
//    workgroup memory; scores are computed CH keys at a time with an online softmax (running max and
//    sum, log2 domain: q is pre-scaled by scale·log2 e). Key blocks past the causal limit, and blocks
//    whose segment-id range cannot meet the query block's, are skipped (uniformly, whole block).
//  - attnForwardDecode: one workgroup of 128 threads per query row, for small T (generation with a
//    KV cache): each thread scores one key of a 128-key chunk, then groups of Dh threads accumulate
//    P·V over interleaved subsets of the chunk with their own running max/sum; the groups are merged
//    at the end. Reads K rows and V columns straight from global memory (the cache is read once).
//  - attnBackwardDot: D_i = rowsum(dO_i ∘ O_i), the FlashAttention-2 pre-pass.
//  - attnBackwardDq: like the forward, per query block, recomputes P = exp(s − lse) from q, k and lse;
//    dS = P ∘ (dO·vᵀ − D); dQ = scale · dS·K.
//  - attnBackwardDkv: per block of ROWS keys of one (b, kv head), loops over the query heads sharing
//    that kv head and over query blocks staged in workgroup memory (Q, dO, lse, D): dV = Pᵀ·dO,
//    dK = scale · dSᵀ·Q. The GQA sum happens inside one thread's registers: deterministic, no atomics.
//
// When TPR > 1 the slices' partial dot products are summed through workgroup memory (no subgroup
// feature needed). Fully masked rows produce 0 output, lse = −∞ and zero gradients, never NaN:
// invisible keys are excluded by explicit flags, never by −∞ arithmetic.
import { isGradEnabled, recordOp } from '../engine/autograd.js';
import { engine, Tensor } from '../engine/tensor.js';
import { Uniforms, assertDtype, dispatch, grid1d } from './common.js';

export interface FlashAttentionOptions {
  causal: boolean;
  /** Softmax scale; default 1/sqrt(Dh). */
  scale?: number;
  /** i32 [B·T] segment ids for sequence packing (requires T == S): tokens attend only within their segment. */
  segmentIds?: Tensor;
  /** Position of q's first row within the key sequence (decode with a KV cache: the cached length). Default 0. */
  qOffset?: number;
  /** Number of valid k/v rows (default: k.shape[1]); rows past it are never read for scores. */
  kvLength?: number;
  /**
   * i32 [B]: first valid key of each batch row (left-padded batched decoding): keys j < kvStart[b]
   * are invisible to every query of row b. Forward only: using it with autograd throws.
   */
  kvStart?: Tensor;
}

/** Tile overrides, for tests (small tiles make small shapes span many blocks) and tuning. */
export interface AttentionTiles {
  /** Query rows per workgroup (forward, dQ) / key rows per workgroup (dK/dV). */
  rows?: number;
  /** Key rows staged per block (forward, dQ) / query rows staged per block (dK/dV); multiple of 8. */
  block?: number;
}

export type ForwardVariant = 'auto' | 'tiled' | 'decode';

const CH = 8; // keys (or queries) scored per exchange step
const DECODE_THREADS = 128;
/** At or below this many query rows per (b, h), the forward uses the decode kernel. */
const DECODE_MAX_T = 8;
const LOG2E = Math.LOG2E;

interface Dims {
  B: number;
  T: number;
  S: number;
  Sk: number;
  Hq: number;
  Hkv: number;
  Dh: number;
  group: number;
  scale: number;
  qOffset: number;
  causal: boolean;
  seg: Tensor | null;
  kvStart: Tensor | null;
}

function checkInputs(q: Tensor, k: Tensor, v: Tensor, o: FlashAttentionOptions): Dims {
  for (const [t, n] of [[q, 'q'], [k, 'k'], [v, 'v']] as const) {
    assertDtype(t, 'f32', `flashAttention ${n}`);
    if (t.shape.length !== 4) throw new RangeError(`flashAttention: ${n} must be 4-D, got [${t.shape.join(', ')}]`);
  }
  const [B, T, Hq, Dh] = q.shape as [number, number, number, number];
  const [Bk, Sk, Hkv, Dhk] = k.shape as [number, number, number, number];
  if (Bk !== B || Dhk !== Dh) throw new RangeError(`flashAttention: k [${k.shape.join(', ')}] does not match q [${q.shape.join(', ')}] (batch and head dim must agree)`);
  if (v.shape.some((d, i) => d !== k.shape[i])) throw new RangeError(`flashAttention: v [${v.shape.join(', ')}] must have k's shape [${k.shape.join(', ')}]`);
  if (Hkv < 1 || Hq % Hkv !== 0) throw new RangeError(`flashAttention: Hq=${Hq} must be a multiple of Hkv=${Hkv}`);
  if (Dh < 1 || Dh > 128) throw new RangeError(`flashAttention: head dim ${Dh} not supported (1..128)`);
  const S = o.kvLength ?? Sk;
  if (!Number.isInteger(S) || S < 0 || S > Sk) throw new RangeError(`flashAttention: kvLength ${S} outside [0, ${Sk}]`);
  const qOffset = o.qOffset ?? 0;
  if (!Number.isInteger(qOffset)) throw new RangeError(`flashAttention: qOffset must be an integer, got ${qOffset}`);
  let seg: Tensor | null = null;
  if (o.segmentIds) {
    seg = o.segmentIds;
    assertDtype(seg, 'i32', 'flashAttention segmentIds');
    if (T !== S) throw new RangeError(`flashAttention: segmentIds need T == S (packed self-attention), got T=${T}, S=${S}`);
    if (seg.numel !== B * T) throw new RangeError(`flashAttention: segmentIds has ${seg.numel} elements, expected B·T = ${B * T}`);
  }
  let kvStart: Tensor | null = null;
  if (o.kvStart) {
    kvStart = o.kvStart;
    assertDtype(kvStart, 'i32', 'flashAttention kvStart');
    if (kvStart.numel !== B) throw new RangeError(`flashAttention: kvStart has ${kvStart.numel} elements, expected B = ${B}`);
  }
  const scale = o.scale ?? 1 / Math.sqrt(Dh);
  return { B, T, S, Sk, Hq, Hkv, Dh, group: Hq / Hkv, scale, qOffset, causal: o.causal, seg, kvStart };
}

function uniforms(d: Dims, n = 0): Uniforms {
  return new Uniforms()
    .u32(d.T).u32(d.S).u32(d.Sk).u32(d.Hq)
    .u32(d.Hkv).u32(d.group).i32(d.qOffset).f32(d.scale * LOG2E)
    .f32(d.scale).f32(-Infinity).u32(n).u32((d.causal ? 1 : 0) | (d.seg ? 2 : 0) | (d.kvStart ? 4 : 0));
}

const HEADER = /* wgsl */ `
struct P {
  T: u32, S: u32, Sk: u32, Hq: u32,
  Hkv: u32, group: u32, qOffset: i32, scale2: f32,
  scale: f32, negInf: f32, n: u32, flags: u32, // flags: 1 causal, 2 segments, 4 kvStart
}
@group(0) @binding(0) var<uniform> p: P;
const NEG = -3.0e38; // below any finite score: marks "no key seen yet"
const LN2 = 0.6931471805599453;
const LOG2E = 1.4426950408889634;
`;

/** Geometry of one tiled kernel: TPR threads per row, each owning WV vec4 of the (padded) head dim. */
interface Geo {
  DH: number;
  TPR: number;
  WV: number;
  DV: number; // vec4 per padded row
  ROWS: number;
  BLOCK: number;
  NT: number;
}

function geometry(Dh: number, sliceMax: number, rows: number, block: (g: Omit<Geo, 'BLOCK'>) => number): Geo {
  const TPR = Math.ceil(Dh / sliceMax);
  const WV = Math.ceil(Math.ceil(Dh / TPR) / 4);
  const g = { DH: Dh, TPR, WV, DV: TPR * WV, ROWS: rows, NT: rows * TPR };
  return { ...g, BLOCK: block(g) };
}

/** The largest block of rows (multiple of CH, ≤ 64) whose workgroup memory fits the device. */
function pickBlock(bytes: (block: number) => number, override?: number): number {
  if (override !== undefined) {
    if (override % CH !== 0 || override < CH) throw new RangeError(`attention tile block ${override} must be a positive multiple of ${CH}`);
    return override;
  }
  const limit = engine().dev.limits.maxComputeWorkgroupStorageSize;
  for (const b of [64, 32, 16, 8]) if (bytes(b) <= limit) return b;
  throw new RangeError('attention: workgroup memory too small for the smallest tile');
}

function geoConsts(g: Geo): string {
  return `const DH = ${g.DH}u; const TPR = ${g.TPR}u; const WV = ${g.WV}u; const DV = ${g.DV}u;
const ROWS = ${g.ROWS}u; const BLOCK = ${g.BLOCK}u; const NT = ${g.NT}u; const CH = ${CH}u;`;
}

const range = (n: number): number[] => [...Array(n).keys()];
const lines = (n: number, f: (i: number) => string, sep = '\n  '): string => range(n).map(f).join(sep);

// Register arrays are generated as separate scalars/vec4s with every index a constant (q0, q1, …):
// dynamically indexed private arrays become if-ladders in some compilers (lavapipe took minutes to
// compile the loop form), and constant indices let every compiler keep them in registers.

/** WGSL: vec4 load / store of dims d0..d0+3 of a row (zero-padded past DH) for a flat f32 array. */
function rowIo(buf: string, write: boolean): string {
  const ld = `fn ld_${buf}(base: u32, d0: u32) -> vec4f {
  var x = vec4f(0.0);
  ${lines(4, (c) => `if (d0 + ${c}u < DH) { x[${c}] = ${buf}[base + d0 + ${c}u]; }`)}
  return x;
}`;
  const st = `fn st_${buf}(base: u32, d0: u32, x: vec4f) {
  ${lines(4, (c) => `if (d0 + ${c}u < DH) { ${buf}[base + d0 + ${c}u] = x[${c}]; }`)}
}`;
  return write ? st : ld;
}

/** WGSL: declares vec4 registers name0..name{WV-1}. */
function regs(g: Geo, name: string): string {
  return lines(g.WV, (w) => `var ${name}${w} = vec4f(0.0);`);
}

/** WGSL: this thread's slice of a row into registers. */
function loadSlice(g: Geo, dst: string, buf: string, base: string, mul = ''): string {
  return lines(g.WV, (w) => `${dst}${w} = ld_${buf}(${base}, (sl * WV + ${w}u) * 4u)${mul};`);
}

function storeSlice(g: Geo, src: string, buf: string, base: string, mul = ''): string {
  return lines(g.WV, (w) => `st_${buf}(${base}, (sl * WV + ${w}u) * 4u, ${src}${w}${mul});`);
}

/** WGSL expression: partial dot product of registers a* with row `r` of a staged block (base index `kb`). */
function dotRow(g: Geo, a: string, sh: string, r: number): string {
  return range(g.WV).map((w) => `dot(${a}${w}, ${sh}[kb + ${r * g.DV + w}u])`).join(' + ');
}

/** WGSL: acc_w += Σ_r coef_r · sh[row r] for every register of the slice. */
function axpyRows(g: Geo, acc: string, coef: string, sh: string): string {
  return lines(g.WV, (w) => `${acc}${w} += ${range(CH).map((r) => `${coef}${r} * ${sh}[kb + ${r * g.DV + w}u]`).join(' + ')};`);
}

/** WGSL: sums the TPR slices' partial dot products (scalars a0..a{CH-1} per name) through workgroup memory. */
function exchange(g: Geo, names: string[]): string {
  if (g.TPR === 1) return '';
  const n = names.length;
  const put = range(CH).flatMap((r) => names.map((a, k) => `shPart[lid * ${CH * n}u + ${r * n + k}u] = ${a}${r};`));
  const get = range(CH).flatMap((r) =>
    names.map((a, k) => `${a}${r} = ${range(g.TPR).map((t) => `shPart[row * ${g.TPR * CH * n}u + ${t * CH * n + r * n + k}u]`).join(' + ')};`));
  return `${put.join('\n      ')}
      workgroupBarrier();
      ${get.join('\n      ')}
      workgroupBarrier();`;
}

function partDecl(g: Geo, n: number): string {
  return g.TPR > 1 ? `var<workgroup> shPart: array<f32, ${g.NT * CH * n}>;` : '';
}

/** WGSL: lid 0 decides whether a block of `count` rows from `first` shares a segment id with [lo, hi]. */
const SEG_SKIP = /* wgsl */ `
fn segRange(b: u32, first: u32, count: u32) -> vec2i {
  var r = vec2i(2147483647, -2147483647);
  for (var t = first; t < first + count; t++) {
    let s = SEG[b * p.T + t];
    r = vec2i(min(r.x, s), max(r.y, s));
  }
  return r;
}`;

// ---------------------------------------------------------------------------------------------
// Forward, tiled (prefill / training).

function forwardTiledGeo(Dh: number, tiles?: AttentionTiles): Geo {
  return geometry(Dh, 64, tiles?.rows ?? 64, (g) =>
    pickBlock((bk) => 2 * bk * g.DV * 16 + (g.TPR > 1 ? g.NT * CH * 4 : 0) + bk * 4 + 16 + 256, tiles?.block));
}

function forwardTiledKernel(g: Geo): string {
  return /* wgsl */ `${HEADER}
${geoConsts(g)}
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
@group(0) @binding(5) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(6) var<storage, read> SEG: array<i32>;
@group(0) @binding(7) var<storage, read> KVS: array<i32>;
var<workgroup> shK: array<vec4f, ${g.BLOCK * g.DV}>;
var<workgroup> shV: array<vec4f, ${g.BLOCK * g.DV}>;
${partDecl(g, 1)}
var<workgroup> shKSeg: array<i32, ${g.BLOCK}>;
var<workgroup> shSkip: u32;
${SEG_SKIP}
${rowIo('Q', false)}
${rowIo('O', true)}

@compute @workgroup_size(${g.NT})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let CAUSAL = (p.flags & 1u) != 0u; let SEGON = (p.flags & 2u) != 0u;
  let b = wid.z; let h = wid.y; let hk = h / p.group;
  let i0 = wid.x * ROWS;
  let row = lid / TPR; let sl = lid % TPR;
  let i = i0 + row;
  let rowValid = i < p.T;
  let qlim = i32(i) + p.qOffset; // last key this row sees (causal)
  let qbase = ((b * p.T + min(i, p.T - 1u)) * p.Hq + h) * DH;
  ${regs(g, 'q')}
  ${regs(g, 'o')}
  ${loadSlice(g, 'q', 'Q', 'qbase', ' * p.scale2')}
  var m = NEG;
  var l = 0.0;
  let rowsHere = min(ROWS, p.T - i0);
  var kEnd = p.S;
  if (CAUSAL) { kEnd = u32(clamp(i32(i0 + rowsHere) + p.qOffset, 0, i32(p.S))); }
  var mySeg = 0;
  var qRange = vec2i(0, 0);
  if (SEGON) {
    mySeg = SEG[b * p.T + min(i, p.T - 1u)];
    if (lid == 0u) { qRange = segRange(b, i0, rowsHere); }
  }
  // Left padding: keys before this batch row's first valid key are invisible (and their blocks skipped).
  var kStart = 0u;
  if ((p.flags & 4u) != 0u) { kStart = u32(max(KVS[b], 0)); }
  let nkb = (kEnd + BLOCK - 1u) / BLOCK;
  for (var kb0 = kStart / BLOCK; kb0 < nkb; kb0++) {
    let j0 = kb0 * BLOCK;
    if (SEGON) {
      if (lid == 0u) {
        let kr = segRange(b, j0, min(BLOCK, kEnd - j0));
        shSkip = select(0u, 1u, kr.y < qRange.x || kr.x > qRange.y);
      }
      if (workgroupUniformLoad(&shSkip) != 0u) { continue; }
      for (var t = lid; t < BLOCK; t += NT) { shKSeg[t] = SEG[b * p.T + min(j0 + t, p.S - 1u)]; }
    }
    ${STAGE_KV}
    workgroupBarrier();
    for (var c0 = 0u; c0 < BLOCK; c0 += CH) {
      if (j0 + c0 >= kEnd) { break; }
      let kb = c0 * DV + sl * WV;
      ${lines(CH, (r) => `var s${r} = ${dotRow(g, 'q', 'shK', r)};`)}
      ${exchange(g, ['s'])}
      var cmax = NEG;
      ${lines(CH, (r) => `let ok${r} = ${visible(r, 'rowValid', 'j0 + c0', 'qlim', 'shKSeg[c0 + ' + r + 'u]')} && j0 + c0 + ${r}u >= kStart;
      if (ok${r}) { cmax = max(cmax, s${r}); }`)}
      if (cmax > NEG) {
        let mn = max(m, cmax);
        let alpha = exp2(m - mn);
        ${lines(CH, (r) => `let p${r} = select(0.0, exp2(s${r} - mn), ok${r});`)}
        l = l * alpha + ${range(CH).map((r) => `p${r}`).join(' + ')};
        ${lines(g.WV, (w) => `o${w} *= alpha;`)}
        ${axpyRows(g, 'o', 'p', 'shV')}
        m = mn;
      }
    }
    workgroupBarrier();
  }
  if (rowValid) {
    let inv = select(0.0, 1.0 / l, l > 0.0);
    ${storeSlice(g, 'o', 'O', 'qbase', ' * inv')}
    if (sl == 0u) { LSE[(b * p.Hq + h) * p.T + i] = select(p.negInf, (m + log2(l)) * LN2, l > 0.0); }
  }
}`;
}

/** WGSL expression: whether key (first + r) is visible to this thread's query row. */
function visible(r: number, valid: string, first: string, qlim: string, segExpr: string): string {
  return `${valid} && ${first} + ${r}u < kEnd && (!CAUSAL || i32(${first} + ${r}u) <= ${qlim}) && (!SEGON || ${segExpr} == mySeg)`;
}

/** WGSL: stages BLOCK rows of K and V (kv head hk, from key j0) into workgroup memory, zero past S and DH. */
const STAGE_KV = /* wgsl */ `for (var e = lid; e < BLOCK * DV * 4u; e += NT) {
      let jj = e / (DV * 4u); let d = e % (DV * 4u); let j = j0 + jj;
      var kx = 0.0; var vx = 0.0;
      if (j < p.S && d < DH) {
        let gi = ((b * p.Sk + j) * p.Hkv + hk) * DH + d;
        kx = K[gi]; vx = V[gi];
      }
      shK[jj * DV + d / 4u][d % 4u] = kx;
      shV[jj * DV + d / 4u][d % 4u] = vx;
    }`;

// ---------------------------------------------------------------------------------------------
// Forward, decode (few query rows, long KV cache).

function forwardDecodeKernel(Dh: number): string {
  const G = Math.floor(DECODE_THREADS / Dh);
  return /* wgsl */ `${HEADER}
const DH = ${Dh}u; const NT = ${DECODE_THREADS}u; const G = ${G}u;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
@group(0) @binding(5) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(6) var<storage, read> SEG: array<i32>;
@group(0) @binding(7) var<storage, read> KVS: array<i32>;
var<workgroup> shQ: array<f32, DH>;
var<workgroup> shS: array<f32, NT>;
var<workgroup> shO: array<f32, NT>;
var<workgroup> shM: array<f32, G>;
var<workgroup> shL: array<f32, G>;

@compute @workgroup_size(NT)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let CAUSAL = (p.flags & 1u) != 0u; let SEGON = (p.flags & 2u) != 0u;
  let i = wid.x; let h = wid.y; let b = wid.z; let hk = h / p.group;
  let qbase = ((b * p.T + i) * p.Hq + h) * DH;
  for (var d = lid; d < DH; d += NT) { shQ[d] = Q[qbase + d] * p.scale2; }
  var kEnd = p.S;
  if (CAUSAL) { kEnd = u32(clamp(i32(i) + p.qOffset + 1, 0, i32(p.S))); }
  var mySeg = 0;
  if (SEGON) { mySeg = SEG[b * p.T + i]; }
  workgroupBarrier();
  let g = lid / DH; let d = lid % DH; let inGroup = g < G;
  var m = NEG;
  var l = 0.0;
  var acc = 0.0;
  var kStart = 0u; // left padding: keys before the row's first valid key are invisible
  if ((p.flags & 4u) != 0u) { kStart = u32(max(KVS[b], 0)); }
  let nch = (kEnd + NT - 1u) / NT;
  for (var c = kStart / NT; c < nch; c++) {
    let j = c * NT + lid;
    var s = NEG;
    var ok = j < kEnd && j >= kStart;
    if (ok && SEGON) { ok = SEG[b * p.T + j] == mySeg; }
    if (ok) {
      let kb = ((b * p.Sk + j) * p.Hkv + hk) * DH;
      var a = 0.0;
      for (var e = 0u; e < DH; e++) { a += shQ[e] * K[kb + e]; }
      s = a;
    }
    shS[lid] = s;
    workgroupBarrier();
    if (inGroup) {
      var cmax = NEG;
      for (var jj = g; jj < NT; jj += G) { cmax = max(cmax, shS[jj]); }
      if (cmax > NEG) {
        let mn = max(m, cmax);
        let alpha = exp2(m - mn);
        l *= alpha;
        acc *= alpha;
        for (var jj = g; jj < NT; jj += G) {
          let sj = shS[jj];
          if (sj > NEG) {
            let pj = exp2(sj - mn);
            l += pj;
            acc += pj * V[((b * p.Sk + c * NT + jj) * p.Hkv + hk) * DH + d];
          }
        }
        m = mn;
      }
    }
    workgroupBarrier();
  }
  if (inGroup) {
    shO[lid] = acc;
    if (d == 0u) { shM[g] = m; shL[g] = l; }
  }
  workgroupBarrier();
  if (lid < DH) {
    var mm = NEG;
    for (var k = 0u; k < G; k++) { mm = max(mm, shM[k]); }
    var ll = 0.0;
    var oo = 0.0;
    for (var k = 0u; k < G; k++) {
      let f = exp2(shM[k] - mm);
      ll += shL[k] * f;
      oo += shO[k * DH + lid] * f;
    }
    O[qbase + lid] = select(0.0, oo / ll, ll > 0.0);
    if (lid == 0u) { LSE[(b * p.Hq + h) * p.T + i] = select(p.negInf, (mm + log2(ll)) * LN2, ll > 0.0); }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// Backward.

const DOT_KERNEL = /* wgsl */ `${HEADER}
@group(0) @binding(1) var<storage, read> DO: array<f32>;
@group(0) @binding(2) var<storage, read> O: array<f32>;
@group(0) @binding(3) var<storage, read_write> D: array<f32>;
override DH: u32;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let r = gid.x + gid.y * nwg.x * 64u; // row (b, t, h) of [B, T, Hq]
  if (r >= p.n) { return; }
  let h = r % p.Hq; let bt = r / p.Hq; let t = bt % p.T; let b = bt / p.T;
  var s = 0.0;
  for (var d = 0u; d < DH; d++) { s += DO[r * DH + d] * O[r * DH + d]; }
  D[(b * p.Hq + h) * p.T + t] = s;
}`;

function dotKernel(Dh: number): string {
  return DOT_KERNEL.replace('override DH: u32;', `const DH = ${Dh}u;`);
}

function dqGeo(Dh: number, tiles?: AttentionTiles): Geo {
  return geometry(Dh, 32, tiles?.rows ?? 64, (g) =>
    pickBlock((bk) => 2 * bk * g.DV * 16 + (g.TPR > 1 ? g.NT * CH * 8 : 0) + bk * 4 + 16 + 256, tiles?.block));
}

function dqKernel(g: Geo): string {
  return /* wgsl */ `${HEADER}
${geoConsts(g)}
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> DO: array<f32>;
@group(0) @binding(5) var<storage, read> LSE: array<f32>;
@group(0) @binding(6) var<storage, read> DD: array<f32>;
@group(0) @binding(7) var<storage, read_write> DQ: array<f32>;
@group(0) @binding(8) var<storage, read> SEG: array<i32>;
var<workgroup> shK: array<vec4f, ${g.BLOCK * g.DV}>;
var<workgroup> shV: array<vec4f, ${g.BLOCK * g.DV}>;
${partDecl(g, 2)}
var<workgroup> shKSeg: array<i32, ${g.BLOCK}>;
var<workgroup> shSkip: u32;
${SEG_SKIP}
${rowIo('Q', false)}
${rowIo('DO', false)}
${rowIo('DQ', true)}

@compute @workgroup_size(${g.NT})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let CAUSAL = (p.flags & 1u) != 0u; let SEGON = (p.flags & 2u) != 0u;
  let b = wid.z; let h = wid.y; let hk = h / p.group;
  let i0 = wid.x * ROWS;
  let row = lid / TPR; let sl = lid % TPR;
  let i = i0 + row;
  let rowValid = i < p.T;
  let qlim = i32(i) + p.qOffset;
  let ic = min(i, p.T - 1u);
  let qbase = ((b * p.T + ic) * p.Hq + h) * DH;
  ${regs(g, 'q')}
  ${regs(g, 'gr')}
  ${regs(g, 'dq')}
  ${loadSlice(g, 'q', 'Q', 'qbase', ' * p.scale2')}
  ${loadSlice(g, 'gr', 'DO', 'qbase')}
  let lrow = (b * p.Hq + h) * p.T + ic;
  let L2 = LSE[lrow] * LOG2E;
  let Di = DD[lrow];
  let rowsHere = min(ROWS, p.T - i0);
  var kEnd = p.S;
  if (CAUSAL) { kEnd = u32(clamp(i32(i0 + rowsHere) + p.qOffset, 0, i32(p.S))); }
  var mySeg = 0;
  var qRange = vec2i(0, 0);
  if (SEGON) {
    mySeg = SEG[b * p.T + ic];
    if (lid == 0u) { qRange = segRange(b, i0, rowsHere); }
  }
  let nkb = (kEnd + BLOCK - 1u) / BLOCK;
  for (var kb0 = 0u; kb0 < nkb; kb0++) {
    let j0 = kb0 * BLOCK;
    if (SEGON) {
      if (lid == 0u) {
        let kr = segRange(b, j0, min(BLOCK, kEnd - j0));
        shSkip = select(0u, 1u, kr.y < qRange.x || kr.x > qRange.y);
      }
      if (workgroupUniformLoad(&shSkip) != 0u) { continue; }
      for (var t = lid; t < BLOCK; t += NT) { shKSeg[t] = SEG[b * p.T + min(j0 + t, p.S - 1u)]; }
    }
    ${STAGE_KV}
    workgroupBarrier();
    for (var c0 = 0u; c0 < BLOCK; c0 += CH) {
      if (j0 + c0 >= kEnd) { break; }
      let kb = c0 * DV + sl * WV;
      ${lines(CH, (r) => `var s${r} = ${dotRow(g, 'q', 'shK', r)};\n      var dp${r} = ${dotRow(g, 'gr', 'shV', r)};`)}
      ${exchange(g, ['s', 'dp'])}
      ${lines(CH, (r) => `let ds${r} = select(0.0, exp2(s${r} - L2) * (dp${r} - Di), ${visible(r, 'rowValid', 'j0 + c0', 'qlim', 'shKSeg[c0 + ' + r + 'u]')});`)}
      ${axpyRows(g, 'dq', 'ds', 'shK')}
    }
    workgroupBarrier();
  }
  if (rowValid) {
    ${storeSlice(g, 'dq', 'DQ', 'qbase', ' * p.scale')}
  }
}`;
}

function dkvGeo(Dh: number, tiles?: AttentionTiles): Geo {
  return geometry(Dh, 32, tiles?.rows ?? 64, (g) =>
    pickBlock((bq) => 2 * bq * g.DV * 16 + 3 * bq * 4 + (g.TPR > 1 ? g.NT * CH * 8 : 0) + 256, tiles?.block));
}

function dkvKernel(g: Geo): string {
  return /* wgsl */ `${HEADER}
${geoConsts(g)}
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> DO: array<f32>;
@group(0) @binding(5) var<storage, read> LSE: array<f32>;
@group(0) @binding(6) var<storage, read> DD: array<f32>;
@group(0) @binding(7) var<storage, read_write> DK: array<f32>;
@group(0) @binding(8) var<storage, read_write> DVo: array<f32>;
@group(0) @binding(9) var<storage, read> SEG: array<i32>;
var<workgroup> shQ: array<vec4f, ${g.BLOCK * g.DV}>;
var<workgroup> shG: array<vec4f, ${g.BLOCK * g.DV}>;
var<workgroup> shL2: array<f32, ${g.BLOCK}>;
var<workgroup> shD: array<f32, ${g.BLOCK}>;
${partDecl(g, 2)}
var<workgroup> shQSeg: array<i32, ${g.BLOCK}>;
var<workgroup> shSkip: u32;
${SEG_SKIP}
${rowIo('K', false)}
${rowIo('V', false)}
${rowIo('DK', true)}
${rowIo('DVo', true)}

@compute @workgroup_size(${g.NT})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let CAUSAL = (p.flags & 1u) != 0u; let SEGON = (p.flags & 2u) != 0u;
  let b = wid.z; let hk = wid.y;
  let j0 = wid.x * ROWS;
  let row = lid / TPR; let sl = lid % TPR;
  let j = j0 + row;
  let keyValid = j < p.S;
  let kbase = ((b * p.Sk + min(j, p.Sk - 1u)) * p.Hkv + hk) * DH;
  ${regs(g, 'k')}
  ${regs(g, 'v')}
  ${regs(g, 'dk')}
  ${regs(g, 'dv')}
  if (keyValid) {
    ${loadSlice(g, 'k', 'K', 'kbase')}
    ${loadSlice(g, 'v', 'V', 'kbase')}
  }
  // Query blocks that can see some key of this block (uniform over the workgroup).
  let keysHere = select(0u, min(ROWS, p.S - j0), j0 < p.S);
  var qStart = 0u;
  if (CAUSAL) { qStart = u32(max(i32(j0) - p.qOffset, 0)); }
  var nqb = (p.T + BLOCK - 1u) / BLOCK;
  if (keysHere == 0u) { nqb = 0u; }
  var mySeg = 0;
  var kRange = vec2i(0, 0);
  if (SEGON && keysHere > 0u) {
    mySeg = SEG[b * p.T + min(j, p.S - 1u)];
    if (lid == 0u) { kRange = segRange(b, j0, keysHere); }
  }
  for (var hh = 0u; hh < p.group; hh++) {
    let h = hk * p.group + hh;
    for (var qb = qStart / BLOCK; qb < nqb; qb++) {
      let i0 = qb * BLOCK;
      if (SEGON) {
        if (lid == 0u) {
          let qr = segRange(b, i0, min(BLOCK, p.T - i0));
          shSkip = select(0u, 1u, qr.y < kRange.x || qr.x > kRange.y);
        }
        if (workgroupUniformLoad(&shSkip) != 0u) { continue; }
      }
      for (var e = lid; e < BLOCK * DV * 4u; e += NT) {
        let ii = e / (DV * 4u); let d = e % (DV * 4u); let i = i0 + ii;
        var qx = 0.0; var gx = 0.0;
        if (i < p.T && d < DH) {
          let gi = ((b * p.T + i) * p.Hq + h) * DH + d;
          qx = Q[gi]; gx = DO[gi];
        }
        shQ[ii * DV + d / 4u][d % 4u] = qx;
        shG[ii * DV + d / 4u][d % 4u] = gx;
      }
      for (var t = lid; t < BLOCK; t += NT) {
        let i = i0 + t;
        var l2 = 0.0; var dd = 0.0;
        if (i < p.T) { let r = (b * p.Hq + h) * p.T + i; l2 = LSE[r] * LOG2E; dd = DD[r]; }
        shL2[t] = l2; shD[t] = dd;
        if (SEGON) { shQSeg[t] = SEG[b * p.T + min(i, p.T - 1u)]; }
      }
      workgroupBarrier();
      for (var c0 = 0u; c0 < BLOCK; c0 += CH) {
        if (i0 + c0 >= p.T) { break; }
        let kb = c0 * DV + sl * WV;
        ${lines(CH, (r) => `var s${r} = ${dotRow(g, 'k', 'shQ', r)};\n        var dp${r} = ${dotRow(g, 'v', 'shG', r)};`)}
        ${exchange(g, ['s', 'dp'])}
        ${lines(CH, (r) => {
          const vis = `keyValid && i0 + c0 + ${r}u < p.T && (!CAUSAL || i32(j) <= i32(i0 + c0 + ${r}u) + p.qOffset) && (!SEGON || shQSeg[c0 + ${r}u] == mySeg)`;
          return `let ok${r} = ${vis};
        let p${r} = select(0.0, exp2(s${r} * p.scale2 - shL2[c0 + ${r}u]), ok${r});
        let ds${r} = select(0.0, p${r} * (dp${r} - shD[c0 + ${r}u]), ok${r});`;
        }, '\n        ')}
        ${axpyRows(g, 'dv', 'p', 'shG')}
        ${axpyRows(g, 'dk', 'ds', 'shQ')}
      }
      workgroupBarrier();
    }
  }
  if (j < p.Sk) {
    ${storeSlice(g, 'dk', 'DK', 'kbase', ' * p.scale')}
    ${storeSlice(g, 'dv', 'DVo', 'kbase')}
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// Launchers.

let dummySegment: Tensor | null = null;
/** The segment-id binding: the real ids, or a one-element stand-in the kernel never reads (flag off). */
function segBinding(d: Dims): Tensor {
  if (d.seg) return d.seg;
  if (!dummySegment || dummySegment.disposed) dummySegment = Tensor.from(new Int32Array([0]), [1]).keep();
  return dummySegment;
}

let dummyKvStart: Tensor | null = null;
/** The kvStart binding: the real starts, or a one-element stand-in the kernel never reads (flag off). */
function kvStartBinding(d: Dims): Tensor {
  if (d.kvStart) return d.kvStart;
  if (!dummyKvStart || dummyKvStart.disposed) dummyKvStart = Tensor.from(new Int32Array([0]), [1]).keep();
  return dummyKvStart;
}

function geoKey(g: Geo): string {
  return `dh${g.DH}.tpr${g.TPR}.r${g.ROWS}.b${g.BLOCK}`;
}

function pickVariant(d: Dims, variant: ForwardVariant): 'tiled' | 'decode' {
  if (variant !== 'auto') return variant;
  return d.T <= DECODE_MAX_T ? 'decode' : 'tiled';
}

/**
 * Forward attention without autograd: the output [B, T, Hq, Dh] and the logsumexp [B, Hq, T] that
 * backward needs. `variant` picks the kernel (default: decode kernel for T ≤ 8, tiled otherwise).
 */
export function flashAttentionForward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: FlashAttentionOptions,
  variant: ForwardVariant = 'auto',
  tiles?: AttentionTiles,
): { out: Tensor; lse: Tensor } {
  const d = checkInputs(q, k, v, opts);
  return forwardWithDims(d, q, k, v, variant, tiles);
}

function forwardWithDims(d: Dims, q: Tensor, k: Tensor, v: Tensor, variant: ForwardVariant, tiles?: AttentionTiles): { out: Tensor; lse: Tensor } {
  const out = Tensor.empty(q.shape);
  const lse = Tensor.empty([d.B, d.Hq, d.T]);
  if (q.numel === 0) return { out, lse };
  const bufs = [q, k, v, out, lse, segBinding(d), kvStartBinding(d)];
  if (pickVariant(d, variant) === 'decode') {
    dispatch(`attn.fwd.decode.dh${d.Dh}`, () => forwardDecodeKernel(d.Dh), bufs, [d.T, d.Hq, d.B], uniforms(d));
  } else {
    const g = forwardTiledGeo(d.Dh, tiles);
    dispatch(`attn.fwd.tiled.${geoKey(g)}`, () => forwardTiledKernel(g), bufs, [Math.ceil(d.T / g.ROWS), d.Hq, d.B], uniforms(d));
  }
  return { out, lse };
}

/**
 * Gradients of attention from the saved forward (out, lse) and dOut. Returns dq [B, T, Hq, Dh], and
 * dk, dv [B, Sk, Hkv, Dh] (zero in rows ≥ kvLength); pass `want` to skip the ones not needed.
 */
export function flashAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  opts: FlashAttentionOptions,
  want: { dq?: boolean; dkv?: boolean } = {},
  tiles?: AttentionTiles,
): { dq: Tensor | null; dk: Tensor | null; dv: Tensor | null } {
  const d = checkInputs(q, k, v, opts);
  return backwardWithDims(d, q, k, v, out, lse, dOut, want.dq ?? true, want.dkv ?? true, tiles);
}

function backwardWithDims(
  d: Dims, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor, wantDq: boolean, wantDkv: boolean, tiles?: AttentionTiles,
): { dq: Tensor | null; dk: Tensor | null; dv: Tensor | null } {
  if (d.kvStart) throw new RangeError('flashAttention: kvStart (left-padded decoding) has no backward');
  assertDtype(dOut, 'f32', 'flashAttention dOut');
  if (dOut.numel !== q.numel) throw new RangeError(`flashAttention backward: dOut [${dOut.shape.join(', ')}] must match q [${q.shape.join(', ')}]`);
  const rows = d.B * d.T * d.Hq;
  const D = Tensor.empty([d.B, d.Hq, d.T]);
  if (rows > 0) dispatch(`attn.bwd.dot.dh${d.Dh}`, () => dotKernel(d.Dh), [dOut, out, D], grid1d(rows, 64), uniforms(d, rows));
  const segBuf = [segBinding(d)];
  let dq: Tensor | null = null;
  let dk: Tensor | null = null;
  let dv: Tensor | null = null;
  if (wantDq) {
    dq = Tensor.empty(q.shape);
    if (rows > 0) {
      const g = dqGeo(d.Dh, tiles);
      dispatch(`attn.bwd.dq.${geoKey(g)}`, () => dqKernel(g), [q, k, v, dOut, lse, D, dq, ...segBuf], [Math.ceil(d.T / g.ROWS), d.Hq, d.B], uniforms(d));
    }
  }
  if (wantDkv) {
    dk = Tensor.empty(k.shape);
    dv = Tensor.empty(v.shape);
    if (k.numel > 0) {
      const g = dkvGeo(d.Dh, tiles);
      dispatch(`attn.bwd.dkv.${geoKey(g)}`, () => dkvKernel(g), [q, k, v, dOut, lse, D, dk, dv, ...segBuf], [Math.ceil(d.Sk / g.ROWS), d.Hkv, d.B], uniforms(d));
    }
  }
  D.dispose();
  return { dq, dk, dv };
}

/**
 * Scaled dot-product attention softmax(scale·q·kᵀ + mask)·v with causal / segment masking and GQA,
 * differentiable in q, k and v. q [B, T, Hq, Dh]; k, v [B, Sk, Hkv, Dh]; returns [B, T, Hq, Dh].
 */
export function flashAttention(q: Tensor, k: Tensor, v: Tensor, opts: FlashAttentionOptions): Tensor {
  const d = checkInputs(q, k, v, opts);
  if (d.kvStart && isGradEnabled() && [q, k, v].some((t) => t.requiresGrad || t.gradFn !== null)) {
    throw new RangeError('flashAttention: kvStart (left-padded decoding) is forward-only; run it under noGrad');
  }
  const { out, lse } = forwardWithDims(d, q, k, v, 'auto');
  recordOp('flashAttention', [q, k, v], out, (n) => {
    const qs = n.save(q);
    const ks = n.save(k);
    const vs = n.save(v);
    const os = n.save(out);
    const ls = n.save(lse);
    const seg = d.seg ? n.save(d.seg) : null;
    const wantDq = q.requiresGrad || q.gradFn !== null;
    const wantDkv = k.requiresGrad || k.gradFn !== null || v.requiresGrad || v.gradFn !== null;
    return ([g]) => {
      const r = backwardWithDims({ ...d, seg }, qs, ks, vs, os, ls, g!, wantDq, wantDkv);
      return [r.dq, r.dk, r.dv];
    };
  });
  lse.dispose(); // backward holds its own saved view of it
  return out;
}
