// The KV cache of autoregressive decoding: per decoder layer, the keys and values of every position
// seen so far, written by the attention block and read by the decode attention kernel.
import { storageBindingLimit } from '../engine/device.js';
import { computePrecision } from '../engine/precision.js';
import { bytesPerElement, engine, Tensor } from '../engine/tensor.js';
import { InputError } from '../errors.js';
import type { LlamaConfig } from './config.js';

/** Storage of the cached keys and values: f32, or f16 (half the memory; the attention kernels unpack it). */
export type KvCacheDtype = 'f32' | 'f16';
/** What users choose (`--kv-cache`): a dtype, or auto (f16 under fp16-mixed, f32 otherwise). */
export type KvCacheSetting = KvCacheDtype | 'auto';
export const KV_CACHE_SETTINGS: readonly KvCacheSetting[] = ['f32', 'f16', 'auto'];

/**
 * The cache dtype of a setting: auto follows the engine's precision now, f16 under fp16-mixed (its
 * GEMMs round K and V to f16 anyway), f32 under fp32, where decoding then matches transformers.
 */
export function resolveKvCacheDtype(setting: KvCacheSetting = 'auto'): KvCacheDtype {
  if (setting === 'auto') return computePrecision() === 'fp16-mixed' ? 'f16' : 'f32';
  if (setting !== 'f32' && setting !== 'f16')
    throw new RangeError(`unknown KV cache setting '${String(setting)}' (expected ${KV_CACHE_SETTINGS.join(', ')})`);
  return setting;
}

/**
 * Per layer K and V, [B, maxSeqLen, Hkv, Dh] in `dtype`; `length` positions are filled. With `starts`
 * (left-padded batch), row b's real tokens begin at cache position starts[b]: attention never sees
 * the keys before it, and that row's RoPE positions count from 0 at starts[b].
 */
export interface KvCache {
  batchSize: number;
  maxSeqLen: number;
  length: number;
  k: Tensor[];
  v: Tensor[];
  dtype: KvCacheDtype;
  starts?: Int32Array;
  /** starts on the GPU (i32 [B]), the attention kernels' kvStart. */
  startsTensor?: Tensor;
  /**
   * `length` on the GPU (u32 [1]), read by the kernel that appends K/V (ropeAppend), so a decode
   * step's uniforms and bind groups stay the same from token to token. Kept in step by
   * syncCacheLength before each forward; created on first use.
   */
  lengthTensor?: Tensor;
  /** The value lengthTensor holds (after the recorded work), to skip redundant writes. */
  lengthOnGpu?: number;
}

/**
 * An empty cache for `batchSize` rows of up to `maxSeqLen` positions. `starts` (left-padded
 * batches): the position of each row's first real token; earlier positions hold pad tokens that
 * attention masks out, and RoPE positions of row b start at 0 at starts[b].
 */
export function newKvCache(
  config: LlamaConfig,
  batchSize: number,
  maxSeqLen: number,
  starts?: readonly number[],
  dtype: KvCacheDtype = 'f32',
): KvCache {
  if (starts && (starts.length !== batchSize || starts.some((s) => !Number.isInteger(s) || s < 0 || s >= maxSeqLen))) {
    throw new RangeError(
      `newKvCache: starts [${starts.join(', ')}] must be ${batchSize} integers in [0, ${maxSeqLen})`,
    );
  }
  const { numKeyValueHeads: hkv, headDim: dh } = config;
  const bytes = batchSize * maxSeqLen * hkv * dh * bytesPerElement(dtype);
  const limits = engine().dev.limits;
  const limit = Math.min(limits.maxBufferSize, storageBindingLimit(limits));
  if (bytes > limit) {
    throw new InputError(
      `${batchSize} sequence(s) of ${maxSeqLen} positions (prompt + new tokens) need a KV cache of ${bytes} bytes per layer, more than this GPU can bind (${limit}); generate fewer tokens, shorten the prompt or use a smaller batch`,
    );
  }
  // Left unwritten: attention reads only the first kvLength rows (tests poison pooled buffers with
  // NaN, so a read past the filled part would show).
  const make = () => Tensor.empty([batchSize, maxSeqLen, hkv, dh], dtype).keep();
  const k: Tensor[] = [];
  const v: Tensor[] = [];
  for (let l = 0; l < config.numHiddenLayers; l++) {
    k.push(make());
    v.push(make());
  }
  if (!starts || starts.every((s) => s === 0)) return { batchSize, maxSeqLen, length: 0, k, v, dtype };
  const st = Int32Array.from(starts);
  return {
    batchSize,
    maxSeqLen,
    length: 0,
    k,
    v,
    dtype,
    starts: st,
    startsTensor: Tensor.from(st, [batchSize]).keep(),
  };
}

/**
 * Sets a cache's per-row start positions (see KvCache.starts) and their GPU copy; continuous
 * batching moves them as sequences join, leave and get compacted.
 */
export function setKvStarts(cache: KvCache, starts: Int32Array): void {
  if (starts.length !== cache.batchSize || starts.some((s) => s < 0 || s >= cache.maxSeqLen)) {
    throw new RangeError(
      `setKvStarts: starts [${starts.join(', ')}] must be ${cache.batchSize} integers in [0, ${cache.maxSeqLen})`,
    );
  }
  cache.starts = Int32Array.from(starts);
  if (!cache.startsTensor) cache.startsTensor = Tensor.from(cache.starts, [cache.batchSize]).keep();
  else engine().dev.write(cache.startsTensor.buffer, 0, cache.starts);
}

/**
 * Copies the K/V of `length` positions of row `srcRow` from position `srcPos` of `src` to row
 * `dstRow` at `dstPos` of `dst`, in every layer (recorded in order with the surrounding work).
 * WebGPU cannot copy within one buffer, so `src` and `dst` are different caches.
 */
export function copyKvRows(
  src: KvCache,
  srcRow: number,
  srcPos: number,
  dst: KvCache,
  dstRow: number,
  dstPos: number,
  length: number,
): void {
  if (src === dst) throw new RangeError('copyKvRows: source and destination must be different caches');
  if (src.dtype !== dst.dtype) throw new RangeError(`copyKvRows: a ${src.dtype} cache into a ${dst.dtype} cache`);
  const inRange = (c: KvCache, row: number, pos: number) =>
    row >= 0 && row < c.batchSize && pos >= 0 && pos + length <= c.maxSeqLen;
  if (!(length >= 0 && inRange(src, srcRow, srcPos) && inRange(dst, dstRow, dstPos)) || src.k.length !== dst.k.length) {
    throw new RangeError(
      `copyKvRows: row ${srcRow} [${srcPos}, +${length}) of a ${src.batchSize}x${src.maxSeqLen} cache into row ${dstRow} at ${dstPos} of a ${dst.batchSize}x${dst.maxSeqLen} cache`,
    );
  }
  if (length === 0) return;
  const [, , hkv, dh] = src.k[0]!.shape as [number, number, number, number];
  const posBytes = hkv * dh * bytesPerElement(src.dtype);
  const enc = engine().dev.commandEncoder();
  for (let l = 0; l < src.k.length; l++) {
    for (const [s, d] of [
      [src.k[l]!, dst.k[l]!],
      [src.v[l]!, dst.v[l]!],
    ] as const) {
      enc.copyBufferToBuffer(
        s.buffer,
        (srcRow * src.maxSeqLen + srcPos) * posBytes,
        d.buffer,
        (dstRow * dst.maxSeqLen + dstPos) * posBytes,
        length * posBytes,
      );
    }
  }
}

/**
 * A cache over the first `rows` rows of `cache` (same buffers, no copy), with those rows' starts:
 * a batch whose upper slots are free decodes only the rows in use. Free it with disposeKvCache
 * (the views only); its `length` is independent of the original's.
 */
export function frontKvRows(cache: KvCache, rows: number): KvCache {
  if (!(Number.isInteger(rows) && rows >= 1 && rows <= cache.batchSize))
    throw new RangeError(`frontKvRows: ${rows} rows of a ${cache.batchSize}-row cache`);
  const view = (t: Tensor) => t.front([rows, ...t.shape.slice(1)]).keep();
  const out: KvCache = {
    batchSize: rows,
    maxSeqLen: cache.maxSeqLen,
    length: cache.length,
    k: cache.k.map(view),
    v: cache.v.map(view),
    dtype: cache.dtype,
  };
  if (cache.starts) setKvStarts(out, cache.starts.subarray(0, rows));
  return out;
}

export function disposeKvCache(cache: KvCache): void {
  for (const t of [...cache.k, ...cache.v]) t.dispose();
  cache.startsTensor?.dispose();
  cache.lengthTensor?.dispose();
}

/**
 * The cache length on the GPU, written (a 4-byte queue write, ordered with the recorded work) when
 * cache.length changed since the last write. Call before recording a forward over the cache.
 */
export function syncCacheLength(cache: KvCache): Tensor {
  if (!cache.lengthTensor || cache.lengthTensor.disposed) {
    cache.lengthTensor = Tensor.empty([1], 'u32').keep();
    cache.lengthOnGpu = undefined;
  }
  if (cache.lengthOnGpu !== cache.length) {
    engine().dev.write(cache.lengthTensor.buffer, 0, Uint32Array.of(cache.length));
    cache.lengthOnGpu = cache.length;
  }
  return cache.lengthTensor;
}

/** RoPE positions offset..offset+T-1 per row; with left-padding `starts`, row b counts from starts[b] (pads get 0). */
export function cachePositions(batchSize: number, seqLen: number, offset = 0, starts?: Int32Array): Int32Array {
  const p = new Int32Array(batchSize * seqLen);
  for (let b = 0; b < batchSize; b++) {
    const s = starts?.[b] ?? 0;
    for (let t = 0; t < seqLen; t++) p[b * seqLen + t] = Math.max(0, offset + t - s);
  }
  return p;
}
