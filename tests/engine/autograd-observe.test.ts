// observeBackward (src/engine/autograd.ts): the nodes whose backward rules run, in the order they
// run (the root's first, reverse topological), only while its body runs.
import { describe, expect, it } from 'vitest';
import { backward, observeBackward } from '../../src/engine/autograd.js';
import { Tensor, tidy } from '../../src/engine/tensor.js';
import { linear, rmsnorm, scale, sumToSuffix, swiglu } from '../../src/kernels/index.js';
import { testRng, useEngine } from '../helpers/index.js';

useEngine();

describe('observeBackward', () => {
  it('sees each node of a backward once, the root first and the first op last; nothing outside its body', () => {
    const rng = testRng('observeBackward');
    const [N, D, F] = [5, 12, 7];
    const leaf = (shape: number[]) => {
      const t = Tensor.from(rng.normalArray(shape.reduce((a, b) => a * b, 1)), shape).keep();
      t.requiresGrad = true;
      return t;
    };
    const [x, g, w1, w2] = [leaf([N, D]), leaf([D]), leaf([F, D]), leaf([F, D])];
    const graph = () => {
      const h = rmsnorm(x, g, 1e-5);
      return scale(sumToSuffix(swiglu(linear(h, w1), linear(h, w2)), [1]), 0.5);
    };
    const seen: string[] = [];
    tidy(() => {
      const loss = graph();
      observeBackward(
        (node) => seen.push(node.name),
        () => backward(loss),
      );
    });
    expect(seen[0]).toBe('scale');
    expect(seen.at(-1)).toBe('rmsnorm');
    expect(seen.filter((n) => n === 'linear')).toHaveLength(2);
    expect(seen.indexOf('swiglu')).toBeLessThan(seen.indexOf('linear'));
    expect(new Set(seen).size).toBe(seen.length - 1); // only the two linears share a name
    const after = seen.length;
    tidy(() => backward(graph()));
    expect(seen).toHaveLength(after);
    expect(() =>
      observeBackward(
        () => {},
        () => {
          throw new Error('boom');
        },
      ),
    ).toThrow('boom');
    tidy(() => backward(graph()));
    expect(seen).toHaveLength(after);
    for (const t of [x, g, w1, w2]) {
      t.grad?.dispose();
      t.dispose();
    }
  });
});
