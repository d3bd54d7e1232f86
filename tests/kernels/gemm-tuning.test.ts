// The committed GEMM tuning table (src/kernels/gemm-tuning.json, written by `npm run tune`): it loads
// through gemm-tuning.ts, every entry names a tile, shape class and matrix shape the generator has,
// and the build puts the JSON next to the compiled module, where the CLI reads it.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SG_TILES, SHAPE_CLASSES, TILES } from '../../src/kernels/gemm.js';
import { GEMM_TUNING, GEMM_TUNING_FILE } from '../../src/kernels/gemm-tuning.js';
import { MATRIX_SHAPES } from '../../src/kernels/sgmatrix.js';

const ROOT = process.cwd();

describe('GEMM tuning table', () => {
  it('is the JSON file the tuner writes, read at load time', () => {
    expect(JSON.parse(readFileSync(join(ROOT, GEMM_TUNING_FILE), 'utf8'))).toEqual(GEMM_TUNING);
    expect(GEMM_TUNING.version).toBe(1);
    expect(Object.keys(GEMM_TUNING.adapters).length).toBeGreaterThan(0);
  });

  it('names only tiles, shape classes and matrix shapes that exist', () => {
    for (const [key, entry] of Object.entries(GEMM_TUNING.adapters)) {
      expect(key, 'adapter key is vendor/device').toMatch(/^[^/]+\/.+$/);
      expect(typeof entry.description).toBe('string');
      expect(Number.isNaN(Date.parse(entry.date)), `${key}: date`).toBe(false);
      for (const precision of ['f32', 'f16'] as const) {
        for (const [cls, e] of Object.entries(entry[precision] ?? {})) {
          expect(SHAPE_CLASSES, `${key} ${precision}`).toContain(cls);
          expect(Object.keys(TILES), `${key} ${precision} ${cls}`).toContain(e.tile);
          expect(Number.isInteger(e.splitTarget) && e.splitTarget >= 0, `${key} ${precision} ${cls} splitTarget`).toBe(
            true,
          );
        }
      }
      for (const [cls, e] of Object.entries(entry.sgmatrix ?? {})) {
        expect(SHAPE_CLASSES, `${key} sgmatrix`).toContain(cls);
        expect(Object.keys(SG_TILES), `${key} sgmatrix ${cls}`).toContain(e.tile);
        expect(Object.keys(MATRIX_SHAPES), `${key} sgmatrix ${cls}`).toContain(e.shape);
      }
    }
  });

  it('is copied into dist/ by the build, equal to the source', () => {
    const built = join(ROOT, 'dist', GEMM_TUNING_FILE);
    expect(existsSync(built), `${built} (run npx tsc -p tsconfig.json)`).toBe(true);
    expect(JSON.parse(readFileSync(built, 'utf8'))).toEqual(GEMM_TUNING);
  });
});
