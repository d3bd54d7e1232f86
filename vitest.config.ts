import { defineConfig } from 'vitest/config';
import { DAWN_LIMIT_NOTICE, dropLines } from './src/engine/native-stderr.js';

// Dawn writes two known-harmless "maxDynamic*BuffersPerPipelineLayout artificially reduced" lines
// from native code whenever a test process requests an adapter. The CLI drops them in-process
// (src/engine/native-stderr.ts), which cannot work in a test worker, whose stderr is a socket to
// this process: so this process drops exactly those lines (and nothing else) as it relays them.
const writeStderr = process.stderr.write.bind(process.stderr) as (chunk: unknown, ...rest: unknown[]) => boolean;
process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
  const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : null;
  if (text === null || !text.includes('artificially reduced')) return writeStderr(chunk, ...rest);
  const kept = dropLines(text, DAWN_LIMIT_NOTICE);
  if (kept !== '') return writeStderr(kept, ...rest);
  const done = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
  if (done) queueMicrotask(done);
  return true;
}) as typeof process.stderr.write;

// Kernel tests run on whatever WebGPU adapter Dawn finds: a GPU, or Mesa lavapipe on CPU-only
// machines (CI), which is ~10^4x slower, so timeouts are generous and files run in forked processes
// (one Dawn instance each; a crash in native code then fails one file, not the run).
export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    // Nothing downloads during tests: a model path that names no folder (the fuzz tests make such
    // paths) must not reach huggingface.co. The Hub tests unset this for their loopback server.
    env: { HF_HUB_OFFLINE: '1' },
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 300_000,
    hookTimeout: 300_000,
    reporters: ['default'],
  },
});
