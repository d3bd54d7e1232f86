// GEMM tile and split-K choices per adapter, measured by `npm run tune` (bench/tune.ts) and
// committed as data in gemm-tuning.json. Keyed by adapterKey(vendor, device); chooseGemm (gemm.ts)
// falls back to heuristics for adapters not listed. Regenerate an entry by running `npm run tune` on
// that adapter; entries of other adapters are kept. gflops: what the winner reached on the tuner's
// representative shape.
import type { TuningTable } from './gemm.js';
import table from './gemm-tuning.json' with { type: 'json' };

/** Where the tuner writes the table (the source copy; the build copies it next to this module). */
export const GEMM_TUNING_FILE = 'src/kernels/gemm-tuning.json';

if (table.version !== 1 || typeof table.adapters !== 'object' || table.adapters === null) {
  throw new Error(`${GEMM_TUNING_FILE}: expected {"version": 1, "adapters": {...}}`);
}

export const GEMM_TUNING: TuningTable = table as TuningTable;
