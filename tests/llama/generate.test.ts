// Decoding: logit processors with transformers' semantics (checked on hand-made logits), the text
// streamer, and generate()'s stopping and seeding on a fixture model.
import { writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyRepetitionPenalty, applyWarpers, argmax, softmax } from '../../reference/sampling.js';
import { samplingFromFlags } from '../../src/cli/generate.js';
import { InputError } from '../../src/errors.js';
import {
  generate,
  generateBatch,
  MAX_SEED,
  MIN_REPETITION_PENALTY,
  MIN_TEMPERATURE,
  readGenerationConfig,
  type SamplingOptions,
  TextStreamer,
  validateSampling,
} from '../../src/llama/generate.js';
import { LlamaModel } from '../../src/llama/model.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { useEngine } from '../helpers/index.js';
import { golden, MODEL_NAMES, modelDir } from './helpers.js';

useEngine();

describe('logit processors of the CPU reference sampler (transformers semantics)', () => {
  it('repetition penalty divides positive and multiplies negative logits, once per token', () => {
    const l = Float32Array.from([2, -2, 1, 0.5]);
    applyRepetitionPenalty(l, [0, 1, 1, 3], 2);
    expect(Array.from(l)).toEqual([1, -4, 1, 0.25]);
  });

  it('temperature, then top-k (ties with the k-th kept), then top-p on the warped distribution', () => {
    const l = Float32Array.from([4, 2, 2, 0, -1]);
    applyWarpers(l, { temperature: 2, topK: 2 });
    expect(Array.from(l)).toEqual([2, 1, 1, -Infinity, -Infinity]);
    // top-p: probabilities of [3, 2, 1, 0] are .644, .237, .087, .032; p = 0.85 keeps the first two
    // (cumulative mass from the bottom, .032 + .087 = .119 <= .15, is removed; .356 is not).
    const m = Float32Array.from([3, 2, 1, 0]);
    applyWarpers(m, { topP: 0.85 });
    expect(Array.from(m)).toEqual([3, 2, -Infinity, -Infinity]);
    const one = Float32Array.from([5, 0, 0]);
    applyWarpers(one, { topP: 0.01 });
    expect(Array.from(one)).toEqual([5, -Infinity, -Infinity]); // the best token always stays
  });

  it('softmax and argmax', () => {
    const p = softmax(Float32Array.from([0, Math.log(3)]));
    expect(p[0]).toBeCloseTo(0.25, 7); // ln 3 rounded to f32 moves p by ~4e-9
    expect(argmax([1, 3, 3, 2])).toBe(1); // first maximum, as torch.argmax
  });

  it('the streamer holds back incomplete UTF-8 and emits each character once', () => {
    // A fake byte-fallback tokenizer: ids are bytes; decode replaces incomplete sequences by U+FFFD.
    const decode = (ids: readonly number[]) => new TextDecoder().decode(Uint8Array.from(ids));
    const s = new TextStreamer(decode);
    const bytes = [...new TextEncoder().encode('€0.52 — ok')];
    let out = '';
    const pieces: string[] = [];
    for (const b of bytes) {
      const p = s.push(b);
      pieces.push(p);
      out += p;
    }
    out += s.flush();
    expect(out).toBe('€0.52 — ok');
    expect(pieces.slice(0, 3)).toEqual(['', '', '€']);
  });
});

describe('generate()', () => {
  it('stops at EOS, is reproducible by seed, and validates its options', async () => {
    const name = 'gqa-f32';
    const model = await LlamaModel.load(modelDir(name));
    try {
      const prompt = golden.models[name].greedy_prompt_ids;
      const greedy = golden.models[name].greedy_base;
      // Declare the 3rd greedy token an EOS id: generation stops right after emitting it.
      const streamed: number[] = [];
      const r = await generate(
        model,
        prompt,
        { maxNewTokens: 10, eosTokenIds: [greedy[2]!] },
        (id) => void streamed.push(id),
      );
      expect(r).toEqual({ tokens: greedy.slice(0, 3), stopReason: 'eos' });
      expect(streamed).toEqual(r.tokens);
      const sample = (seed: number) =>
        generate(model, prompt, { maxNewTokens: 6, greedy: false, temperature: 1.5, topK: 0, seed, eosTokenIds: [] });
      const [a, b, c] = [await sample(1), await sample(1), await sample(2)];
      expect(a.tokens).toEqual(b.tokens);
      expect(a.stopReason).toBe('max_new_tokens');
      expect(c.tokens).not.toEqual(a.tokens);
      await expect(generate(model, prompt, { maxNewTokens: 3, temperature: -1 })).rejects.toBeInstanceOf(InputError);
      await expect(generate(model, [], { maxNewTokens: 3 })).rejects.toBeInstanceOf(InputError);
      const tok = await LlamaTokenizer.load(modelDir(name));
      expect(tok.decode(prompt)).toContain('Thank you');
    } finally {
      model.dispose();
    }
  });
});

describe('generateBatch() (left-padded prompts of different lengths)', () => {
  for (const name of MODEL_NAMES) {
    it(`${name}: greedy batched output equals single-prompt greedy output for every prompt, with per-row EOS`, async () => {
      const model = await LlamaModel.load(modelDir(name));
      try {
        const g = golden.models[name];
        // Lengths 8, 1, 13, 4 (the longest pads the others by 5, 12, 9 positions).
        const prompts = [
          g.greedy_prompt_ids,
          g.token_ids[0]!.slice(0, 1),
          g.token_ids[1]!.slice(0, 13),
          g.token_ids[2 % g.token_ids.length]!.slice(1, 5),
        ];
        expect(prompts.map((p) => p.length)).toEqual([8, 1, 13, 4]);
        const opts = { maxNewTokens: 7, eosTokenIds: [] as number[] };
        const single = [];
        for (const p of prompts) single.push(await generate(model, p, opts));
        expect(single[0]!.tokens).toEqual(g.greedy_base.slice(0, 7)); // anchors the single path to HF
        const streamed: [number, number][] = [];
        const batched = await generateBatch(model, prompts, opts, (row, id) => void streamed.push([row, id]));
        expect(batched).toEqual(single);
        for (let b = 0; b < prompts.length; b++)
          expect(streamed.filter(([r]) => r === b).map(([, id]) => id)).toEqual(batched[b]!.tokens);
        // Per-row stopping: declare the 2nd greedy token of prompt 1 an EOS id. Rows stop at their own
        // first occurrence of it (or run to maxNewTokens); the others keep going.
        const eosOpts = { maxNewTokens: 7, eosTokenIds: [single[1]!.tokens[1]!] };
        const singleEos = [];
        for (const p of prompts) singleEos.push(await generate(model, p, eosOpts));
        expect(singleEos[1]!.stopReason).toBe('eos');
        const batchedEos = await generateBatch(model, prompts, eosOpts);
        expect(batchedEos).toEqual(singleEos);
        expect(new Set(batchedEos.map((r) => r.tokens.length)).size).toBeGreaterThan(1);
      } finally {
        model.dispose();
      }
    }, 900_000);
  }

  it('sampling: row b uses seed + b (same stream as generate with that seed); edge cases', async () => {
    const name = 'gqa-f32';
    const model = await LlamaModel.load(modelDir(name));
    try {
      const g = golden.models[name];
      const prompts = [g.greedy_prompt_ids, g.token_ids[0]!.slice(0, 3)];
      const opts = { maxNewTokens: 5, greedy: false, temperature: 1.5, seed: 11, eosTokenIds: [] as number[] };
      const batched = await generateBatch(model, prompts, opts);
      for (let b = 0; b < prompts.length; b++)
        expect(batched[b]).toEqual(await generate(model, prompts[b]!, { ...opts, seed: 11 + b }));
      expect(await generateBatch(model, [], opts)).toEqual([]);
      expect(await generateBatch(model, prompts, { ...opts, maxNewTokens: 0 })).toEqual([
        { tokens: [], stopReason: 'max_new_tokens' },
        { tokens: [], stopReason: 'max_new_tokens' },
      ]);
      await expect(generateBatch(model, [[1], []], { maxNewTokens: 3 })).rejects.toBeInstanceOf(InputError);
    } finally {
      model.dispose();
    }
  }, 900_000);
});

describe('sampling values the GPU cannot honour are refused by name (issue 20, items 5 and 11)', () => {
  it('temperature or repetition penalty below 1e-5, seeds outside [0, 2^32 - 1]: InputError naming the flag; the edges pass', () => {
    const refused: [Partial<SamplingOptions>, RegExp][] = [
      [{ temperature: 1e-39 }, /key 'temperature': expected a number >= 0\.00001/],
      [{ temperature: 9e-6 }, /key 'temperature'/],
      [{ temperature: 0 }, /key 'temperature'.*--greedy/],
      [{ repetitionPenalty: 1e-39 }, /key 'repetition-penalty': expected a number >= 0\.00001/],
      [{ repetitionPenalty: 0 }, /key 'repetition-penalty'/],
      [{ seed: 4294967297 }, /key 'seed': expected an integer in \[0, 4294967295\]/],
      [{ seed: 2 ** 32 }, /key 'seed'/],
      [{ seed: -1 }, /key 'seed'/],
    ];
    for (const [o, message] of refused)
      expect(() => validateSampling({ maxNewTokens: 1, ...o }), JSON.stringify(o)).toThrow(message);
    expect(() =>
      validateSampling({
        maxNewTokens: 1,
        temperature: MIN_TEMPERATURE,
        repetitionPenalty: MIN_REPETITION_PENALTY,
        seed: MAX_SEED,
      }),
    ).not.toThrow();
  });

  it('`finllm generate` flags and generation_config.json values alike: exit-1 errors naming the flag, or the file and key', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'finllm-genconfig-'));
    writeFileSync(join(dir, 'generation_config.json'), '{}');
    for (const [flags, key] of [
      [{ temperature: '1e-39' }, 'temperature'],
      [{ repetitionPenalty: '1e-39' }, 'repetition-penalty'],
      [{ seed: '4294967297' }, 'seed'],
    ] as const) {
      const err = await samplingFromFlags(dir, flags).catch((e: unknown) => e);
      expect(err, JSON.stringify(flags)).toBeInstanceOf(InputError);
      expect((err as Error).message).toContain(`key '${key}'`);
    }
    for (const [field, value] of [
      ['temperature', 1e-39],
      ['temperature', -1],
      ['repetition_penalty', 1e-39],
      ['repetition_penalty', 0],
    ] as const) {
      writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ do_sample: true, [field]: value }));
      const err = await readGenerationConfig(dir).catch((e: unknown) => e);
      expect(err, `${field} ${value}`).toBeInstanceOf(InputError);
      expect((err as Error).message).toContain(`${join(dir, 'generation_config.json')}, key '${field}'`);
    }
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ temperature: 0, repetition_penalty: 1.1 }));
    expect(await readGenerationConfig(dir)).toMatchObject({ temperature: 0, repetitionPenalty: 1.1 });
  });
});
