// `npm run tune [-- --reps 10] [--dry-run]`: times every GEMM tile (× split-K targets for the skinny
// classes) per shape class and compute variant on this adapter (and every subgroup-matrix tile ×
// offered matrix shape where the adapter has them), in one process, and writes the
// winners into the committed table src/kernels/gemm-tuning.json under this adapter's key (other
// adapters' entries are kept). Every candidate is first validated against the float64 reference
// (bench/validate.ts); one that fails is reported and never chosen. The full timings go to
// bench/results/tune-<time>.json. chooseGemm (src/kernels/gemm.ts) reads the table; adapters
// without an entry use its heuristics.
import { execSync } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { withPrecision } from '../src/engine/precision.js';
import { Rng } from '../src/engine/random.js';
import { initEngine, tidy } from '../src/engine/tensor.js';
import { writeFileAtomicSync } from '../src/io/atomic.js';
import {
  type AdapterTuning,
  adapterKey,
  type Compute,
  deviceContext,
  type GemmArgs,
  gemm,
  gemmPlan,
  nativeMatrixCore,
  SG_TILE_NAMES,
  SG_TILES,
  type SgTileName,
  SHAPE_CLASSES,
  type ShapeClass,
  sgTileFits,
  shapeClass,
  splitsFor,
  TILE_NAMES,
  TILES,
  type TileName,
  type TunedEntry,
  type TuningTable,
  tileFits,
} from '../src/kernels/gemm.js';
import { GEMM_TUNING, GEMM_TUNING_FILE } from '../src/kernels/gemm-tuning.js';
import { MATRIX_SHAPES, type MatrixShapeName, offeredShapes } from '../src/kernels/sgmatrix.js';
import { hostTensor } from './kernels/matmul.js';
import { validateGemm } from './validate.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const e = await initEngine();
const dev = e.dev;
const software = dev.info.isSoftware;
const reps = Number(arg('reps') ?? (software ? 5 : 10));
const dryRun = process.argv.includes('--dry-run');

/** One representative problem per class [M, N, K, transA, transB] (the model's layouts). */
const SHAPES: Record<ShapeClass, [number, number, number, boolean, boolean]> = software
  ? {
      small: [64, 128, 64, false, true],
      medium: [256, 512, 256, false, true],
      large: [2048, 2048, 64, false, true],
      'skinny-n': [512, 16, 256, false, true],
      'skinny-m': [16, 512, 512, true, false],
    }
  : {
      small: [128, 256, 256, false, true],
      medium: [512, 2048, 2048, false, true],
      large: [4096, 5632, 2048, false, true],
      'skinny-n': [4096, 16, 2048, false, true],
      'skinny-m': [16, 2048, 4096, true, false],
    };
const SPLIT_TARGETS = software ? [0, 4, 16] : [0, 64, 256, 1024];

interface Trial {
  compute: Compute;
  /** The subgroup-matrix core's shape (absent: the SIMT core). */
  shape?: MatrixShapeName;
  cls: ShapeClass;
  tile: TileName | SgTileName;
  splitTarget: number;
  splitK: number;
  /** Median and fastest of the timed runs; the winner is chosen by the fastest (robust to a busy host). */
  ms: number | null;
  minMs: number | null;
  gflops: number | null;
  invalid?: string;
}

const ctx = deviceContext();
const computes: Compute[] = dev.has('shader-f16') ? ['f32', 'f16'] : ['f32'];
const sgShapes: MatrixShapeName[] = nativeMatrixCore(ctx) ? offeredShapes(dev.subgroupMatrixConfigs, 'f32') : [];
const trials: Trial[] = [];
const key = adapterKey(dev.info);
console.log(
  `adapter: ${dev.name} (table key ${key}); compute variants: ${computes.join(', ')}; ${reps} timed runs each`,
);

for (const cls of SHAPE_CLASSES) {
  const [M, N, K, tA, tB] = SHAPES[cls];
  if (shapeClass(M, N, K) !== cls) throw new Error(`tuner shape ${M}x${N}x${K} is not in class ${cls}`);
  const rng = new Rng(1);
  const a = hostTensor(rng, tA ? [K, M] : [M, K]);
  const b = hostTensor(rng, tB ? [N, K] : [K, N]);
  /** Validates one candidate against the float64 reference, then times it. */
  const runTrial = async (trial: Trial, args: GemmArgs): Promise<void> => {
    const precision = trial.compute === 'f16' ? 'fp16-mixed' : 'fp32';
    const out = withPrecision(precision, () => gemm(args));
    const problem = await validateGemm(
      out,
      {
        a: { data: a.values, shape: (tA ? [K, M] : [M, K]) as [number, number], trans: tA },
        b: { data: b.values, shape: (tB ? [N, K] : [K, N]) as [number, number], trans: tB },
        f16: trial.compute === 'f16',
      },
      gemmPlan(args).key,
    );
    out.dispose();
    if (problem) {
      trial.invalid = problem;
      console.error(`INVALID ${problem}`);
      trials.push(trial);
      return;
    }
    const run = () => tidy(() => void withPrecision(precision, () => gemm(args)));
    await dev.timeGpu(run);
    const times: number[] = [];
    for (let i = 0; i < reps; i++) {
      const s = await dev.timeGpu(run);
      if (s !== null) times.push(s);
    }
    times.sort((x, y) => x - y);
    const med = times.length ? times[Math.floor(times.length / 2)]! : null;
    trial.ms = med === null ? null : med * 1e3;
    trial.minMs = times.length ? times[0]! * 1e3 : null;
    trial.gflops = trial.minMs === null ? null : (2 * M * N * K) / (trial.minMs / 1e3) / 1e9;
    trials.push(trial);
    const core = trial.shape ? `sgmatrix ${trial.shape}` : trial.compute;
    console.log(
      `${cls.padEnd(8)} ${core} ${trial.tile.padEnd(7)} split ${String(trial.splitK).padStart(2)}  median ${trial.ms?.toFixed(3) ?? '-'} ms  min ${trial.minMs?.toFixed(3) ?? '-'} ms  ${trial.gflops?.toFixed(2) ?? '-'} GFLOP/s (at min)`,
    );
  };
  const splitTargets = cls.startsWith('skinny') ? SPLIT_TARGETS : [0];
  /** The split-K targets to try with a tile, each giving a different split count. */
  const splitChoices = (t: { BM: number; BN: number; BK: number }): { splitTarget: number; splitK: number }[] => {
    const tiles = Math.ceil(M / t.BM) * Math.ceil(N / t.BN);
    const seen = new Set<number>();
    const out: { splitTarget: number; splitK: number }[] = [];
    for (const splitTarget of splitTargets) {
      const splitK = splitsFor(splitTarget, tiles, K, t.BK);
      if (!seen.has(splitK)) out.push({ splitTarget, splitK });
      seen.add(splitK);
    }
    return out;
  };
  for (const compute of computes) {
    for (const tile of TILE_NAMES) {
      if (!tileFits(TILES[tile], compute, ctx)) continue;
      // CPU-shaped tiles: f32 compute, and only where the dispatcher may use them (software adapters).
      if ('direct' in TILES[tile] && (compute !== 'f32' || !ctx.isSoftware)) continue;
      for (const { splitTarget, splitK } of splitChoices(TILES[tile])) {
        const args: GemmArgs = {
          a: { t: a.t, trans: tA },
          b: { t: b.t, trans: tB },
          choice: { compute, tile, splitK },
        };
        await runTrial({ compute, cls, tile, splitTarget, splitK, ms: null, minMs: null, gflops: null }, args);
      }
    }
  }
  // The subgroup-matrix core: every SG_TILES tile × offered matrix shape (adapters that have them).
  for (const shape of sgShapes) {
    for (const tile of SG_TILE_NAMES) {
      const t = SG_TILES[tile];
      if (!sgTileFits(t, MATRIX_SHAPES[shape], ctx)) continue;
      for (const { splitTarget, splitK } of splitChoices(t)) {
        const args: GemmArgs = {
          a: { t: a.t, trans: tA },
          b: { t: b.t, trans: tB },
          choice: { compute: 'f16', tile, splitK, matrix: { shape, emulated: false } },
        };
        await runTrial(
          { compute: 'f16', shape, cls, tile, splitTarget, splitK, ms: null, minMs: null, gflops: null },
          args,
        );
      }
    }
  }
  a.t.dispose();
  b.t.dispose();
}

const entry: AdapterTuning = { description: dev.name, date: new Date().toISOString() };
try {
  entry.commit = execSync('git rev-parse --short HEAD', {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  }).trim();
} catch {
  // not a git checkout: no commit recorded
}
for (const compute of computes) {
  const table: Partial<Record<ShapeClass, TunedEntry>> = {};
  for (const cls of SHAPE_CLASSES) {
    const best = trials
      .filter((t) => t.compute === compute && !t.shape && t.cls === cls && t.gflops !== null && !t.invalid)
      .sort((x, y) => y.gflops! - x.gflops!)[0];
    if (best)
      table[cls] = {
        tile: best.tile as TileName,
        splitTarget: best.splitTarget,
        gflops: Number(best.gflops!.toPrecision(4)),
      };
  }
  entry[compute] = table;
}
if (sgShapes.length) {
  const table: NonNullable<AdapterTuning['sgmatrix']> = {};
  for (const cls of SHAPE_CLASSES) {
    const best = trials
      .filter((t) => t.shape && t.cls === cls && t.gflops !== null && !t.invalid)
      .sort((x, y) => y.gflops! - x.gflops!)[0];
    if (best)
      table[cls] = {
        tile: best.tile as SgTileName,
        shape: best.shape!,
        splitTarget: best.splitTarget,
        gflops: Number(best.gflops!.toPrecision(4)),
      };
  }
  entry.sgmatrix = table;
}
const invalid = trials.filter((t) => t.invalid);

const resDir = join(process.cwd(), 'bench', 'results');
mkdirSync(resDir, { recursive: true });
const file = join(resDir, `tune-${entry.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(
  `${file}.tmp`,
  JSON.stringify({ adapter: dev.name, key, features: [...dev.features], shapes: SHAPES, reps, trials, entry }, null, 2),
);
renameSync(`${file}.tmp`, file);
console.log(`\nwrote ${file}`);

if (dryRun) console.log(JSON.stringify(entry, null, 2));
else {
  const table: TuningTable = { version: 1, adapters: { ...GEMM_TUNING.adapters, [key]: entry } };
  writeFileAtomicSync(join(process.cwd(), GEMM_TUNING_FILE), `${JSON.stringify(table, null, 2)}\n`);
  console.log(`updated ${GEMM_TUNING_FILE} for ${key}`);
}
dev.destroy();
if (invalid.length) {
  console.error(`${invalid.length} candidate(s) failed validation and were not considered`);
  process.exitCode = 1;
}
