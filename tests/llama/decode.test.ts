// The decode path end to end: the fused decode step against the general forward (every weight
// storage, with the PEFT adapter), GPU sampling against the CPU reference sampler with the same
// draws, batch-8 rows against batch-1 runs, and the per-step work (dispatches, submits, readbacks,
// buffers, bind groups, writes) that keeps the CPU off the critical path.
import { describe, expect, it } from 'vitest';
import { referenceNextToken } from '../../reference/sampling.js';
import { noGrad } from '../../src/engine/autograd.js';
import { hashUniform } from '../../src/engine/random.js';
import { engine } from '../../src/engine/tensor.js';
import { generate, generateBatch, NonFiniteLogitsError } from '../../src/llama/generate.js';
import { exportMerged } from '../../src/llama/merge.js';
import { disposeKvCache, LlamaModel } from '../../src/llama/model.js';
import { expectClose, useEngine } from '../helpers/index.js';
import { adapterDir, golden, modelDir, useTempDir } from './helpers.js';

useEngine();

const NAME = 'gqa-f32';

describe('fused decode step vs the general forward', () => {
  const variants = [
    { label: 'f32 + adapter', opts: { adapter: adapterDir(NAME) } },
    { label: 'bf16 + adapter', opts: { adapter: adapterDir(NAME), storage: 'bf16' as const } },
    { label: 'f16, no adapter', opts: { storage: 'f16' as const } },
    { label: 'NF4 + adapter', opts: { adapter: adapterDir(NAME), quantize: 'nf4' as const } },
    // q/k/v with double-quantized absmax and LoRA need 20 bindings: split over two dispatches on
    // devices that allow 16.
    {
      label: 'NF4 double-quant + adapter',
      opts: { adapter: adapterDir(NAME), quantize: 'nf4' as const, doubleQuant: true },
    },
  ];
  for (const v of variants) {
    it(`${v.label}: decode logits equal the full forward's at each position (two left-padded rows)`, async () => {
      const model = await LlamaModel.load(modelDir(NAME), v.opts);
      try {
        const ids = golden.models[NAME].token_ids[0]!.slice(0, 12);
        const n = ids.length;
        const V = model.config.vocabSize;
        const full = noGrad(() => model.logits({ inputIds: Int32Array.from(ids), batchSize: 1, seqLen: n }));
        const want = await full.toFloat32();
        full.dispose();
        // Row 0: the sequence; row 1: its first 5 tokens left-padded by 2 (decoded alongside).
        const cache = model.newKvCache(2, n + 2, [0, 2]);
        const pre = Int32Array.from([...ids.slice(0, 7), 0, 0, ...ids.slice(0, 5)]);
        model.step(pre, cache).dispose();
        for (let t = 7; t < n; t++) {
          const step = model.step(Int32Array.of(ids[t]!, ids[t - 2]!), cache);
          const got = await step.toFloat32();
          step.dispose();
          // Same weights, another summation order (norm folded, fused LoRA): f32 rounding of sums
          // over K = 64..128 terms of O(1) values through 2 layers, ≲ 1e-5; the parity decode test
          // allows 2e-5.
          expectClose(
            got.subarray(0, V),
            want.subarray(t * V, (t + 1) * V),
            { atol: 2e-5, rtol: 1e-5 },
            `${v.label} row 0 at ${t}`,
          );
          expectClose(
            got.subarray(V, 2 * V),
            want.subarray((t - 2) * V, (t - 1) * V),
            { atol: 2e-5, rtol: 1e-5 },
            `${v.label} row 1 at ${t - 2}`,
          );
        }
        disposeKvCache(cache);
      } finally {
        model.dispose();
      }
    }, 600_000);
  }
});

describe('mergeAdapter (--merge-adapter)', () => {
  const tempDir = useTempDir();
  it('loads the weights an exported merged checkpoint holds (bit-identical logits, f32 and bf16, NF4 codes) and decodes like the unmerged model', async () => {
    const merged = `${await tempDir()}/merged`;
    await exportMerged(adapterDir(NAME), modelDir(NAME), merged, { dtype: 'f32' });
    const ids = Int32Array.from(golden.models[NAME].token_ids[1]!.slice(0, 10));
    const inp = { inputIds: ids, batchSize: 1, seqLen: ids.length };
    const logitsOf = async (m: LlamaModel) => {
      const t = noGrad(() => m.logits(inp));
      const v = await t.toFloat32();
      t.dispose();
      return v;
    };
    for (const opts of [{}, { storage: 'bf16' as const }, { quantize: 'nf4' as const }]) {
      const a = await LlamaModel.load(modelDir(NAME), { ...opts, adapter: adapterDir(NAME), mergeAdapter: true });
      const b = await LlamaModel.load(merged, opts);
      expect(a.lora).toBeNull();
      // The same f32 merge (merge.ts) rounded or quantized the same way: identical weights.
      expect(Array.from(await logitsOf(a))).toEqual(Array.from(await logitsOf(b)));
      a.dispose();
      b.dispose();
    }
    // Against the adapter installed as LoRA: W + s·B·A rounded once vs x·W + s·(x·Aᵀ)·Bᵀ, f32.
    const merged32 = await LlamaModel.load(modelDir(NAME), { adapter: adapterDir(NAME), mergeAdapter: true });
    const lora = await LlamaModel.load(modelDir(NAME), { adapter: adapterDir(NAME) });
    expectClose(await logitsOf(merged32), await logitsOf(lora), { atol: 2e-5, rtol: 1e-5 }, 'merged vs LoRA logits');
    const prompt = golden.models[NAME].greedy_prompt_ids;
    expect((await generate(merged32, prompt, { maxNewTokens: 8, eosTokenIds: [] })).tokens).toEqual(
      (await generate(lora, prompt, { maxNewTokens: 8, eosTokenIds: [] })).tokens,
    );
    merged32.dispose();
    lora.dispose();
    await expect(LlamaModel.load(modelDir(NAME), { mergeAdapter: true })).rejects.toThrow(/needs an adapter/);
  }, 600_000);
});

describe('GPU sampling in generate', () => {
  it('sampled tokens equal the CPU reference sampler on the same logits with draws rand_uniform(seed, t)', async () => {
    const model = await LlamaModel.load(modelDir(NAME), { adapter: adapterDir(NAME) });
    try {
      const prompt = golden.models[NAME].greedy_prompt_ids;
      const params = { greedy: false, temperature: 1.3, topK: 40, topP: 0.9, repetitionPenalty: 1.25, seed: 12345 };
      const n = 10;
      const got = await generate(model, prompt, { ...params, maxNewTokens: n, eosTokenIds: [] });
      expect(got.tokens).toEqual(
        (await generate(model, prompt, { ...params, maxNewTokens: n, eosTokenIds: [] })).tokens,
      );
      // The CPU loop: same model steps, logits read back, the reference sampler, the same draws.
      const cache = model.newKvCache(1, prompt.length + n);
      let input = Int32Array.from(prompt);
      const seen = [...prompt];
      let nearTies = 0;
      for (let t = 0; t < n; t++) {
        const l = model.step(input, cache);
        const logits = await l.toFloat32();
        l.dispose();
        const ref = referenceNextToken(logits, params, seen, prompt.length, hashUniform(params.seed, t));
        if (ref.token !== got.tokens[t]) {
          // Only a draw within f32 rounding of a cumulative boundary may differ (see sampling.ts).
          expect(ref.margin).toBeLessThan(1e-5);
          nearTies++;
          break; // the sequences diverge from here
        }
        seen.push(ref.token);
        input = Int32Array.of(ref.token);
      }
      expect(nearTies).toBe(0);
      disposeKvCache(cache);
    } finally {
      model.dispose();
    }
  }, 600_000);
});

describe('non-finite logits', () => {
  it('generate stops with NonFiniteLogitsError when the forward overflows', async () => {
    const model = await LlamaModel.load(modelDir(NAME));
    try {
      // NaN in the lm_head row of token 7: every step's logits hold a NaN.
      const D = model.config.hiddenSize;
      engine().dev.write(model.weights.lmHead.buffer, 7 * D * 4, new Float32Array(D).fill(NaN));
      await expect(generate(model, [1, 2, 3], { maxNewTokens: 4 })).rejects.toThrow(NonFiniteLogitsError);
      await expect(generateBatch(model, [[1, 2], [3]], { maxNewTokens: 4, eosTokenIds: [] })).rejects.toThrow(
        /new token 1: the model produced non-finite logits/,
      );
    } finally {
      model.dispose();
    }
  }, 600_000);
});

describe('batched decoding', () => {
  it('batch-8 rows equal batch-1 runs (greedy and sampled), prompts of 8 different lengths', async () => {
    const model = await LlamaModel.load(modelDir(NAME));
    try {
      const g = golden.models[NAME];
      const prompts = [1, 2, 3, 5, 8, 11, 13, 16].map((len, i) => g.token_ids[i % g.token_ids.length]!.slice(0, len));
      for (const opts of [
        { maxNewTokens: 6, eosTokenIds: [] as number[] },
        { maxNewTokens: 6, eosTokenIds: [] as number[], greedy: false, temperature: 0.9, topK: 50, seed: 3 },
      ]) {
        const batched = await generateBatch(model, prompts, opts);
        for (let b = 0; b < prompts.length; b++) {
          expect(batched[b]).toEqual(await generate(model, prompts[b]!, { ...opts, seed: (opts.seed ?? 0) + b }));
        }
        // Explicit per-row seeds reorder freely: row order does not change a row's draws.
        const order = [7, 2, 0, 5, 1, 6, 3, 4];
        const shuffled = await generateBatch(
          model,
          order.map((i) => prompts[i]!),
          { ...opts, seeds: order.map((i) => (opts.seed ?? 0) + i) },
        );
        order.forEach((i, b) => {
          expect(shuffled[b]).toEqual(batched[i]);
        });
      }
    } finally {
      model.dispose();
    }
  }, 900_000);
});

describe('per-step work of decoding', () => {
  it('one submit, one small readback, no buffers, no bind groups and ≤ 2 writes per step; one readback when nothing checks tokens', async () => {
    const model = await LlamaModel.load(modelDir(NAME), { adapter: adapterDir(NAME) });
    const e = engine();
    e.pool.poisonOnAcquire = false; // poisoning writes every buffer handed out: counted writes
    try {
      const prompts = [
        [1, 5, 9],
        [2, 7],
      ];
      type Stats = typeof e.dev.stats;
      const diff = (x: Stats, y: Stats) =>
        Object.fromEntries(
          Object.keys(x).map((k) => [k, y[k as keyof Stats] - x[k as keyof Stats]]),
        ) as unknown as Stats;
      const run = async (n: number, eosTokenIds: number[]) => {
        const before = { ...e.dev.stats };
        await generateBatch(model, prompts, { maxNewTokens: n, eosTokenIds });
        return diff(before, e.dev.stats);
      };
      // Steady state: the counters between the 3rd and the 11th token of row 0 (one step is always
      // recorded ahead of the token being handed out, so this spans exactly 8 recorded steps).
      const snaps: Stats[] = [];
      const eos = [model.config.vocabSize - 1];
      await generateBatch(model, prompts, { maxNewTokens: 12, eosTokenIds: eos }); // warm-up: pipelines, pool
      await generateBatch(model, prompts, { maxNewTokens: 12, eosTokenIds: eos }, (row) => {
        if (row === 0) snaps.push({ ...e.dev.stats });
      });
      const d = diff(snaps[2]!, snaps[10]!);
      const per = (k: keyof Stats) => d[k] / 8;
      const layers = model.config.numHiddenLayers;
      // Per layer with LoRA on all modules: 4 LoRA-down + 4 GEMVs + ropeAppend + attention; then
      // embedding, lm_head, sampler.
      expect(per('dispatches')).toBe(layers * 10 + 3);
      expect(per('submits')).toBe(1);
      expect(per('readbacks')).toBe(1);
      expect(per('readBytes')).toBe(2 * 4);
      expect(per('buffersCreated')).toBe(0);
      expect(per('bindGroups')).toBe(0); // attention's kvLength changes: a new uniform block, at a dynamic offset
      expect(per('writes')).toBeLessThanOrEqual(2); // the cache length; new uniform blocks
      // No EOS ids and no callback: the tokens come back in one readback at the end.
      const quiet = await run(12, []);
      expect(quiet.readbacks).toBe(1);
    } finally {
      e.pool.poisonOnAcquire = true;
      model.dispose();
    }
  }, 600_000);
});
