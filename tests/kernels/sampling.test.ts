// GPU next-token selection (src/kernels/sampling.ts) against the f64 CPU reference
// (reference/sampling.ts) given the same uniform draws u = hashUniform(seed, t).
//
// Greedy choices must be identical: the processed logits are bit-identical when bias and penalties
// are f32 values and presence + frequency·count is exact in f32 (chosen so here), and argmax is a
// comparison. Sampled choices must be identical unless the reference shows the draw (or the top-p
// cut) within 1e-5 of a cumulative boundary: the kernel sums f32 probabilities (relative error
// ≲ V·2⁻²⁴ ≈ 6e-5 worst case for V = 997, typically far less), the reference f64.
import { describe, expect, it } from 'vitest';
import { referenceNextToken } from '../../reference/sampling.js';
import { hashUniform, type Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { type RowSampling, TokenSampler } from '../../src/kernels/sampling.js';
import { testRng, useEngine } from '../helpers/index.js';

useEngine();

interface Case {
  params: RowSampling;
  prompt: number[];
  generated: number[];
}

function randomIds(rng: Rng, n: number, V: number): number[] {
  return Array.from({ length: n }, () => rng.int(V));
}

function randomCase(rng: Rng, V: number, greedy: boolean): Case {
  const bias = new Map<number, number>();
  if (rng.uniform() < 0.5) for (let i = 0; i < 3; i++) bias.set(rng.int(V), Math.fround(rng.normal() * 2));
  const params: RowSampling = {
    greedy,
    seed: (rng.uniform() * 2 ** 32) >>> 0,
    repetitionPenalty: rng.uniform() < 0.6 ? Math.fround(0.5 + 1.5 * rng.uniform()) : 1,
    presencePenalty: [0, 0, 0.25, 0.5, 1.5][rng.int(5)]!,
    frequencyPenalty: [0, 0, 0.125, 0.75][rng.int(4)]!,
    ...(bias.size ? { logitBias: bias } : {}),
  };
  if (!greedy) {
    params.temperature = [1, 0.7, 1.3, 0.25][rng.int(4)]!;
    params.topK = [0, 0, 1, 5, Math.max(1, V - 1), V + 3][rng.int(6)]!;
    params.topP = [1, 1, 0.9, 0.5, 0.05][rng.int(5)]!;
  }
  return { params, prompt: randomIds(rng, 1 + rng.int(6), V), generated: randomIds(rng, rng.int(5), V) };
}

/** Runs the cases as one batch for `steps` steps on the same logits; checks every choice. */
async function check(
  V: number,
  cases: Case[],
  logits: Float32Array,
  steps: number,
): Promise<{ compared: number; nearTies: number }> {
  const B = cases.length;
  const sampler = new TokenSampler(B, V);
  const lt = Tensor.from(logits, [B, V]);
  const out = Tensor.empty([B], 'i32');
  cases.forEach((c, b) => {
    sampler.setRow(b, c.params, c.prompt, c.generated);
  });
  let compared = 0;
  let nearTies = 0;
  const history = cases.map((c) => [...c.generated]);
  for (let s = 0; s < steps; s++) {
    sampler.sample(lt, out);
    const got = (await out.read()) as Int32Array;
    for (let b = 0; b < B; b++) {
      const c = cases[b]!;
      const gen = history[b]!;
      const u = hashUniform(c.params.seed ?? 0, gen.length);
      const ref = referenceNextToken(
        logits.subarray(b * V, (b + 1) * V),
        c.params,
        [...c.prompt, ...gen],
        c.prompt.length,
        u,
      );
      compared++;
      if (got[b] !== ref.token) {
        if (ref.margin < 1e-5) nearTies++;
        else
          throw new Error(
            `row ${b} step ${s}: GPU chose ${got[b]}, reference ${ref.token} (margin ${ref.margin.toExponential(2)}), params ${JSON.stringify({ ...c.params, logitBias: [...(c.params.logitBias ?? [])] })}`,
          );
      }
      gen.push(got[b]!);
    }
  }
  sampler.dispose();
  lt.dispose();
  out.dispose();
  return { compared, nearTies };
}

describe('TokenSampler vs the f64 reference with the same draws', () => {
  it('greedy with bias, repetition and presence/frequency penalties: identical tokens (ties: first maximum)', async () => {
    const rng = testRng('sampling-greedy');
    for (const V of [1, 7, 997]) {
      const B = 9;
      const logits = rng.normalArray(B * V, 0, 3);
      // Planted ties: the row maximum twice (argmax must take the first), and ±0 maxima.
      if (V > 3) {
        logits[2] = logits[V - 1] = 50;
        logits[V + 1] = -0;
        logits[V + 3] = 0;
        for (let i = 0; i < V; i++) if (i !== 1 && i !== 3) logits[V + i] = -Math.abs(logits[V + i]!) - 1;
      }
      const cases = Array.from({ length: B }, () => randomCase(rng, V, true));
      cases[0]!.params = { greedy: true }; // no processors: the planted tie decides
      cases[1]!.params = { greedy: true };
      const r = await check(V, cases, logits, 3);
      expect(r.nearTies).toBe(0);
    }
  }, 300_000);

  it('sampling (temperature, top-k, top-p, penalties, bias): the reference token for each draw, over steps', async () => {
    const rng = testRng('sampling-draws');
    let compared = 0;
    let nearTies = 0;
    for (const V of [1, 2, 31, 997]) {
      const B = 12;
      const logits = rng.normalArray(B * V, 0, 2);
      if (V > 4) logits[3] = logits[4] = 4; // a tie at the top of row 0
      const cases = Array.from({ length: B }, () => randomCase(rng, V, false));
      const r = await check(V, cases, logits, 4);
      compared += r.compared;
      nearTies += r.nearTies;
    }
    console.log(`sampling: ${compared} choices compared, ${nearTies} within 1e-5 of a boundary`);
    expect(nearTies).toBeLessThanOrEqual(1);
  }, 300_000);

  it('a vocabulary of 32000 with top-k 50 and top-p 0.9, and a flat distribution (u decides)', async () => {
    const rng = testRng('sampling-32000');
    const V = 32000;
    const logits = new Float32Array(2 * V);
    logits.set(rng.normalArray(V, 0, 4));
    // Row 1: all equal: the draw picks token floor(u·V) up to rounding.
    const cases: Case[] = [
      { params: { greedy: false, topK: 50, topP: 0.9, temperature: 0.8, seed: 7 }, prompt: [1, 2, 3], generated: [] },
      { params: { greedy: false, seed: 99 }, prompt: [5], generated: [4, 4] },
    ];
    const r = await check(V, cases, logits, 2);
    expect(r.nearTies).toBe(0);
  }, 300_000);

  it('rows: cleared rows write the pad id; rows restart with setRow; non-finite logits give −1; bad ids are refused', async () => {
    const V = 11;
    const sampler = new TokenSampler(3, V);
    const logits = Tensor.from(
      Float32Array.from({ length: 3 * V }, (_, i) => (i % V === 4 ? 1 : 0)),
      [3, V],
    );
    const out = Tensor.empty([3], 'i32');
    sampler.setRow(0, { greedy: true }, [1]);
    sampler.clearRow(1, 9);
    sampler.setRow(2, { greedy: true, repetitionPenalty: 2 }, [4]);
    sampler.sample(logits, out);
    // Row 2: token 4 seen, its logit 1 → 0.5, still the maximum.
    expect(Array.from((await out.read()) as Int32Array)).toEqual([4, 9, 4, 9, 4].slice(0, 3));
    // Row 0 restarted with bias pushing token 7 up.
    sampler.setRow(0, { greedy: true, logitBias: new Map([[7, 5]]) }, [1]);
    sampler.sample(logits, out);
    expect(Array.from((await out.read()) as Int32Array)).toEqual([7, 9, 4]);
    // NaN or +inf logits (an overflowed forward): id −1, and the row's state stays as it was.
    const bad = Tensor.from(
      Float32Array.from({ length: 3 * V }, (_, i) =>
        i === 3 ? NaN : i === V + 2 ? Infinity : i === 2 * V + 1 ? -Infinity : i % V === 4 ? 1 : 0,
      ),
      [3, V],
    );
    sampler.setRow(1, { greedy: false, seed: 5 }, [1]);
    sampler.sample(bad, out);
    expect(Array.from((await out.read()) as Int32Array)).toEqual([-1, -1, 4]);
    sampler.setRow(1, { greedy: true }, [1]);
    bad.dispose();
    expect(() => sampler.setRow(0, {}, [V])).toThrow(/outside the vocabulary/);
    expect(() => sampler.setRow(3, {}, [1])).toThrow(/row 3/);
    sampler.dispose();
    logits.dispose();
    out.dispose();
  });

  it('leading rows only (a batch with free upper slots): rows past n keep their state; bad sizes are refused', async () => {
    const rng = testRng('sampler leading rows');
    const V = 37;
    const data = rng.normalArray(3 * V, 0, 2);
    const logits = Tensor.from(data, [3, V]);
    const lead = Tensor.from(data.subarray(0, V), [1, V]);
    const [a, b] = [new TokenSampler(3, V), new TokenSampler(3, V)];
    for (const s of [a, b]) for (let r = 0; r < 3; r++) s.setRow(r, { greedy: false, seed: 10 + r }, [1]);
    const one = Tensor.empty([1], 'i32');
    const outA = Tensor.empty([3], 'i32');
    const outB = Tensor.empty([3], 'i32');
    a.sample(lead, one); // row 0's draw 0; rows 1 and 2 untouched
    a.sample(logits, outA); // row 0's draw 1, rows 1 and 2 their draw 0
    b.sample(logits, outB); // every row's draw 0
    const [first] = (await one.read()) as Int32Array;
    const gotA = Array.from((await outA.read()) as Int32Array);
    const gotB = Array.from((await outB.read()) as Int32Array);
    expect(first).toBe(gotB[0]);
    expect(gotA.slice(1)).toEqual(gotB.slice(1));
    // Row 0's second token is its draw 1 of the same distribution: the reference decides it.
    const ref = referenceNextToken(
      Float32Array.from(data.subarray(0, V)),
      { greedy: false },
      [1, first!],
      1,
      hashUniform(10, 1),
    );
    if (ref.margin > 1e-5) expect(gotA[0]).toBe(ref.token);
    expect(() => a.sample(logits, Tensor.empty([4], 'i32'))).toThrow(/output \[4\] for 3 rows/);
    expect(() => a.sample(lead, outA)).toThrow(/logits \[1, 37\] for 3 rows/);
    for (const t of [logits, lead, one, outA, outB]) t.dispose();
    a.dispose();
    b.dispose();
  });
});
