// `npm run check:kernels`: every kernel variant the generators register (src/kernels/variants.ts),
// enumerated offline from their variant tables. Each native variant (subgroup matrices: tensor
// cores) and each portable one (plain WGSL, e.g. the kernels chosen for software adapters) is
// compiled on Dawn's Null backend and must give zero errors and zero warnings; each
// emulated variant runs on this machine's adapter (lavapipe on CPU machines) against the float64
// reference, outputs poisoned first. Ends with one line
//   native: N compiled, 0 failed; portable: P compiled, 0 failed; emulated: M verified, 0 failed
// and exits 1 when anything failed. FINLLM_SEED replays the random inputs.
import { Rng } from '../src/engine/random.js';
import { engine, initEngine } from '../src/engine/tensor.js';
import '../src/kernels/index.js';
import { type KernelVariant, kernelVariants, nullCompiler } from '../src/kernels/variants.js';
import { verifyEmulated } from './check/verifiers.js';

const started = Date.now();
const variants = kernelVariants();
const native = variants.filter((v) => v.mode === 'native');
// portable variants (plain WGSL, e.g. the kernels chosen for software adapters) are compiled on Null too
const portable = variants.filter((v) => v.mode === 'portable');
const emulated = variants.filter((v) => v.mode === 'emulated');
const failures: string[] = [];
const seconds = () => ((Date.now() - started) / 1000).toFixed(1);

const nul = await nullCompiler();
const failed = { native: 0, portable: 0 };
for (const v of [...native, ...portable]) {
  const problems = await nul.check(v.code(), {
    workgroupBytes: v.workgroupBytes,
    storageBuffers: v.storageBuffers,
    moduleOnly: v.moduleOnly,
    label: v.key,
  });
  if (problems.length) {
    failed[v.mode as 'native' | 'portable']++;
    failures.push(`${v.mode} ${v.family} ${v.name}:\n  ${problems.slice(0, 5).join('\n  ')}`);
  }
}
nul.destroy();
console.log(
  `[${seconds()} s] native: ${native.length - failed.native}/${native.length}, portable: ${portable.length - failed.portable}/${portable.length} compiled cleanly on Dawn Null`,
);

const e = await initEngine();
e.pool.poisonOnAcquire = true;
const seed = process.env.FINLLM_SEED ? Number(process.env.FINLLM_SEED) : (Math.random() * 2 ** 31) >>> 0;
console.log(`emulated variants on ${e.dev.name}; inputs FINLLM_SEED=${seed}`);
let emulatedFailed = 0;
for (const [i, v] of emulated.entries()) {
  let failure: string | null;
  try {
    failure = await verifyEmulated(v as KernelVariant, new Rng(seed + i));
  } catch (err) {
    failure = (err as Error).message;
  }
  if (failure) {
    emulatedFailed++;
    failures.push(`emulated ${v.family} ${v.name}:\n  ${failure}`);
  }
  console.log(`[${seconds()} s] ${failure ? 'FAIL' : 'ok  '} ${v.family} ${v.name}`);
}
await engine().dev.sync();

for (const f of failures) console.error(f);
console.log(
  `native: ${native.length - failed.native} compiled, ${failed.native} failed; portable: ${portable.length - failed.portable} compiled, ${failed.portable} failed; emulated: ${emulated.length - emulatedFailed} verified, ${emulatedFailed} failed`,
);
process.exit(failures.length ? 1 : 0);
