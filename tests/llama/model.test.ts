// The Llama model on the engine beyond HF parity: an independent float64 CPU reference with a random
// adapter, loss masking and packing, gradient checkpointing (with dropout), batched KV-cache
// decoding, 16-bit weight storage, LoRA init, and the loader's errors.
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readRefWeights, refLogits, refLoss } from '../../reference/llama.js';
import { argmax } from '../../reference/sampling.js';
import { backward, noGrad, zeroGrad } from '../../src/engine/autograd.js';
import { computePrecision, type Precision, setComputePrecision } from '../../src/engine/precision.js';
import { tidy } from '../../src/engine/tensor.js';
import { InputError } from '../../src/errors.js';
import { Checkpoint, type SafetensorsEntry, writeSafetensors } from '../../src/io/safetensors.js';
import { generate, generateBatch } from '../../src/llama/generate.js';
import {
  type CheckpointMode,
  disposeKvCache,
  IGNORE_INDEX,
  type KvCacheSetting,
  LlamaModel,
  shiftLabels,
} from '../../src/llama/model.js';
import { loraKey } from '../../src/llama/peft.js';
import { LINEAR_MODULES } from '../../src/llama/weights.js';
import { sequenceLosses } from '../../src/pipeline/eval/perplexity.js';
import { expectClose, requireFeature, testRng, useEngine } from '../helpers/index.js';
import { adapterDir, expectGoldenLosses, golden, maxAbs, modelDir, useTempDir } from './helpers.js';

useEngine();
const tempDir = useTempDir();
const GQA = 'gqa-f32' as const;
const MQA = 'mqa-bf16-tied-llama3rope' as const;

describe('Llama forward vs the float64 CPU reference', () => {
  let model: LlamaModel;
  beforeAll(async () => {
    model = await LlamaModel.load(modelDir(MQA));
  });
  afterAll(() => model?.dispose());

  it('logits and loss with a random adapter (rsLoRA, non-zero B) on a random sequence', async () => {
    const rng = testRng('llama forward vs f64');
    const cfg = model.config;
    const r = 3;
    model.initLora({ r, loraAlpha: 5, useRslora: true }, rng.nextU32());
    // Give B random values too (PEFT init has B = 0, which would hide the LoRA path).
    const adapter = await model.adapter();
    for (const pair of adapter.weights.values()) pair.B = rng.normalArray(pair.B.length, 0, 0.1);
    model.setAdapter(adapter);
    const T = 23;
    const ids = Array.from({ length: T }, () => rng.int(cfg.vocabSize));
    const W = await readRefWeights(modelDir(MQA));
    const want = refLogits(cfg, W, ids, {
      scale: 5 / Math.sqrt(r),
      get: (l, m) => {
        const p = adapter.weights.get(loraKey(l, m));
        return p ? { A: Float64Array.from(p.A), B: Float64Array.from(p.B), r } : undefined;
      },
    });
    const logits = noGrad(() => model.logits({ inputIds: Int32Array.from(ids), batchSize: 1, seqLen: T }));
    // f32 vs f64 over 2 layers: a few ulp per dot product of length <= 160; logits are O(1).
    expectClose(await logits.toFloat32(), want, { atol: 2e-5, rtol: 1e-5 }, 'logits vs f64');
    logits.dispose();
    const [per] = await sequenceLosses(model, [ids]);
    expect(Math.abs(per!.loss - refLoss(want, ids, cfg.vocabSize))).toBeLessThan(1e-5);
    model.disposeLora();
  });
});

describe('loss, masking, packing', () => {
  let model: LlamaModel;
  beforeAll(async () => {
    model = await LlamaModel.load(modelDir(GQA), { adapter: adapterDir(GQA) });
  });
  afterAll(() => model?.dispose());

  it('loss() is the mean NLL over labels != -100 of a padded, packed batch of 2 rows', async () => {
    const [a, b, c] = golden.models[GQA].token_ids as [number[], number[], number[]];
    // Row 0: text a then text b packed (segments 1, 2); row 1: text c then padding.
    const T = a.length + b.length;
    const ids = new Int32Array(2 * T);
    const labels = new Int32Array(2 * T).fill(IGNORE_INDEX);
    const pos = new Int32Array(2 * T);
    const seg = new Int32Array(2 * T);
    const put = (row: number, off: number, toks: number[], s: number) => {
      toks.forEach((id, t) => {
        const i = row * T + off + t;
        ids[i] = id;
        pos[i] = t;
        seg[i] = s;
        if (t + 1 < toks.length) labels[i] = toks[t + 1]!;
      });
    };
    put(0, 0, a, 1);
    put(0, a.length, b, 2);
    put(1, 0, c, 1);
    const batch = { inputIds: ids, labels, positionIds: pos, segmentIds: seg, batchSize: 2, seqLen: T };
    const loss = await noGrad(() => model.loss(batch)).item();
    const g = golden.models[GQA].adapter_loss;
    const counts = [a.length - 1, b.length - 1, c.length - 1];
    const want =
      (g[0]! * counts[0]! + g[1]! * counts[1]! + g[2]! * counts[2]!) / (counts[0]! + counts[1]! + counts[2]!);
    expect(Math.abs(loss - want)).toBeLessThan(1e-4);
    // Per-token losses: zero exactly where ignored, and summing per segment gives each text's loss.
    const nll = await model.tokenLosses(batch);
    for (let i = 0; i < nll.length; i++) if (labels[i] === IGNORE_INDEX) expect(nll[i]).toBe(0);
    const sumRange = (from: number, n: number) => nll.subarray(from, from + n).reduce((s, v) => s + v, 0);
    expect(Math.abs(sumRange(0, a.length) / counts[0]! - g[0]!)).toBeLessThan(1e-4);
    expect(Math.abs(sumRange(a.length, b.length) / counts[1]! - g[1]!)).toBeLessThan(1e-4);
    expect(Math.abs(sumRange(T, c.length) / counts[2]! - g[2]!)).toBeLessThan(1e-4);
  });

  it('shiftLabels follows HF: target of t is ids[t+1] in the same row, last position ignored', () => {
    expect(Array.from(shiftLabels(Int32Array.from([5, 6, 7, 8, 9, 10]), 2, 3))).toEqual([6, 7, -100, 9, 10, -100]);
  });
});

describe('training mode', () => {
  it('selective and full checkpointing give the same loss and LoRA gradients as none, bit for bit, with dropout on', async () => {
    const model = await LlamaModel.load(modelDir(GQA), { adapter: adapterDir(GQA) });
    try {
      model.lora!.config.loraDropout = 0.2;
      model.training = true;
      const ids = Int32Array.from(golden.models[GQA].token_ids[1]!);
      const batch = { inputIds: ids, labels: shiftLabels(ids, 1, ids.length), batchSize: 1, seqLen: ids.length };
      const run = async (ckpt: CheckpointMode) => {
        model.setDropoutSeed(1234);
        const loss = tidy(() => {
          const l = model.loss(batch, { gradientCheckpointing: ckpt });
          backward(l);
          return l;
        });
        const value = await loss.item();
        loss.dispose();
        const grads = new Map<string, Float32Array>();
        for (const [n, p] of model.namedLoraParameters()) grads.set(n, await p.grad!.toFloat32());
        zeroGrad(model.loraParameters());
        return { value, grads };
      };
      const plain = await run('none');
      // Dropout really is on: a different seed gives another loss.
      model.setDropoutSeed(99);
      const other = await noGrad(() => model.loss(batch)).item();
      expect(Math.abs(other - plain.value)).toBeGreaterThan(1e-6);
      // Same kernels, same inputs, same order: the recomputation is bit-identical.
      for (const mode of ['selective', 'full'] as const) {
        const ckpt = await run(mode);
        expect(ckpt.value, mode).toBe(plain.value);
        for (const [n, gPlain] of plain.grads) {
          expect(maxAbs(gPlain)).toBeGreaterThan(0);
          expectClose(ckpt.grads.get(n)!, gPlain, { atol: 0 }, `${mode}: ${n}`);
        }
      }
    } finally {
      model.dispose();
    }
  });

  it('initLora follows PEFT: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0, so the loss equals the base loss', async () => {
    const model = await LlamaModel.load(modelDir(GQA));
    try {
      model.initLora({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, 7);
      const named = model.namedLoraParameters();
      expect(named.size).toBe(2 * 3 * model.config.numHiddenLayers);
      for (const [n, p] of named) {
        expect(p.requiresGrad).toBe(true);
        const v = await p.toFloat32();
        if (n.includes('lora_B')) expect(maxAbs(v)).toBe(0);
        else {
          const bound = 1 / Math.sqrt(p.shape[1]!);
          expect(maxAbs(v)).toBeLessThanOrEqual(bound);
          expect(maxAbs(v)).toBeGreaterThan(0.9 * bound);
        }
      }
      await expectGoldenLosses(model, GQA, 'base_loss', 'loss with B = 0', 2);
    } finally {
      model.dispose();
    }
  });
});

describe('KV cache, batched', () => {
  it('two rows decoded together match each row of a full forward', async () => {
    const model = await LlamaModel.load(modelDir(MQA), { adapter: adapterDir(MQA) });
    try {
      const [a, b] = golden.models[MQA].token_ids as [number[], number[]];
      const n = 12;
      const rows = [a.slice(0, n), b.slice(0, n)];
      const full = noGrad(() => model.logits({ inputIds: Int32Array.from(rows.flat()), batchSize: 2, seqLen: n }));
      const fullData = await full.toFloat32();
      full.dispose();
      const V = model.config.vocabSize;
      const cache = model.newKvCache(2, n);
      const pre = model.step(Int32Array.from([...rows[0]!.slice(0, 8), ...rows[1]!.slice(0, 8)]), cache);
      const preData = await pre.toFloat32();
      pre.dispose();
      for (let r = 0; r < 2; r++)
        expectClose(
          preData.subarray(r * V, (r + 1) * V),
          fullData.subarray((r * n + 7) * V, (r * n + 8) * V),
          { atol: 2e-5, rtol: 1e-5 },
          `prefill row ${r}`,
        );
      for (let t = 8; t < n; t++) {
        const s = model.step(Int32Array.of(rows[0]![t]!, rows[1]![t]!), cache);
        const d = await s.toFloat32();
        s.dispose();
        for (let r = 0; r < 2; r++)
          expectClose(
            d.subarray(r * V, (r + 1) * V),
            fullData.subarray((r * n + t) * V, (r * n + t + 1) * V),
            { atol: 2e-5, rtol: 1e-5 },
            `row ${r} t ${t}`,
          );
      }
      expect(() => model.step(Int32Array.of(1, 1), cache)).toThrow(/KV cache full/);
      disposeKvCache(cache);
    } finally {
      model.dispose();
    }
  });

  // Storing K and V in f16 moves each by ≤ u = 2⁻¹¹ relative, so each attention output moves by
  // ≲ 2u of its scale (the flash attention tests derive the bound); to first order the two layers
  // add their shifts and the head carries them to the logits: 4u of the logits' scale (measured:
  // ~0.4u). A greedy choice can then differ only where the f32 top two logits are within 2·that.
  const F16_CACHE_ATOL = (logits: Float32Array) => 4 * 2 ** -11 * maxAbs(logits);

  for (const name of [GQA, MQA]) {
    it(`${name}: an f16 cache takes half the memory and decodes within f16 rounding of the f32 cache`, async () => {
      const model = await LlamaModel.load(modelDir(name), { adapter: adapterDir(name) });
      try {
        const ids = (golden.models[name].token_ids as number[][])[0]!;
        const n = 12;
        const caches = [model.newKvCache(1, n), model.newKvCache(1, n, undefined, 'f16')];
        expect(caches[1]!.k[0]!.byteSize * 2).toBe(caches[0]!.k[0]!.byteSize);
        const logits: Float32Array[][] = [[], []];
        for (const [c, cache] of caches.entries()) {
          const pre = model.step(Int32Array.from(ids.slice(0, 8)), cache);
          logits[c]!.push(await pre.toFloat32());
          pre.dispose();
          for (let t = 8; t < n; t++) {
            const s = model.step(Int32Array.of(ids[t]!), cache);
            logits[c]!.push(await s.toFloat32());
            s.dispose();
          }
          disposeKvCache(cache);
        }
        let diff = 0;
        for (const [i, ref] of logits[0]!.entries()) {
          expectClose(logits[1]![i]!, ref, { atol: F16_CACHE_ATOL(ref) }, `step ${i}`);
          diff = Math.max(diff, ...ref.map((x, j) => Math.abs(x - logits[1]![i]![j]!)));
        }
        expect(diff).toBeGreaterThan(0); // the f16 path really ran
      } finally {
        model.dispose();
      }
    });

    it(`${name}: greedy decoding with an f16 cache makes the f32 cache's choices, except at near-ties within the bound`, async () => {
      const model = await LlamaModel.load(modelDir(name), { adapter: adapterDir(name) });
      try {
        const prompts = (golden.models[name].token_ids as number[][]).slice(0, 3).map((t) => t.slice(0, 6));
        const n = 10;
        const opts = { maxNewTokens: n, greedy: true, eosTokenIds: [] };
        const out32 = await generateBatch(model, prompts, { ...opts, kvCache: 'f32' });
        const out16 = await generateBatch(model, prompts, { ...opts, kvCache: 'f16' });
        for (const [b, prompt] of prompts.entries()) {
          const want = out32[b]!.tokens;
          const got = out16[b]!.tokens;
          // Replay the f32 choices through an f32 and an f16 cache: at each step the f16 logits are
          // within the bound, and the two greedy choices agree unless the f32 logits' top two are
          // within twice the bound of each other; from the first such step on the outputs may part.
          const caches = [
            model.newKvCache(1, prompt.length + n),
            model.newKvCache(1, prompt.length + n, undefined, 'f16'),
          ];
          let feed: number[] = prompt;
          let parted = false;
          for (let t = 0; t < n && !parted; t++) {
            const [l32, l16] = await Promise.all(
              caches.map(async (c) => {
                const s = model.step(Int32Array.from(feed), c);
                const d = await s.toFloat32();
                s.dispose();
                return d;
              }),
            );
            const atol = F16_CACHE_ATOL(l32!);
            expectClose(l16!, l32!, { atol }, `row ${b} step ${t}`);
            const top = argmax(l32!);
            expect(top, `row ${b} step ${t}`).toBe(want[t]);
            const second = Math.max(...l32!.filter((_, j) => j !== top));
            if (l32![top]! - second <= 2 * atol)
              parted = got[t] !== want[t]; // a near-tie: either choice is within f16 rounding
            else {
              expect(argmax(l16!), `row ${b} step ${t}`).toBe(top);
              expect(got[t], `row ${b} step ${t}`).toBe(want[t]);
            }
            feed = [want[t]!];
          }
          caches.forEach(disposeKvCache);
          if (!parted) expect(got).toEqual(want);
        }
      } finally {
        model.dispose();
      }
    });
  }

  /** Runs `body` with a probe that says which cache dtype `generate` allocates for a setting and precision. */
  async function withCacheProbe(
    body: (
      dtypeUsed: (kvCache: KvCacheSetting | undefined, precision: Precision) => Promise<unknown>,
      model: LlamaModel,
      prompt: number[],
    ) => Promise<void>,
  ): Promise<void> {
    const model = await LlamaModel.load(modelDir(GQA));
    const spy = vi.spyOn(model, 'newKvCache');
    const prompt = (golden.models[GQA].token_ids as number[][])[0]!.slice(0, 4);
    const dtypeUsed = async (kvCache: KvCacheSetting | undefined, precision: Precision) => {
      spy.mockClear();
      const prev = computePrecision();
      setComputePrecision(precision);
      try {
        await generate(model, prompt, { maxNewTokens: 2, eosTokenIds: [], ...(kvCache ? { kvCache } : {}) });
      } finally {
        setComputePrecision(prev);
      }
      expect(spy).toHaveBeenCalledTimes(1);
      return spy.mock.calls[0]![3];
    };
    try {
      await body(dtypeUsed, model, prompt);
    } finally {
      spy.mockRestore();
      model.dispose();
    }
  }

  it('generate picks the cache storage: kvCache f32 / f16, or auto (the default) by the engine precision', async () => {
    await withCacheProbe(async (dtypeUsed, model, prompt) => {
      expect(await dtypeUsed(undefined, 'fp32')).toBe('f32');
      expect(await dtypeUsed('auto', 'fp32')).toBe('f32');
      expect(await dtypeUsed('f16', 'fp32')).toBe('f16');
      await expect(generate(model, prompt, { maxNewTokens: 1, kvCache: 'fp8' as KvCacheSetting })).rejects.toThrow(
        /key 'kv-cache': expected f32, f16, auto/,
      );
    });
  });

  it('under fp16-mixed, auto picks an f16 cache and an explicit f32 stays f32', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    await withCacheProbe(async (dtypeUsed) => {
      expect(await dtypeUsed(undefined, 'fp16-mixed')).toBe('f16');
      expect(await dtypeUsed('f32', 'fp16-mixed')).toBe('f32');
    });
  });
});

describe('weight storage', () => {
  it('bf16 storage of a bf16 checkpoint is lossless; NF4 leaves embeddings, norms and lm_head dense', async () => {
    const model = await LlamaModel.load(modelDir(MQA), { storage: 'bf16', adapter: adapterDir(MQA) });
    try {
      expect(model.weights.embedTokens.dtype).toBe('bf16');
      expect(model.weights.lmHead).toBe(model.weights.embedTokens); // tied
      expect(model.weights.layers[0]!.linear.q_proj).toHaveProperty('dtype', 'bf16');
      await expectGoldenLosses(model, MQA, 'adapter_loss', 'bf16 storage loss', 3);
    } finally {
      model.dispose();
    }
    const q = await LlamaModel.load(modelDir(GQA), { quantize: 'nf4' });
    try {
      for (const mod of LINEAR_MODULES) expect(q.weights.layers[1]!.linear[mod]).toHaveProperty('codes');
      expect(q.weights.embedTokens.dtype).toBe('f32');
      expect(q.weights.lmHead.dtype).toBe('f32');
      expect(q.weights.norm.dtype).toBe('f32');
    } finally {
      q.dispose();
    }
  });
});

describe('loader errors', () => {
  async function brokenCopy(edit: (entries: SafetensorsEntry[]) => SafetensorsEntry[]): Promise<string> {
    const dir = await tempDir();
    const src = modelDir(GQA);
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json'])
      await copyFile(join(src, f), join(dir, f));
    const ck = await Checkpoint.open(src);
    const entries: SafetensorsEntry[] = [];
    for (const name of ck.names())
      entries.push({ name, dtype: 'F32', shape: ck.shape(name), data: await ck.readF32(name) });
    await ck.close();
    await writeSafetensors(join(dir, 'model.safetensors'), edit(entries));
    return dir;
  }

  it('a missing tensor is an InputError naming it and the file', async () => {
    const dir = await brokenCopy((e) => e.filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight'));
    const err = await LlamaModel.load(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toContain('model.layers.1.mlp.up_proj.weight');
    expect((err as Error).message).toContain(dir);
  });

  it('a shape mismatch is an InputError naming tensor, file, expected and actual shapes', async () => {
    const dir = await brokenCopy((e) =>
      e.map((t) => (t.name === 'model.norm.weight' ? { ...t, shape: [47], data: new Float32Array(47) } : t)),
    );
    const err = await LlamaModel.load(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/model\.norm\.weight.*\[47\].*\[48\]/);
    expect((err as Error).message).toContain(join(dir, 'model.safetensors'));
  });

  it('a missing folder and an adapter that does not fit are InputErrors', async () => {
    await expect(LlamaModel.load(join(await tempDir(), 'nope'))).rejects.toBeInstanceOf(InputError);
    const err = await LlamaModel.load(modelDir(GQA), { adapter: adapterDir(MQA) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/do not fit the model/);
  });
});
