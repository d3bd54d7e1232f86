// GEMM tile and split-K choices per adapter, measured by `npm run tune` (bench/tune.ts) and
// committed. Keyed by adapterKey(vendor, device); chooseGemm (gemm.ts) falls back to heuristics for
// adapters not listed. Regenerate an entry by running `npm run tune` on that adapter; entries of
// other adapters are kept.
import type { TuningTable } from './gemm.js';

export const GEMM_TUNING: TuningTable = {
  version: 1,
  adapters: {},
};
