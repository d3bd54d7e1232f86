// node-llama-cpp (llama.cpp's prebuilt CPU build, installed by .ci/setup into tests/llamacpp with its
// own lockfile, outside the main dependencies) as the tests drive it, and finllm's side of the same
// measurements. Tests that use it are skipped when it is not installed.
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { noGrad } from '../../src/engine/autograd.js';
import type { LlamaModel } from '../../src/llama/model.js';

export const NODE_LLAMA_CPP = join(
  import.meta.dirname,
  '..',
  'llamacpp',
  'node_modules',
  'node-llama-cpp',
  'dist',
  'index.js',
);

/** llama.cpp's context: 1 thread (its CPU workers spin at barriers; more threads than free cores stall), its default (f16) KV cache. */
const CONTEXT = { contextSize: 128, batchSize: 128, sequences: 1, threads: 1 };

// The part of node-llama-cpp's API used here (it is not a dependency of the main package).
interface EvalOutput {
  next: { probabilities?: Map<number, number> };
}
type EvalItem = number | [number, { generateNext: { probabilities: boolean; options: Record<string, number> } }];
interface LlamaCppSequence {
  controlledEvaluate(items: EvalItem[]): Promise<(EvalOutput | undefined)[]>;
  evaluate(tokens: number[], o: { temperature: number }): AsyncIterable<number>;
}
interface LlamaCppContext {
  getSequence(): LlamaCppSequence;
  dispose(): Promise<void>;
}
export interface LlamaCppModel {
  tokenize(text: string): readonly number[];
  tokens: { bos: number | null; eos: number | null; shouldPrependBosToken: boolean };
  createContext(o: Record<string, number | string>): Promise<LlamaCppContext>;
  dispose(): Promise<void>;
}
export interface Llama {
  loadModel(o: { modelPath: string }): Promise<LlamaCppModel>;
  dispose(): Promise<void>;
}
export interface NodeLlamaCpp {
  getLlama(o: Record<string, unknown>): Promise<Llama>;
}

/**
 * llama.cpp's CPU build for the tests of the enclosing describe: loaded before them, disposed after.
 * Returns its getter (valid inside the tests).
 */
export function useLlamaCpp(): () => Llama {
  let llama: Llama | undefined;
  beforeAll(async () => {
    const { getLlama } = (await import(NODE_LLAMA_CPP)) as NodeLlamaCpp;
    llama = await getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: 'error' });
  });
  afterAll(async () => {
    await llama?.dispose();
  });
  return () => llama!;
}

function logSoftmaxAt(logits: Float32Array, row: number, V: number, id: number): number {
  let mx = -Infinity;
  for (let v = 0; v < V; v++) mx = Math.max(mx, logits[row * V + v]!);
  let s = 0;
  for (let v = 0; v < V; v++) s += Math.exp(logits[row * V + v]! - mx);
  return logits[row * V + id]! - mx - Math.log(s);
}

/** log p(ids[t+1] | ids[..t]) from finllm. */
export async function finllmLogProbs(model: LlamaModel, ids: number[]): Promise<number[]> {
  const lg = noGrad(() => model.logits({ inputIds: Int32Array.from(ids), batchSize: 1, seqLen: ids.length }));
  const L = await lg.toFloat32();
  lg.dispose();
  const V = L.length / ids.length;
  return ids.slice(1).map((id, t) => logSoftmaxAt(L, t, V, id));
}

/** log p(ids[t+1] | ids[..t]) from llama.cpp (the full softmax at temperature 1, no truncation). */
export async function llamaCppLogProbs(model: LlamaCppModel, ids: number[]): Promise<number[]> {
  const ctx = await model.createContext(CONTEXT);
  try {
    const seq = ctx.getSequence();
    const res = await seq.controlledEvaluate(
      ids.map((id, i) =>
        i + 1 < ids.length
          ? [id, { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }]
          : id,
      ),
    );
    return ids.slice(1).map((id, t) => Math.log(res[t]!.next.probabilities!.get(id) ?? 0));
  } finally {
    await ctx.dispose();
  }
}

export async function llamaCppGreedy(model: LlamaCppModel, prompt: number[], n: number): Promise<number[]> {
  const ctx = await model.createContext(CONTEXT);
  try {
    const out: number[] = [];
    for await (const t of ctx.getSequence().evaluate(prompt, { temperature: 0 })) {
      out.push(t);
      if (out.length >= n) break;
    }
    return out;
  } finally {
    await ctx.dispose();
  }
}
