// What autograd keeps alive between forward and backward, measured in pool bytes: each op saves
// only what its backward rule reads, gradients are freed as soon as they are consumed, and
// withRecompute keeps a tensor's inputs instead of the tensor.
import { describe, expect, it } from 'vitest';
import { backward, releaseOnError, withRecompute, zeroGrad } from '../../src/engine/autograd.js';
import { BufferPool, engine, Tensor, tidy } from '../../src/engine/tensor.js';
import {
  type BinaryOp,
  binary,
  rmsnorm,
  scale,
  sumToSuffix,
  swiglu,
  type UnaryOp,
  unary,
} from '../../src/kernels/index.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';

useEngine();

const N = 4096; // elements: 16 KiB tensors, an exact pool size class
const BYTES = BufferPool.sizeClass(N * 4);

function leaf(data: Float32Array, shape = [N]): Tensor {
  const t = Tensor.from(data, shape).keep();
  t.requiresGrad = true;
  return t;
}

/**
 * Bytes the graph of `build` holds once its scope has ended and only its output is left (the
 * output itself not counted): exactly the tensors its backward rules saved.
 */
async function savedBytes(build: () => Tensor): Promise<{ held: number; out: Tensor }> {
  await engine().dev.sync();
  const base = engine().pool.liveBytes;
  const out = tidy(build);
  await engine().dev.sync();
  return { held: engine().pool.liveBytes - base - BufferPool.sizeClass(out.byteSize), out };
}

/** Runs backward from `out` (summed to a scalar), frees every gradient of `leaves`. */
function finish(out: Tensor, leaves: Tensor[]): void {
  tidy(() => backward(sumToSuffix(out, [1])));
  out.dispose();
  zeroGrad(leaves);
}

describe('saved for backward: only what each rule reads', () => {
  it('binary ops: add and sub keep nothing; mul keeps the other operand of each operand that needs a gradient', async () => {
    const rng = testRng('saved-binary');
    const la = leaf(rng.normalArray(N));
    const lb = leaf(rng.normalArray(N));
    const plain = Tensor.from(rng.normalArray(N), [N]).keep(); // no gradient
    // Inputs are intermediates (scale outputs), so whatever survives the scope was saved.
    const cases: [BinaryOp, boolean, number][] = [
      ['add', true, 0],
      ['sub', true, 0],
      ['mul', true, 2 * BYTES],
      ['mul', false, BYTES], // only a needs a gradient: keep b
      ['div', true, 2 * BYTES],
      ['div', false, BYTES],
    ];
    for (const [op, bothWant, want] of cases) {
      const { held, out } = await savedBytes(() => binary(op, scale(la, 2), bothWant ? scale(lb, 3) : scale(plain, 3)));
      expect(held, `${op} (${bothWant ? 'both operands' : 'first operand'} need a gradient)`).toBe(want);
      finish(out, [la, lb]);
    }
    for (const t of [la, lb, plain]) t.dispose();
  });

  it('unary ops keep x, y or nothing, as their derivative reads', async () => {
    const rng = testRng('saved-unary');
    const la = leaf(Float32Array.from(rng.normalArray(N), (v) => Math.abs(v) + 0.5));
    // The output is returned (so not counted): keeping y costs nothing more, keeping x one tensor.
    const cases: [UnaryOp, number][] = [
      ['neg', 0],
      ['exp', 0],
      ['log', BYTES],
      ['sqrt', 0],
      ['square', BYTES],
      ['silu', BYTES],
      ['tanh', 0],
    ];
    for (const [op, want] of cases) {
      const { held, out } = await savedBytes(() => unary(op, scale(la, 1.5)));
      expect(held, op).toBe(want);
      finish(out, [la]);
    }
    la.dispose();
  });

  it('rmsnorm keeps x and rstd (not y); swiglu keeps gate (and up only when dGate is needed), never y', async () => {
    const rng = testRng('saved-norm-swiglu');
    const [rows, d] = [16, N / 16];
    const lx = leaf(rng.normalArray(N), [rows, d]);
    const w = Tensor.from(rng.normalArray(d), [d]).keep();
    const norm = await savedBytes(() => rmsnorm(scale(lx, 2), w, 1e-5));
    expect(norm.held).toBe(BYTES + BufferPool.sizeClass(rows * 4));
    finish(norm.out, [lx]);
    const lu = leaf(rng.normalArray(N));
    const plain = Tensor.from(rng.normalArray(N), [N]).keep();
    const lg = leaf(rng.normalArray(N));
    const both = await savedBytes(() => swiglu(scale(lg, 1), scale(lu, 1)));
    expect(both.held).toBe(2 * BYTES);
    finish(both.out, [lg, lu]);
    const upOnly = await savedBytes(() => swiglu(scale(plain, 1), scale(lu, 1)));
    expect(upOnly.held).toBe(BYTES);
    finish(upOnly.out, [lu]);
    for (const t of [lx, w, lg, lu, plain]) t.dispose();
  });
});

describe('backward frees as it goes', () => {
  it('a chain of L ops peaks at a few gradients, not L', async () => {
    const rng = testRng('backward-chain');
    const lx = leaf(rng.normalArray(N));
    const L = 24;
    const out = tidy(() => {
      let y = lx;
      for (let i = 0; i < L; i++) y = binary('add', scale(y, 1.01), lx);
      return y;
    });
    await engine().dev.sync();
    const pool = engine().pool;
    const before = pool.liveBytes;
    pool.resetPeak();
    tidy(() => backward(out, Tensor.from(rng.normalArray(N), [N])));
    await engine().dev.sync();
    // Live at once: the incoming gradient (a view), one or two being made, the leaf's accumulator.
    expect(pool.peakBytes - before).toBeLessThanOrEqual(5 * BYTES);
    out.dispose();
    zeroGrad([lx]);
    lx.dispose();
  });
});

describe('withRecompute', () => {
  it('keeps the inputs instead of the tensor and gives the same gradients, bit for bit', async () => {
    const rng = testRng('recompute');
    const [rows, d] = [16, N / 16];
    const lx = leaf(rng.normalArray(N), [rows, d]);
    const lm = leaf(rng.normalArray(N), [rows, d]);
    const w = Tensor.from(rng.normalArray(d), [d]).keep();
    const run = async (recompute: boolean) => {
      const { held, out } = await savedBytes(() => {
        const x = scale(lx, 2); // kept by rmsnorm for its own backward
        const h = rmsnorm(x, w, 1e-5);
        const use = () => binary('mul', h, lm); // saves h for dLm
        return recompute ? withRecompute(h, [x], ([xs]) => rmsnorm(xs!, w, 1e-5), use) : use();
      });
      finish(out, []);
      const grads = [await lx.grad!.toFloat32(), await lm.grad!.toFloat32()];
      zeroGrad([lx, lm]);
      return { held, grads };
    };
    const kept = await run(false);
    const rebuilt = await run(true);
    const rstd = BufferPool.sizeClass(rows * 4);
    expect(kept.held).toBe(2 * BYTES + rstd); // x and h
    expect(rebuilt.held).toBe(BYTES + rstd); // x only
    expectClose(rebuilt.grads[0]!, kept.grads[0]!, { atol: 0 }, 'dx');
    expectClose(rebuilt.grads[1]!, kept.grads[1]!, { atol: 0 }, 'dm');
    await engine().dev.sync();
    for (const t of [lx, lm, w]) t.dispose();
  });
});

describe('a forward that fails midway', () => {
  /** Bytes still live after a scope whose forward saved tensors for backward and then threw. */
  async function leftAfterFailure(guard: <T>(fn: () => T) => T): Promise<number> {
    const rng = testRng('saved-failure');
    const a = leaf(rng.normalArray(N));
    const b = leaf(rng.normalArray(N));
    await engine().dev.sync();
    const base = engine().pool.liveBytes;
    expect(() =>
      tidy(() =>
        guard(() => {
          // mul saves both (scaled) operands; swiglu saves its two inputs: four tensors held by nodes.
          const y = swiglu(binary('mul', scale(a, 2), scale(b, 3)), scale(b, 0.5));
          void y;
          throw new RangeError('out of memory (posed)');
        }),
      ),
    ).toThrow(/posed/);
    await engine().dev.sync();
    const left = engine().pool.liveBytes - base;
    a.dispose();
    b.dispose();
    return left;
  }

  it('releases what its nodes saved under releaseOnError (and holds it without)', async () => {
    const unguarded = await leftAfterFailure((fn) => fn());
    // Without the guard the saved tensors stay: the check below could fail.
    expect(unguarded).toBeGreaterThanOrEqual(4 * BYTES);
    expect(await leftAfterFailure(releaseOnError)).toBe(0);
  });

  it('keeps a successful inner call’s nodes for backward, and releases them when an outer call fails', async () => {
    const rng = testRng('saved-nested');
    const a = leaf(rng.normalArray(N));
    await engine().dev.sync();
    const base = engine().pool.liveBytes;
    const out = tidy(() => releaseOnError(() => releaseOnError(() => binary('mul', scale(a, 2), scale(a, 3)))));
    await engine().dev.sync();
    expect(engine().pool.liveBytes - base - BufferPool.sizeClass(out.byteSize)).toBe(2 * BYTES);
    finish(out, [a]);
    expect(() =>
      tidy(() =>
        releaseOnError(() => {
          releaseOnError(() => binary('mul', scale(a, 2), scale(a, 3)));
          throw new RangeError('after the inner call');
        }),
      ),
    ).toThrow(/inner call/);
    await engine().dev.sync();
    expect(engine().pool.liveBytes - base).toBe(0);
    a.dispose();
  });
});
