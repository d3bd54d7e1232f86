// GEMM tile and split-K choices per adapter, measured by `npm run tune` (bench/tune.ts) and
// committed. Keyed by adapterKey(vendor, device); chooseGemm (gemm.ts) falls back to heuristics for
// adapters not listed. Regenerate an entry by running `npm run tune` on that adapter; entries of
// other adapters are kept. gflops: what the winner reached on the tuner's representative shape.
import type { TuningTable } from './gemm.js';

export const GEMM_TUNING: TuningTable = {
  "version": 1,
  "adapters": {
    "mesa/llvmpipe-llvm-15-0-6-256-bits-": {
      "description": "mesa llvmpipe-llvm-15-0-6-256-bits- llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1",
      "date": "2026-11-28T01:12:45.261Z",
      "commit": "0e416b5",
      "f32": {
        "small": {
          "tile": "t64d",
          "splitTarget": 0,
          "gflops": 2.518
        },
        "medium": {
          "tile": "t128",
          "splitTarget": 0,
          "gflops": 1.587
        },
        "large": {
          "tile": "t128d",
          "splitTarget": 0,
          "gflops": 1.637
        },
        "skinny-n": {
          "tile": "t64x32",
          "splitTarget": 0,
          "gflops": 2.46
        },
        "skinny-m": {
          "tile": "t32x64",
          "splitTarget": 16,
          "gflops": 1.357
        }
      },
      "f16": {
        "small": {
          "tile": "t64",
          "splitTarget": 0,
          "gflops": 3.038
        },
        "medium": {
          "tile": "t128d",
          "splitTarget": 0,
          "gflops": 2.734
        },
        "large": {
          "tile": "t128d",
          "splitTarget": 0,
          "gflops": 0.8186
        },
        "skinny-n": {
          "tile": "t64x32",
          "splitTarget": 0,
          "gflops": 2.528
        },
        "skinny-m": {
          "tile": "t64",
          "splitTarget": 0,
          "gflops": 0.8815
        }
      }
    }
  }
};
