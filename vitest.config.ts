import { defineConfig } from 'vitest/config';

// Kernel tests run on whatever WebGPU adapter Dawn finds: a GPU, or Mesa lavapipe on CPU-only
// machines (CI), which is ~10^4x slower, so timeouts are generous and files run in forked processes
// (one Dawn instance each; a crash in native code then fails one file, not the run).
export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 300_000,
    hookTimeout: 300_000,
    reporters: ['default'],
  },
});
