// Cold compile time of the attention kernels, one pipeline at a time:
//   MESA_SHADER_CACHE_DISABLE=true node dist/bench/attention-compile.js [--dh 64,128]
//     [--kinds fwd,split,dq,dkv] [--exchange workgroup,subgroup] [--kv f32,f16] [--block N] [--rows N]
// On lavapipe the shader cache hides compiles after the first run, so disable it for this process.
// Each kernel is built by running the public entry point once on a tiny shape. Reported: wall time,
// and the CPU time of the threads other than the main one (lavapipe compiles and runs shaders on its
// own threads while Node's event loop polls for completion on the main thread), the figure to
// compare on a machine shared with other work.
import { readdirSync, readFileSync } from 'node:fs';
import { Rng } from '../src/engine/random.js';
import { initEngine, Tensor, tidy } from '../src/engine/tensor.js';
import {
  type AttentionTiles,
  type Exchange,
  flashAttentionBackward,
  flashAttentionForward,
} from '../src/kernels/attention.js';
import { cast } from '../src/kernels/elementwise.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/** CPU seconds used so far by this process's threads other than the main one (Linux /proc). */
function workerCpuSeconds(): number {
  let ticks = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    if (Number(tid) === process.pid) continue;
    const f = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
  }
  return ticks / 100; // USER_HZ
}

const e = await initEngine();
const dev = e.dev;
const dhs = (arg('dh') ?? '64').split(',').map(Number);
const kinds = (arg('kinds') ?? 'fwd,split,dq,dkv').split(',');
const exchanges = (arg('exchange') ?? 'workgroup').split(',') as Exchange[];
const kvTypes = (arg('kv') ?? 'f32').split(',') as ('f32' | 'f16')[];
const rng = new Rng(1);
const base: AttentionTiles = {
  block: arg('block') ? Number(arg('block')) : undefined,
  rows: arg('rows') ? Number(arg('rows')) : undefined,
};
let total = 0;
for (const Dh of dhs)
  for (const kvType of kvTypes) {
    const [B, T, Hq, Hkv] = [1, 9, 2, 1];
    const mk = (n: number, shape: number[]) => Tensor.from(rng.normalArray(n), shape).keep();
    const q = mk(B * T * Hq * Dh, [B, T, Hq, Dh]);
    const k32 = mk(B * T * Hkv * Dh, [B, T, Hkv, Dh]);
    const v32 = mk(B * T * Hkv * Dh, [B, T, Hkv, Dh]);
    const k = kvType === 'f32' ? k32 : cast(k32, 'f16').keep();
    const v = kvType === 'f32' ? v32 : cast(v32, 'f16').keep();
    const dOut = mk(q.numel, q.shape as number[]);
    // Backward's saved forward values: any finite out / lse do for timing the compile.
    const out = mk(q.numel, q.shape as number[]);
    const lse = mk(B * Hq * T, [B, Hq, T]);
    await dev.sync();
    for (const exchange of exchanges)
      for (const kind of kinds) {
        const tiles = { ...base, exchange };
        const t0 = performance.now();
        const c0 = workerCpuSeconds();
        try {
          tidy(() => {
            if (kind === 'fwd') flashAttentionForward(q, k, v, { causal: true }, 'tiled', tiles);
            else if (kind === 'split') flashAttentionForward(q, k, v, { causal: true }, 'split', tiles);
            else if (kind === 'dq')
              flashAttentionBackward(q, k, v, out, lse, dOut, { causal: true }, { dq: true, dkv: false }, tiles);
            else if (kind === 'dkv')
              flashAttentionBackward(q, k, v, out, lse, dOut, { causal: true }, { dq: false, dkv: true }, tiles);
          });
          await dev.sync();
        } catch (err) {
          console.log(`Dh=${Dh} kv ${kvType} ${kind} ${exchange}: ${(err as Error).message.split('\n')[0]}`);
          continue;
        }
        const cpu = workerCpuSeconds() - c0;
        total += cpu;
        console.log(
          `Dh=${Dh} kv ${kvType} ${kind} ${exchange}: ${((performance.now() - t0) / 1000).toFixed(1)} s wall, ${cpu.toFixed(1)} s CPU (worker threads)`,
        );
      }
  }
console.log(`total: ${total.toFixed(1)} s CPU`);
dev.destroy();
