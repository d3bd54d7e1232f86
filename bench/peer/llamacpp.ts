// llama.cpp as a decode peer on the same machine: the model exported to GGUF by finllm, loaded by
// node-llama-cpp 3.21.1 (prebuilt CPU build, and the Vulkan build when a Vulkan device is there),
// greedy decoding of the same prompt ids for the same number of tokens, timed over the same window
// as finllm's decode benchmark (from the 2nd to the (n−1)th generated token: decode steps only).
// node-llama-cpp lives in tests/llamacpp (installed by .ci/setup, outside the main dependencies).
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const NODE_LLAMA_CPP = join(
  process.cwd(),
  'tests',
  'llamacpp',
  'node_modules',
  'node-llama-cpp',
  'dist',
  'index.js',
);

/** The part of node-llama-cpp's API used here. */
interface Sequence {
  evaluate(tokens: number[], o: { temperature: number }): AsyncIterable<number>;
}
interface Context {
  getSequence(): Sequence;
  dispose(): Promise<void>;
}
interface Model {
  createContext(o: { contextSize: number; batchSize: number; sequences: number; threads?: number }): Promise<Context>;
  dispose(): Promise<void>;
}
interface Llama {
  gpu: string | false;
  loadModel(o: { modelPath: string; gpuLayers?: number | 'max' }): Promise<Model>;
  getGpuDeviceNames(): Promise<string[]>;
  dispose(): Promise<void>;
}
interface NodeLlamaCpp {
  getLlama(o: Record<string, unknown>): Promise<Llama>;
}

export interface PeerDecode {
  build: 'cpu' | 'vulkan';
  device: string;
  tokS: number;
  msPerStep: number;
  steps: number;
  threads: number;
}

async function decodeOnce(
  llama: Llama,
  gguf: string,
  prompt: number[],
  newTokens: number,
  gpu: boolean,
  threads: number,
): Promise<{ tokS: number; msPerStep: number; steps: number }> {
  const model = await llama.loadModel({ modelPath: gguf, ...(gpu ? { gpuLayers: 'max' as const } : {}) });
  try {
    const ctx = await model.createContext({
      contextSize: prompt.length + newTokens + 8,
      batchSize: Math.max(prompt.length, 8),
      sequences: 1,
      threads,
    });
    try {
      const times: number[] = [];
      let n = 0;
      for await (const _ of ctx.getSequence().evaluate(prompt, { temperature: 0 })) {
        times.push(performance.now());
        if (++n >= newTokens) break;
      }
      const first = 1;
      const last = newTokens - 2;
      const ms = (times[last]! - times[first]!) / (last - first);
      return { tokS: 1000 / ms, msPerStep: ms, steps: last - first };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/**
 * Decodes in llama.cpp's CPU build and, when it finds a Vulkan device, its Vulkan build. `threads`:
 * llama.cpp's CPU threads (its workers spin at barriers, so on a machine busy with other work more
 * threads than free cores make every step wait for descheduled spinners).
 */
export async function llamaCppDecode(
  gguf: string,
  prompt: number[],
  newTokens: number,
  threads: number,
): Promise<PeerDecode[]> {
  if (!existsSync(NODE_LLAMA_CPP))
    throw new Error(
      `node-llama-cpp is not installed (${NODE_LLAMA_CPP}); run: npm ci --omit=optional --prefix tests/llamacpp`,
    );
  const { getLlama } = (await import(NODE_LLAMA_CPP)) as NodeLlamaCpp;
  const out: PeerDecode[] = [];
  for (const build of ['cpu', 'vulkan'] as const) {
    let llama: Llama;
    try {
      llama = await getLlama({
        gpu: build === 'cpu' ? false : 'vulkan',
        build: 'never',
        progressLogs: false,
        logLevel: 'error',
      });
    } catch (err) {
      if (build === 'cpu') throw err;
      console.log(`llama.cpp vulkan: not available (${(err as Error).message.split('\n')[0]})`);
      continue;
    }
    try {
      const names = build === 'vulkan' ? await llama.getGpuDeviceNames() : [];
      if (build === 'vulkan' && names.length === 0) {
        console.log('llama.cpp vulkan: no Vulkan device found');
        continue;
      }
      await decodeOnce(llama, gguf, prompt.slice(0, 8), 5, build === 'vulkan', threads); // warm-up
      const r = await decodeOnce(llama, gguf, prompt, newTokens, build === 'vulkan', threads);
      out.push({ build, device: build === 'cpu' ? 'CPU' : names.join(', '), threads, ...r });
    } finally {
      await llama.dispose();
    }
  }
  return out;
}
