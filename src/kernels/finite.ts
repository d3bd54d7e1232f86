// Counting non-finite values (NaN, ±Inf) on the GPU: one pass over a tensor's bits, adding its count
// into one u32 slot of a counts buffer, so a whole model's weights are checked with a single
// readback at the end of loading (NonFiniteCounter).
//
// The test is on the bits (exponent all ones), not on float comparisons: WGSL lets implementations
// assume floats are finite, so `x != x` may be folded away. f32: (bits & 0x7f800000) == 0x7f800000;
// packed bf16: (h & 0x7f80) == 0x7f80; packed f16: (h & 0x7c00) == 0x7c00, two halves per u32 word
// (the padding half of an odd-length tensor is not counted). Counting in integers is exact and the
// order of the workgroups' atomic adds does not change the sum.
import { Tensor } from '../engine/tensor.js';
import { Uniforms } from './common.js';
import { kernelFamily } from './variants.js';

const WG = 256;
/** Words each thread reads before the workgroup combines (caps the workgroup count for big tensors). */
const WORDS_PER_THREAD = 16;
const MAX_WORKGROUPS = 4096;

type Kind = 'f32' | 'bf16' | 'f16';
const KIND_CODE: Record<Kind, number> = { f32: 0, bf16: 1, f16: 2 };

// One kernel for every kind: the kind is a uniform (p.kind), not a variant.
const COUNT = kernelFamily({
  family: 'finite.count',
  specs: () => [{}],
  workgroupBytes: () => 4,
  code: () => /* wgsl */ `
struct P { n: u32, words: u32, slot: u32, kind: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<u32>;
@group(0) @binding(2) var<storage, read_write> C: array<atomic<u32>>;
var<workgroup> partial: atomic<u32>;

fn bad_half(h: u32, mask: u32) -> u32 { return select(0u, 1u, (h & mask) == mask); }

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  if (lid == 0u) { atomicStore(&partial, 0u); }
  workgroupBarrier();
  var count = 0u;
  let stride = nwg.x * ${WG}u;
  for (var w = wid.x * ${WG}u + lid; w < p.words; w += stride) {
    let bits = X[w];
    if (p.kind == 0u) {
      count += bad_half(bits, 0x7f800000u);
    } else {
      let mask = select(0x7c00u, 0x7f80u, p.kind == 1u);
      count += bad_half(bits & 0xffffu, mask);
      if (2u * w + 1u < p.n) { count += bad_half(bits >> 16u, mask); }
    }
  }
  if (count > 0u) { atomicAdd(&partial, count); }
  workgroupBarrier();
  if (lid == 0u) {
    let total = atomicLoad(&partial);
    if (total > 0u) { atomicAdd(&C[p.slot], total); }
  }
}
`,
});

function kindOf(t: Tensor): Kind {
  if (t.dtype === 'f32' || t.dtype === 'bf16' || t.dtype === 'f16') return t.dtype;
  throw new TypeError(`non-finite count: ${t} is not a float tensor`);
}

/** Records the count of non-finite elements of `x` into slot `slot` of the u32 tensor `counts` (added to what is there). */
export function countNonFiniteInto(x: Tensor, counts: Tensor, slot: number): void {
  if (counts.dtype !== 'u32' || slot < 0 || slot >= counts.numel)
    throw new RangeError(`non-finite count: slot ${slot} outside ${counts}`);
  const kind = kindOf(x);
  if (x.numel === 0) return;
  const words = kind === 'f32' ? x.numel : Math.ceil(x.numel / 2);
  const groups = Math.min(MAX_WORKGROUPS, Math.max(1, Math.ceil(words / (WG * WORDS_PER_THREAD))));
  const u = new Uniforms().u32(x.numel).u32(words).u32(slot).u32(KIND_CODE[kind]);
  COUNT.dispatch({}, [{ ...x.binding, size: words * 4 }, counts], [groups], u);
}

/** The number of non-finite elements of `x` (one readback; for tests and one-off checks). */
export async function countNonFinite(x: Tensor): Promise<number> {
  const counts = Tensor.from(new Uint32Array(1), [1], 'u32');
  try {
    countNonFiniteInto(x, counts, 0);
    return (await counts.read())[0]!;
  } finally {
    counts.dispose();
  }
}

const SLOTS_PER_BUFFER = 1024;

/**
 * Checks many tensors with one readback: `add` records a count pass per tensor (cheap, no sync),
 * `read` returns the labels with a non-zero count. Tensors may be disposed after `add`: the pass
 * is recorded before anything can reuse their memory.
 */
export class NonFiniteCounter {
  private buffers: Tensor[] = [];
  private labels: string[] = [];

  add(x: Tensor, label: string): void {
    const slot = this.labels.length;
    if (slot % SLOTS_PER_BUFFER === 0)
      this.buffers.push(Tensor.from(new Uint32Array(SLOTS_PER_BUFFER), [SLOTS_PER_BUFFER], 'u32').keep());
    this.labels.push(label);
    countNonFiniteInto(x, this.buffers[this.buffers.length - 1]!, slot % SLOTS_PER_BUFFER);
  }

  /** The tensors with non-finite values and how many each has, in the order they were added. */
  async read(): Promise<{ label: string; count: number }[]> {
    const out: { label: string; count: number }[] = [];
    for (const [b, buf] of this.buffers.entries()) {
      const counts = (await buf.read()) as Uint32Array;
      for (let i = 0; i < SLOTS_PER_BUFFER; i++) {
        const index = b * SLOTS_PER_BUFFER + i;
        if (index < this.labels.length && counts[i]! > 0) out.push({ label: this.labels[index]!, count: counts[i]! });
      }
    }
    return out;
  }

  dispose(): void {
    for (const b of this.buffers) b.dispose();
    this.buffers = [];
  }
}
