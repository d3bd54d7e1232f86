// Merges one GPU session's results into its summary JSON (the format of the committed
// bench/results/gpu/<card>-<date>.json): `node dist/bench/gpu-summary.js OUTDIR`. Reads OUTDIR/gpu.txt
// (nvidia-smi's name, memory, driver), every OUTDIR/kernels-*.json (the `summary` entries of the
// kernel benchmarks go under `finllm`, e.g. finllm.attention.B8_T512_Hq32_Hkv4_D64.fwd_ms) and
// OUTDIR/peer_kernels.json (torch SDPA → peer.sdpa.<shape>; GEMM 4096³ → peer.gemm_*_tflops), and
// updates OUTDIR/summary.json, keeping keys it does not produce.
import { existsSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

type Obj = Record<string, unknown>;

function merge(into: Obj, from: Obj): Obj {
  for (const [k, v] of Object.entries(from)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) into[k] = merge((into[k] as Obj | undefined) ?? {}, v as Obj);
    else into[k] = v;
  }
  return into;
}

const dir = process.argv[2];
if (!dir || !existsSync(dir)) {
  console.error('usage: node dist/bench/gpu-summary.js OUTDIR (the folder bench/gpu-session.sh wrote)');
  process.exit(1);
}
const file = join(dir, 'summary.json');
const summary: Obj = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Obj) : {};

const gpu = join(dir, 'gpu.txt');
if (existsSync(gpu)) {
  const row = readFileSync(gpu, 'utf8').trim().split('\n')[1]?.split(',').map((x) => x.trim());
  if (row) merge(summary, { card: row[0], driver: row[2] });
}
summary.date ??= new Date().toISOString();
if (process.env.FINLLM_COMMIT) summary.commit = process.env.FINLLM_COMMIT;

for (const f of readdirSync(dir).filter((n) => /^kernels-.*\.json$/.test(n)).sort()) {
  const k = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { summary?: Obj };
  if (k.summary) merge(summary, { finllm: k.summary });
}

const peerFile = join(dir, 'peer_kernels.json');
if (existsSync(peerFile)) {
  const peer = JSON.parse(readFileSync(peerFile, 'utf8')) as Record<string, unknown>;
  const sdpa: Obj = {};
  for (const [k, v] of Object.entries(peer)) {
    const m = /^sdpa_(.*)$/.exec(k);
    if (m && v && typeof v === 'object') {
      const { fwd_ms, fwd_bwd_ms } = v as { fwd_ms: number; fwd_bwd_ms: number };
      sdpa[m[1]!] = { fwd_ms, fwd_bwd_ms };
    }
  }
  const gemm: Obj = {};
  if (typeof peer['gemm4096_torch.float16'] === 'number') gemm.gemm_f16_tflops = peer['gemm4096_torch.float16'];
  if (typeof peer['gemm4096_torch.float32'] === 'number') gemm.gemm_f32_tflops = peer['gemm4096_torch.float32'];
  merge(summary, { peer: { ...gemm, sdpa } });
}

writeFileSync(`${file}.tmp`, `${JSON.stringify(summary, null, 2)}\n`);
renameSync(`${file}.tmp`, file);
console.log(`wrote ${file}`);
