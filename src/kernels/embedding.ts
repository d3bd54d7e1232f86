// Embedding lookup: out[i, :] = table[ids[i], :], with the table f32 or packed bf16/f16 (unpacked
// in-kernel, so a frozen 16-bit table stays 16-bit in memory); out is f32.
//
// Backward is a scatter-add, dTable[v, :] = Σ_{i: ids[i] = v} dOut[i, :]. Core WGSL has no float
// atomics, and atomics would make the summation order (so the rounding) vary run to run. Instead,
// deterministically and without sorting:
//   1. links: one thread per position i finds next[i], the next position holding the same id, and
//      whether i is the first position of its id (a scan over the ids; O(N²) comparisons in the
//      worst case of all-distinct ids — 8M for N = 4096, microseconds on a GPU, ids being tiny);
//   2. gather: one thread per (first position, column) walks its chain in index order and writes
//      the sum into the id's row; rows of ids that never occur are zero-filled before.
// Every output element is written by exactly one thread, in a fixed order: bitwise reproducible.
// Ids outside [0, V) produce a NaN row in forward (so the error surfaces in the loss, as an
// index error would on the CPU) and contribute nothing in backward.
import { type GradNode, recordOp } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { grid1d, Uniforms, WG, WGSL_FLAT_INDEX, WGSL_HALF } from './common.js';
import { zeros } from './elementwise.js';
import { kernelFamily } from './variants.js';

const NAN_BITS = 0x7fc00000;

const PARAMS = /* wgsl */ `
struct P { N: u32, D: u32, V: u32, nan_bits: u32 }
@group(0) @binding(0) var<uniform> p: P;
const NONE = 0xffffffffu;
${WGSL_FLAT_INDEX}${WGSL_HALF}`;

type TableType = 'f32' | 'bf16' | 'f16';

function forwardKernel({ tType: tableType }: { tType: TableType }): string {
  const read = tableType === 'f32' ? 'T[e]' : `half_word_get(T[e >> 1u], e, ${tableType === 'bf16'})`;
  return /* wgsl */ `${PARAMS}
@group(0) @binding(1) var<storage, read> IDS: array<i32>;
@group(0) @binding(2) var<storage, read> T: array<${tableType === 'f32' ? 'f32' : 'u32'}>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (i >= p.N * p.D) { return; }
  let r = i / p.D;
  let id = IDS[r];
  if (id < 0 || u32(id) >= p.V) { Y[i] = bitcast<f32>(p.nan_bits); return; }
  let e = u32(id) * p.D + (i - r * p.D);
  Y[i] = ${read};
}`;
}

const FORWARD = kernelFamily({
  family: 'embedding',
  specs: () => (['f32', 'bf16', 'f16'] as const).map((tType) => ({ tType })),
  code: forwardKernel,
});

/** LINKS[i] = next position with the same id (NONE if last); LINKS[N + i] = 1 if i is its id's first. */
const LINKS = kernelFamily({
  family: 'embedding.links',
  specs: () => [{}],
  code: () => /* wgsl */ `${PARAMS}
@group(0) @binding(1) var<storage, read> IDS: array<i32>;
@group(0) @binding(2) var<storage, read_write> LINKS: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (i >= p.N) { return; }
  let id = IDS[i];
  var next = NONE;
  var head = 0u;
  if (id >= 0 && u32(id) < p.V) {
    for (var j = i + 1u; j < p.N; j++) { if (IDS[j] == id) { next = j; break; } }
    head = 1u;
    for (var j = i; j > 0u; j--) { if (IDS[j - 1u] == id) { head = 0u; break; } }
  }
  LINKS[i] = next;
  LINKS[p.N + i] = head;
}`,
});

const GATHER_GRAD = kernelFamily({
  family: 'embedding.gather_grad',
  specs: () => [{}],
  code: () => /* wgsl */ `${PARAMS}
@group(0) @binding(1) var<storage, read> IDS: array<i32>;
@group(0) @binding(2) var<storage, read> LINKS: array<u32>;
@group(0) @binding(3) var<storage, read> G: array<f32>;
@group(0) @binding(4) var<storage, read_write> DT: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = flat_index(gid, nwg, ${WG}u);
  if (t >= p.N * p.D) { return; }
  let i = t / p.D;
  if (LINKS[p.N + i] == 0u) { return; }
  let d = t - i * p.D;
  var acc = 0.0;
  var j = i;
  loop {
    acc += G[j * p.D + d];
    j = LINKS[j];
    if (j == NONE) { break; }
  }
  DT[u32(IDS[i]) * p.D + d] = acc;
}`,
});

function params(N: number, D: number, V: number): Uniforms {
  return new Uniforms().u32(N).u32(D).u32(V).u32(NAN_BITS);
}

/**
 * Rows of `table` [V, D] (f32, bf16 or f16) at `ids` (i32, any shape) → [...ids.shape, D] f32.
 * When the table requires grad, backward scatter-adds dOut into dTable (f32 [V, D]).
 */
export function embedding(ids: Tensor, table: Tensor): Tensor {
  if (ids.dtype !== 'i32' && ids.dtype !== 'u32') throw new TypeError(`embedding: ids must be i32, got ${ids.dtype}`);
  if (table.shape.length !== 2) throw new RangeError(`embedding: table must be [vocab, dim], got [${table.shape}]`);
  const tType = table.dtype;
  if (tType !== 'f32' && tType !== 'bf16' && tType !== 'f16')
    throw new TypeError(`embedding: table must be f32, bf16 or f16, got ${tType}`);
  const [V, D] = table.shape as [number, number];
  const N = ids.numel;
  const y = Tensor.empty([...ids.shape, D]);
  FORWARD.dispatch({ tType }, [ids, table, y], grid1d(N * D), params(N, D, V));
  recordOp('embedding', [table], y, (node: GradNode) => {
    const idsSaved = node.save(ids);
    return ([g]) => [embeddingBackward(idsSaved, g!, V, D)];
  });
  return y;
}

/** dTable [V, D] = scatter-add of g [N·D] rows at ids (deterministic; see the header). */
export function embeddingBackward(ids: Tensor, g: Tensor, V: number, D: number): Tensor {
  const N = ids.numel;
  const dt = zeros([V, D]);
  if (N === 0 || D === 0) return dt;
  const links = Tensor.empty([2 * N], 'u32');
  LINKS.dispatch({}, [ids, links], grid1d(N), params(N, D, V));
  GATHER_GRAD.dispatch({}, [ids, links, g, dt], grid1d(N * D), params(N, D, V));
  links.dispose();
  return dt;
}
