// How check:kernels and the tests run an emulated variant of each family against its float64
// reference: one verifier per family, keyed by KernelVariant.family. A family that registers
// emulated variants (src/kernels/variants.ts) adds its verifier here.
import type { Rng } from '../../src/engine/random.js';
import type { AttentionVariantCheck } from '../../src/kernels/attention-sgmatrix.js';
import type { GemmVariantCase } from '../../src/kernels/gemm.js';
import type { KernelVariant } from '../../src/kernels/variants.js';
import { checkEmulatedAttention } from './attention.js';
import { checkEmulatedGemm } from './gemm.js';

type Verifier = (v: KernelVariant, rng: Rng) => Promise<string | null>;

const VERIFIERS: Record<string, Verifier> = {
  gemm: async (v, rng) => {
    const r = await checkEmulatedGemm(v.spec as GemmVariantCase, rng);
    if (!r.failure && r.key !== v.key) return `ran kernel ${r.key}, the variant is ${v.key}`;
    return r.failure;
  },
  'attn.sgm': async (v, rng) => {
    const { case: c, pass } = v.spec as AttentionVariantCheck;
    const r = await checkEmulatedAttention(c, rng, [pass]);
    if (!r.failure && !r.keys.includes(v.key)) return `ran kernels ${r.keys.join(', ')}, the variant is ${v.key}`;
    return r.failure;
  },
};

/** Null when the emulated variant matches its reference; else why not. */
export async function verifyEmulated(v: KernelVariant, rng: Rng): Promise<string | null> {
  const verify = VERIFIERS[v.family];
  if (!verify) return `no verifier for the family '${v.family}' (bench/check/verifiers.ts)`;
  return verify(v, rng);
}
