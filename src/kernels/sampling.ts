// Next-token selection on the GPU: logit processors and the draw, one workgroup per batch row, so
// decoding reads back one token id per row instead of the [B, V] logits.
//
// Per row, in transformers' order (and the order of the CPU reference in reference/sampling.ts):
//   logit bias (OpenAI logit_bias: added to listed ids)
//   → repetition penalty over the tokens seen (prompt + generated): v < 0 ? v·r : v / r
//   → presence / frequency penalties over the generated tokens: v − (presence + frequency·count)
//   → greedy: the first maximum (torch.argmax);
//     sampling: temperature → top-k (values below the k-th largest removed; ties with it stay)
//     → top-p (ascending by value, ties by index: drop while the cumulative probability ≤ 1 − p,
//       the most likely token always stays) → the first token, in index order, whose cumulative
//       probability exceeds the draw u.
// The draw of row b's t-th generated token is u = rand_uniform(seed_b, t) (engine/random.ts: the
// CPU twin is hashUniform), so a row's samples depend only on its seed and position, not on the
// batch it runs in. The kernel keeps per-row state on the GPU: the draw counter t, a bitmask of
// the seen tokens and, when a row uses presence/frequency penalties, counts of generated tokens;
// the chosen token updates all three. Nothing per step comes from the CPU.
//
// Arithmetic. Comparisons (argmax, top-k, top-p membership) run on the processed f32 logits. The
// repetition penalty's division is correctly rounded (integer long division, as the NF4 quantizer
// does), products and sums are f32 (correctly rounded in WGSL), so processed logits equal the CPU
// reference's f32 values bit for bit when bias and penalties are f32 values and
// presence + frequency·count is exact in f32 (greedy decoding then picks the same token). The
// probabilities exp((v − max) / T) and their sums are f32 where the reference uses f64: a sampled
// token can differ only when u, or 1 − p, lies within f32 rounding (~1e-6 relative) of a boundary.
//
// Passes inside the kernel (workgroup barriers between them, V = vocabulary):
//   1 copy the logits to scratch, add the bias entries, apply the penalties, first/last argmax;
//   2 top-k: 32 rounds of bisection on the order-preserving u32 key of the value, each counting
//     keys ≥ the candidate (integer counts: exact);
//   3 top-p: 32 rounds of bisection on the key finding the largest K with mass(key < K) ≤ (1 − p)·Z,
//     then a prefix scan in index order over the values equal to that key (the tie order);
//   4 the draw: chunked prefix sums in index order over the kept tokens, goal u·Z.
// Greedy rows stop after pass 1. A row whose logits hold a NaN or +inf (the forward overflowed)
// gets the id −1 and keeps its state: sampling from such logits would emit garbage silently.

import { WGSL_RANDOM } from '../engine/random.js';
import { engine, Tensor } from '../engine/tensor.js';
import { assertDtype, Uniforms } from './common.js';
import { WGSL_DIV_RN } from './nf4.js';
import { kernelFamily } from './variants.js';

const WG = 256;

/** WGSL: `name(lid, v)`, the tree reduction of v over the workgroup, returned uniform to every thread. */
function reduction(
  name: string,
  type: 'f32' | 'u32',
  red: string,
  bc: string,
  combine: (a: string, b: string) => string,
): string {
  return /* wgsl */ `
fn ${name}(lid: u32, v: ${type}) -> ${type} {
  ${red}[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { ${red}[lid] = ${combine(`${red}[lid]`, `${red}[lid + s]`)}; }
    workgroupBarrier();
  }
  if (lid == 0u) { ${bc} = ${red}[0]; }
  return workgroupUniformLoad(&${bc});
}`;
}

/** Row flags of the kernel's parameter table. */
const FLAG_SAMPLE = 1;
const FLAG_REPETITION = 2;
const FLAG_PRESENCE = 4;
const FLAG_ACTIVE = 8;
/** u32 words per row in the parameter table. */
const ROW_WORDS = 12;

/**
 * Passes 2–4 (top-k, top-p, the draw), compiled only when some row samples: the greedy-only kernel
 * compiles in ~2 s of CPU on lavapipe, the full one in ~14 s.
 */
const SAMPLING_BLOCK = /* wgsl */ `
  if ((r.flags & ${FLAG_SAMPLE}u) != 0u) {
    let m = SCRATCH[base + firstMax];
    let invT = 1.0 / r.temperature;
    // Pass 2: top-k threshold key (the k-th largest value's key); 0 keeps everything.
    var kKey = 0u;
    if (r.top_k > 0u && r.top_k < V) {
      for (var bit = 31i; bit >= 0i; bit--) {
        let cand = kKey | (1u << u32(bit));
        var c = 0u;
        for (var i = lid; i < V; i += WG) { c += u32(key_of(SCRATCH[base + i]) >= cand); }
        if (sum_u(lid, c) >= r.top_k) { kKey = cand; }
      }
    }
    // Pass 3: top-p. Kept tokens: key ≥ kKey. Z = their mass; remove the ascending prefix whose
    // cumulative mass is ≤ (1 − p)·Z.
    var pKey = 0u;
    var tieStart = 0u;
    if (r.top_p < 1.0) {
      var z = 0.0;
      for (var i = lid; i < V; i += WG) {
        let v = SCRATCH[base + i];
        if (key_of(v) >= kKey) { z += exp((v - m) * invT); }
      }
      let thr = (1.0 - r.top_p) * sum_f(lid, z);
      // Largest K with mass(kept, key < K) ≤ thr.
      var below = 0.0;
      for (var bit = 31i; bit >= 0i; bit--) {
        let cand = pKey | (1u << u32(bit));
        var s = 0.0;
        for (var i = lid; i < V; i += WG) {
          let v = SCRATCH[base + i];
          let k = key_of(v);
          if (k >= kKey && k < cand) { s += exp((v - m) * invT); }
        }
        let tot = sum_f(lid, s);
        if (tot <= thr) { pKey = cand; below = tot; }
      }
      // Tokens with key == pKey, in index order: removed while below + their running mass ≤ thr.
      let chunk = (V + WG - 1u) / WG;
      let c0 = min(V, lid * chunk);
      let c1 = min(V, c0 + chunk);
      var tie = 0.0;
      for (var i = c0; i < c1; i++) {
        let v = SCRATCH[base + i];
        if (key_of(v) == pKey && pKey >= kKey) { tie += exp((v - m) * invT); }
      }
      var run = below + scan_f(lid, tie) - tie;
      var firstKept = 0xffffffffu;
      for (var i = c0; i < c1; i++) {
        let v = SCRATCH[base + i];
        if (key_of(v) == pKey && pKey >= kKey) {
          run += exp((v - m) * invT);
          if (run > thr && firstKept == 0xffffffffu) { firstKept = i; }
        }
      }
      tieStart = min_u(lid, firstKept);
    }
    // Pass 4: the draw over kept tokens, in index order.
    let chunk = (V + WG - 1u) / WG;
    let c0 = min(V, lid * chunk);
    let c1 = min(V, c0 + chunk);
    var part = 0.0;
    for (var i = c0; i < c1; i++) {
      let v = SCRATCH[base + i];
      let k = key_of(v);
      let keep = k >= kKey && (k > pKey || (k == pKey && i >= tieStart) || i == lastMax);
      if (keep) { part += exp((v - m) * invT); }
    }
    let incl = scan_f(lid, part);
    if (lid == WG - 1u) { bc_f = incl; }
    let total = workgroupUniformLoad(&bc_f);
    let u = rand_uniform(r.seed, STEP[b]);
    let goal = u * total;
    var pick = 0xffffffffu;
    var lastKept = 0u;
    var any = 0u;
    var run = incl - part;
    for (var i = c0; i < c1; i++) {
      let v = SCRATCH[base + i];
      let k = key_of(v);
      let keep = k >= kKey && (k > pKey || (k == pKey && i >= tieStart) || i == lastMax);
      if (keep) {
        run += exp((v - m) * invT);
        lastKept = i;
        any = 1u;
        if (run > goal && pick == 0xffffffffu) { pick = i; }
      }
    }
    let picked = min_u(lid, pick);
    let fallback = max_u(lid, select(0u, lastKept, any == 1u));
    token = select(fallback, picked, picked != 0xffffffffu);
  }

`;

function kernel({ sample: sampling }: NextTokenSpec): string {
  return /* wgsl */ `
struct P { V: u32, words: u32, counts_on: u32, _pad: u32 }
struct Row {
  flags: u32, temperature: f32, top_k: u32, top_p: f32,
  repetition: f32, presence: f32, frequency: f32, seed: u32,
  bias_start: u32, bias_count: u32, pad_id: i32, _pad: u32,
}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> LOGITS: array<f32>;
@group(0) @binding(2) var<storage, read> ROWS: array<Row>;
@group(0) @binding(3) var<storage, read> BIAS: array<vec2u>;
@group(0) @binding(4) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(5) var<storage, read_write> SEEN: array<u32>;
@group(0) @binding(6) var<storage, read_write> COUNTS: array<u32>;
@group(0) @binding(7) var<storage, read_write> SCRATCH: array<f32>;
@group(0) @binding(8) var<storage, read_write> OUT: array<i32>;
${WGSL_RANDOM}${WGSL_DIV_RN}
const WG = ${WG}u;
var<workgroup> red_f: array<f32, ${WG}>;
var<workgroup> red_u: array<u32, ${WG}>;
var<workgroup> red_v: array<u32, ${WG}>;
var<workgroup> bc_f: f32;
var<workgroup> bc_u: u32;

fn key_of(v: f32) -> u32 {
  if (v == 0.0) { return 0x80000000u; } // -0 and +0 compare equal, as in the reference
  let b = bitcast<u32>(v);
  return select(b ^ 0x80000000u, ~b, (b >> 31u) == 1u);
}

${reduction('sum_f', 'f32', 'red_f', 'bc_f', (a, b) => `${a} + ${b}`)}
${reduction('sum_u', 'u32', 'red_u', 'bc_u', (a, b) => `${a} + ${b}`)}
${reduction('min_u', 'u32', 'red_u', 'bc_u', (a, b) => `min(${a}, ${b})`)}
${reduction('max_u', 'u32', 'red_u', 'bc_u', (a, b) => `max(${a}, ${b})`)}

/** Inclusive prefix sum over the threads (Hillis–Steele in workgroup memory, fixed order). */
fn scan_f(lid: u32, v: f32) -> f32 {
  red_f[lid] = v;
  workgroupBarrier();
  for (var s = 1u; s < WG; s <<= 1u) {
    var add = 0.0;
    if (lid >= s) { add = red_f[lid - s]; }
    workgroupBarrier();
    red_f[lid] += add;
    workgroupBarrier();
  }
  let r = red_f[lid];
  workgroupBarrier();
  return r;
}

/** Repetition penalty: v·r for v < 0, else v / r correctly rounded (as the f64 reference rounds). */
fn penalize(v: f32, r: f32) -> f32 {
  if (v < 0.0) { return v * r; }
  if (v == 0.0 || v > 3.4e38) { return v / r; }
  return div_rn(v, r);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.x;
  let r = ROWS[b];
  if ((r.flags & ${FLAG_ACTIVE}u) == 0u) {
    if (lid == 0u) { OUT[b] = r.pad_id; }
    return;
  }
  let V = p.V;
  let base = b * V;
  let seen_base = b * p.words;

  // Pass 1: processed logits → SCRATCH.
  var bad = 0u; // a NaN or +inf logit: the forward overflowed
  for (var i = lid; i < V; i += WG) {
    let raw = LOGITS[base + i];
    let bits = bitcast<u32>(raw);
    if ((bits & 0x7fffffffu) > 0x7f800000u || bits == 0x7f800000u) { bad = 1u; }
    SCRATCH[base + i] = raw;
  }
  storageBarrier();
  for (var j = lid; j < r.bias_count; j += WG) {
    let e = BIAS[r.bias_start + j];
    if (e.x < V) { SCRATCH[base + e.x] = SCRATCH[base + e.x] + bitcast<f32>(e.y); }
  }
  storageBarrier();
  let rep = (r.flags & ${FLAG_REPETITION}u) != 0u;
  let pres = (r.flags & ${FLAG_PRESENCE}u) != 0u && p.counts_on != 0u;
  var best = 0.0; // replaced by the first value (first == NONE)
  var first = 0xffffffffu;
  var lastKey = 0u;
  var last = 0u;
  for (var i = lid; i < V; i += WG) {
    var v = SCRATCH[base + i];
    if (rep && ((SEEN[seen_base + (i >> 5u)] >> (i & 31u)) & 1u) == 1u) { v = penalize(v, r.repetition); }
    if (pres) {
      let c = COUNTS[base + i];
      if (c > 0u) { v = v - (r.presence + r.frequency * f32(c)); }
    }
    SCRATCH[base + i] = v;
    if (v > best || first == 0xffffffffu) { best = v; first = i; }
    let k = key_of(v);
    if (k >= lastKey) { lastKey = k; last = i; }
  }
  storageBarrier();
  // First maximum: the largest key, then the smallest index (keys order values; NaN sorts high).
  let maxKey = max_u(lid, key_of(best) * u32(first != 0xffffffffu));
  let firstMax = min_u(lid, select(0xffffffffu, first, first != 0xffffffffu && key_of(best) == maxKey));
  // Last maximum (the last token in ascending (value, index) order: top-p always keeps it).
  let lastMax = max_u(lid, select(0u, last, lastKey == maxKey));
  var token = firstMax;
  if (max_u(lid, bad) != 0u) {
    if (lid == 0u) { OUT[b] = -1; } // reported by the caller; the row's state is left as it was
    return;
  }

${sampling ? SAMPLING_BLOCK : ''}  storageBarrier(); // every thread has read STEP, SEEN and COUNTS before thread 0 updates them
  if (lid == 0u) {
    OUT[b] = i32(token);
    STEP[b] = STEP[b] + 1u;
    SEEN[seen_base + (token >> 5u)] = SEEN[seen_base + (token >> 5u)] | (1u << (token & 31u));
    if (p.counts_on != 0u) { COUNTS[base + token] = COUNTS[base + token] + 1u; }
  }
}`;
}

interface NextTokenSpec {
  /** Some row samples: passes 2–4 are compiled (else the greedy-only kernel). */
  sample: boolean;
}

const NEXT_TOKEN = kernelFamily<NextTokenSpec>({
  family: 'sampling.next_token',
  specs: () => [{ sample: false }, { sample: true }],
  code: kernel,
  // red_f, red_u, red_v and the two broadcast words.
  workgroupBytes: () => 3 * 4 * WG + 8,
});

/** What decides one row's next token (SamplingOptions plus OpenAI's penalties and bias). */
export interface RowSampling {
  /** Argmax (HF do_sample=False). Default true. */
  greedy?: boolean;
  temperature?: number;
  /** 0 = off. */
  topK?: number;
  /** 1 = off. */
  topP?: number;
  /** HF repetition_penalty over prompt + generated tokens (1 = off). */
  repetitionPenalty?: number;
  /** OpenAI presence_penalty: subtracted once from every token generated so far. */
  presencePenalty?: number;
  /** OpenAI frequency_penalty: subtracted per occurrence of a token generated so far. */
  frequencyPenalty?: number;
  /** OpenAI logit_bias: added to these ids' logits first. */
  logitBias?: ReadonlyMap<number, number>;
  /** The row's draws are rand_uniform(seed, t) for its t-th generated token. */
  seed?: number;
}

/**
 * GPU token selection for up to `rows` sequences over a vocabulary of `vocabSize`: per-row
 * parameters and seeds (a continuous-batching scheduler sets a row when a sequence joins), state
 * kept on the GPU, one dispatch per step. Rows not set (or cleared) write `padId`.
 */
export class TokenSampler {
  private readonly rowWords: Uint32Array;
  private readonly rowTable: Tensor;
  private readonly step: Tensor;
  private readonly seen: Tensor;
  private readonly scratch: Tensor;
  private counts: Tensor;
  private countsOn = false;
  private bias: Tensor;
  private readonly biasOf: (readonly [number, number][])[] = [];
  private readonly words: number;
  private disposed = false;

  constructor(
    readonly rows: number,
    readonly vocabSize: number,
  ) {
    if (!(Number.isInteger(rows) && rows > 0))
      throw new RangeError(`TokenSampler: rows must be a positive integer, got ${rows}`);
    if (!(Number.isInteger(vocabSize) && vocabSize > 0))
      throw new RangeError(`TokenSampler: vocabSize must be a positive integer, got ${vocabSize}`);
    this.words = Math.ceil(vocabSize / 32);
    this.rowWords = new Uint32Array(rows * ROW_WORDS);
    this.rowTable = Tensor.from(this.rowWords, [rows * ROW_WORDS], 'u32').keep();
    this.step = Tensor.from(new Uint32Array(rows), [rows], 'u32').keep();
    this.seen = Tensor.from(new Uint32Array(rows * this.words), [rows * this.words], 'u32').keep();
    this.scratch = Tensor.empty([rows, vocabSize]).keep();
    this.counts = Tensor.from(new Uint32Array(1), [1], 'u32').keep();
    this.bias = Tensor.from(new Uint32Array(2), [2], 'u32').keep();
    for (let b = 0; b < rows; b++) this.biasOf.push([]);
  }

  /**
   * Starts (or restarts) row `row` with these parameters: the seen-token set becomes `prompt` plus
   * `generated`, the generated-token counts come from `generated`, and the draw counter is
   * generated.length. Writes to the GPU (ordered with recorded work); not meant per step.
   */
  setRow(row: number, o: RowSampling, prompt: readonly number[], generated: readonly number[] = [], padId = 0): void {
    this.checkRow(row);
    const V = this.vocabSize;
    const dev = engine().dev;
    const temperature = o.temperature ?? 1;
    if (!(temperature > 0)) throw new RangeError(`temperature must be positive, got ${temperature}`);
    const penalties = (o.presencePenalty ?? 0) !== 0 || (o.frequencyPenalty ?? 0) !== 0;
    if (penalties && !this.countsOn) this.enableCounts();
    const seen = new Uint32Array(this.words);
    for (const id of [...prompt, ...generated]) {
      if (!(Number.isInteger(id) && id >= 0 && id < V))
        throw new RangeError(`TokenSampler: token id ${id} outside the vocabulary (${V})`);
      seen[id >>> 5] |= 1 << (id & 31);
    }
    dev.write(this.seen.buffer, row * this.words * 4, seen);
    if (this.countsOn) {
      const counts = new Uint32Array(V);
      for (const id of generated) counts[id]!++;
      dev.write(this.counts.buffer, row * V * 4, counts);
    }
    dev.write(this.step.buffer, row * 4, Uint32Array.of(generated.length));
    const sample = !(o.greedy ?? true);
    const flags =
      FLAG_ACTIVE |
      (sample ? FLAG_SAMPLE : 0) |
      ((o.repetitionPenalty ?? 1) !== 1 ? FLAG_REPETITION : 0) |
      (penalties ? FLAG_PRESENCE : 0);
    const w = new DataView(new ArrayBuffer(ROW_WORDS * 4));
    const topK = Math.min(o.topK ?? 0, V);
    w.setUint32(0, flags, true);
    w.setFloat32(4, temperature, true);
    w.setUint32(8, topK, true);
    w.setFloat32(12, o.topP ?? 1, true);
    w.setFloat32(16, o.repetitionPenalty ?? 1, true);
    w.setFloat32(20, o.presencePenalty ?? 0, true);
    w.setFloat32(24, o.frequencyPenalty ?? 0, true);
    w.setUint32(28, (o.seed ?? 0) >>> 0, true);
    w.setUint32(40, padId >>> 0, true);
    this.rowWords.set(new Uint32Array(w.buffer), row * ROW_WORDS);
    const bias = [...(o.logitBias ?? new Map<number, number>())].filter(
      ([id]) => Number.isInteger(id) && id >= 0 && id < V,
    );
    if (bias.length > 0 || this.biasOf[row]!.length > 0) {
      this.biasOf[row] = bias;
      this.uploadBias();
    } else {
      this.rowWords[row * ROW_WORDS + 8] = 0;
      this.rowWords[row * ROW_WORDS + 9] = 0;
    }
    dev.write(this.rowTable.buffer, 0, this.rowWords);
  }

  /** Marks a row unused: it writes `padId` and keeps no state. */
  clearRow(row: number, padId = 0): void {
    this.checkRow(row);
    this.rowWords.fill(0, row * ROW_WORDS, (row + 1) * ROW_WORDS);
    this.rowWords[row * ROW_WORDS + 10] = padId >>> 0;
    if (this.biasOf[row]!.length > 0) {
      this.biasOf[row] = [];
      this.uploadBias();
    }
    engine().dev.write(this.rowTable.buffer, 0, this.rowWords);
  }

  /**
   * Records the selection of the next token of rows 0..n−1 from `logits` [n, V] (f32) into `out`
   * (i32 [n]): the decoder's next input ids; n = out's length, 1 ≤ n ≤ rows (a batch whose upper
   * slots are free decodes only its leading rows). Updates those rows' state (draw counter, seen
   * set, counts). One dispatch; nothing is read back. A row with a NaN or +inf logit gets −1.
   */
  sample(logits: Tensor, out: Tensor): void {
    if (this.disposed) throw new Error('TokenSampler used after dispose()');
    assertDtype(logits, 'f32', 'TokenSampler logits');
    assertDtype(out, 'i32', 'TokenSampler output');
    const n = out.numel;
    if (!(n >= 1 && n <= this.rows))
      throw new RangeError(`TokenSampler: output [${out.shape.join(', ')}] for ${this.rows} rows`);
    if (logits.numel !== n * this.vocabSize)
      throw new RangeError(`TokenSampler: logits [${logits.shape.join(', ')}] for ${n} rows of ${this.vocabSize}`);
    NEXT_TOKEN.dispatch(
      { sample: this.anySampling() },
      [logits, this.rowTable, this.bias, this.step, this.seen, this.counts, this.scratch, out],
      [n],
      new Uniforms()
        .u32(this.vocabSize)
        .u32(this.words)
        .u32(this.countsOn ? 1 : 0)
        .u32(0),
    );
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of [this.rowTable, this.step, this.seen, this.scratch, this.counts, this.bias]) t.dispose();
  }

  private anySampling(): boolean {
    for (let row = 0; row < this.rows; row++)
      if ((this.rowWords[row * ROW_WORDS]! & (FLAG_ACTIVE | FLAG_SAMPLE)) === (FLAG_ACTIVE | FLAG_SAMPLE)) return true;
    return false;
  }

  private checkRow(row: number): void {
    if (this.disposed) throw new Error('TokenSampler used after dispose()');
    if (!(Number.isInteger(row) && row >= 0 && row < this.rows))
      throw new RangeError(`TokenSampler: row ${row} outside [0, ${this.rows})`);
  }

  private enableCounts(): void {
    // Generated-token counts for every row (rows set before keep all-zero counts: no penalties).
    this.counts.dispose();
    this.counts = Tensor.from(new Uint32Array(this.rows * this.vocabSize), [this.rows * this.vocabSize], 'u32').keep();
    this.countsOn = true;
  }

  /** Uploads every row's bias entries and sets their offsets in the (CPU) row table. */
  private uploadBias(): void {
    const entries: number[] = [];
    const f = new Float32Array(1);
    const bits = new Uint32Array(f.buffer);
    this.biasOf.forEach((list, row) => {
      this.rowWords[row * ROW_WORDS + 8] = entries.length / 2;
      this.rowWords[row * ROW_WORDS + 9] = list.length;
      for (const [id, v] of list) {
        f[0] = v;
        entries.push(id, bits[0]!);
      }
    });
    if (entries.length === 0) entries.push(0, 0);
    const data = Uint32Array.from(entries);
    if (this.bias.numel < data.length) {
      this.bias.dispose();
      this.bias = Tensor.empty([data.length], 'u32').keep();
    }
    engine().dev.write(this.bias.buffer, 0, data);
  }
}
