// Random weights of every weight format (src/kernels/weight-formats.ts) on the GPU, with the exact
// values they stand for (for the float64 references).

import { halfBitsToNumber } from '../../reference/matmul.js';
import { dequantizeNf4Ref } from '../../reference/nf4.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { f32ArrayToBf16, f32ArrayToF16 } from '../../src/io/dtype.js';
import {
  disposeNf4,
  type Nf4DoubleQuant,
  type Nf4Weight,
  nf4FromHost,
  quantizeNf4,
  unpackNf4Codes,
} from '../../src/kernels/nf4.js';
import type { WeightFormat } from '../../src/kernels/weight-formats.js';

/**
 * A random weight [N, K] in `format`: normal values (σ 0.5) rounded to bf16/f16, random NF4 codes and absmax, or an f32 weight quantized on the
 * GPU with double-quantized absmax (its decoded values read back).
 */
export async function makeGemvWeight(
  rng: Rng,
  format: WeightFormat,
  N: number,
  K: number,
): Promise<{ w: Tensor | Nf4Weight; values: Float64Array; dispose: () => void }> {
  const data = rng.normalArray(N * K, 0, 0.5);
  if (format === 'f32') {
    const t = Tensor.from(data, [N, K]);
    return { w: t, values: Float64Array.from(data), dispose: () => t.dispose() };
  }
  if (format === 'bf16' || format === 'f16') {
    const bits = format === 'bf16' ? f32ArrayToBf16(data) : f32ArrayToF16(data);
    const t = Tensor.from(bits, [N, K], format);
    return { w: t, values: Float64Array.from(bits, (b) => halfBitsToNumber(b, format)), dispose: () => t.dispose() };
  }
  if (format === 'nf4') {
    const codes = Array.from({ length: N * K }, () => rng.int(16));
    const absmax = Float32Array.from({ length: Math.ceil((N * K) / 64) }, () => 0.05 + rng.uniform());
    const w = nf4FromHost([N, K], codes, absmax);
    return { w, values: dequantizeNf4Ref(codes, absmax), dispose: () => disposeNf4(w) };
  }
  const src = Tensor.from(data, [N, K]);
  const w = quantizeNf4(src, { doubleQuant: true });
  src.dispose();
  const codes = unpackNf4Codes((await w.codes.read()) as Uint32Array, N * K);
  const dq = w.absmax as Nf4DoubleQuant;
  const q = new Int8Array(((await dq.qabsmax.read()) as Uint32Array).buffer);
  const scale = await dq.absmaxScale.toFloat32();
  const offset = (await dq.absmaxOffset.toFloat32())[0]!;
  const absmax = Float64Array.from(
    { length: Math.ceil((N * K) / 64) },
    (_, b) => q[b]! * scale[Math.floor(b / 256)]! + offset,
  );
  return { w, values: dequantizeNf4Ref(codes, absmax), dispose: () => disposeNf4(w) };
}
