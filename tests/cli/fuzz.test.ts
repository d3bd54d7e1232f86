// Seeded fuzzing of what the CLI reads: a few hundred mutated safetensors headers, configs and JSONL
// rows, fed to the entry functions the verbs call (in-process, so hundreds of cases take seconds),
// then a handful through the real CLI. Every outcome must be one the CLI turns into exit 0 or 1
// (reportError, the CLI's own mapping), never 2 (an unforeseen error is a bug), with a message of
// one kind and no stack trace, and nothing half-written (no temp files, no partial outputs).
// FINLLM_SEED=<n> replays a run (the seed is printed).
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { reportError } from '../../src/cli/common.js';
import type { Rng } from '../../src/engine/random.js';
import { Checkpoint, readSafetensorsF32, SafetensorsReader } from '../../src/io/safetensors.js';
import { readAdapter } from '../../src/llama/peft.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { loadConfig, saveResolvedConfig } from '../../src/pipeline/config.js';
import { prepareData, saveReport } from '../../src/pipeline/data/index.js';
import { compareResults } from '../../src/pipeline/eval/compare.js';
import { buildEvalItems } from '../../src/pipeline/eval/generation.js';
import { scoreExamples } from '../../src/pipeline/eval/metrics.js';
import { parseResults, readScoreInput, readTrainingLog } from '../../src/pipeline/eval/results.js';
import { readDataRows, textsOf } from '../../src/pipeline/eval/run.js';
import { testRng } from '../helpers/index.js';
import {
  checkBuilt,
  expectCleanStderr,
  finllm,
  MODEL,
  makeAdapter,
  ROOT,
  removeTempDirs,
  tempDir,
  tempsUnder,
} from './helpers.js';

afterAll(removeTempDirs);

const CASES = 160;

interface Outcome {
  code: number;
  message: string;
}

async function outcome(fn: () => unknown): Promise<Outcome> {
  try {
    await fn();
    return { code: 0, message: '' };
  } catch (err) {
    const r = reportError(err);
    return { code: r.exitCode, message: r.message };
  }
}

/** Exit 0 or 1 and a message without a stack trace; `input` is shown when it fails. */
function expectUserOutcome(o: Outcome, input: () => string): void {
  if (o.code !== 0 && o.code !== 1)
    throw new Error(`exit ${o.code} (${o.message.split('\n')[0]}) for input:\n${input().slice(0, 2000)}`);
  expect(o.message, input().slice(0, 500)).not.toMatch(/\n\s+at /);
}

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;

/** Odd JSON values: wrong types, edge numbers, long and hostile strings, deep nesting. */
function oddValue(rng: Rng): unknown {
  const deep = (n: number): unknown => (n === 0 ? 1 : [deep(n - 1)]);
  return pick(rng, [
    () => null,
    () => true,
    () => 0,
    () => -1,
    () => 1.5,
    () => 2 ** 53 + 2,
    () => 1e308,
    () => -0,
    () => '',
    () => 'x',
    () => '9'.repeat(400),
    () => 'é\u0000\u001b[2J\u0007\u009b\u202e',
    () => '\ud800',
    () => 'a'.repeat(20_000),
    () => [],
    () => [1, 'a', null],
    () => ({}),
    () => ({ nested: { deeper: [1, 2] } }),
    () => deep(2000),
    () => '../../etc/passwd',
    () => '__proto__',
  ])();
}

// ---------------------------------------------------------------------------------------------
// safetensors

/** A header-level mutation of a parsed safetensors header object. */
function mutateHeader(rng: Rng, header: Record<string, unknown>): unknown {
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const name = pick(rng, names);
  const entry = { ...(header[name] as Record<string, unknown>) };
  const out: Record<string, unknown> = { ...header };
  switch (rng.int(9)) {
    case 0:
      entry['dtype'] = pick(rng, ['F64', 'I64', 'BOOL', 'F8_E4M3', 'Q4', 'f32', 7, null]);
      break;
    case 1:
      entry['shape'] = pick(rng, [[], [0], [-1, 4], [1.5], [2 ** 40, 2 ** 40], 'x', [[2]], null]);
      break;
    case 2:
      entry['data_offsets'] = pick(rng, [[0], [5, 1], [-4, 0], [0, 1e300], [0, 2 ** 62], ['0', '8'], [0, 4, 8], null]);
      break;
    case 3:
      delete entry[pick(rng, ['dtype', 'shape', 'data_offsets'])];
      break;
    case 4:
      out[
        pick(rng, [
          '',
          '__proto__',
          'constructor',
          'x'.repeat(5000),
          'base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight',
          'a.lora_A.weight',
        ])
      ] = entry;
      break;
    case 5:
      out['__metadata__'] = pick(rng, [{ format: 1 }, [], 'pt', null, { a: { b: 1 } }]);
      break;
    case 6:
      delete out[name];
      break;
    case 7:
      return pick(rng, [[], 3, 'header', null, true]);
    default:
      entry[pick(rng, ['dtype', 'shape', 'data_offsets'])] = oddValue(rng);
  }
  if (out[name] !== undefined) out[name] = entry;
  return out;
}

/** A mutated safetensors file: a header mutation, or raw byte damage. */
function mutateSafetensors(rng: Rng, bytes: Buffer): Buffer {
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  const data = bytes.subarray(8 + n);
  const mode = rng.int(5);
  if (mode <= 1) {
    const json = Buffer.from(JSON.stringify(mutateHeader(rng, header)) ?? 'null');
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([prefix, json, data]);
  }
  const out = Buffer.from(bytes);
  if (mode === 2) {
    for (let k = 0; k < 1 + rng.int(4); k++) out[8 + rng.int(n)] = rng.int(256);
    return out;
  }
  if (mode === 3) return out.subarray(0, rng.int(out.length));
  out.writeBigUInt64LE(
    pick(rng, [0n, 1n, BigInt(n - 1), BigInt(n + 1), BigInt(out.length), 2n ** 62n, 2n ** 64n - 1n]),
    0,
  );
  return out;
}

// ---------------------------------------------------------------------------------------------
// configs

const BASE_CONFIG = (dir: string) => `# a valid config
model: {path: ${MODEL}, quantize: nf4, storage: f32}
lora: {r: 4, alpha: 8, dropout: 0.05, target_modules: [q_proj, v_proj], rslora: false}
data:
  train: ${join(dir, 'train.jsonl')}
  val: null
  template: auto
  max_seq_len: 256
  dedup: {exact: true, near: false, near_threshold: 0.9}
  columns: {text: text}
training: {epochs: 1, max_steps: 3, batch_size: 2, lr: 1.0e-3, schedule: cosine, warmup_steps: 0, early_stopping: null, seed: 1}
output: {dir: ${join(dir, 'run')}}
logging: {console: false, jsonl: true, tensorboard: false}
environments:
  gpu: {training: {batch_size: 8}}
`;

const GARBAGE_LINES = [
  '\t- x',
  'a: &a [1, 2]',
  'b: *a',
  'c: *nope',
  '? [x, y]\n: z',
  '!!binary aGVsbG8=',
  '%YAML 9.9',
  '{',
  'key: [unclosed',
  '  : : :',
  '---',
  '...',
  'training: {lr: .nan}',
  'training: {lr: .inf}',
  'model: !!set {a, b}',
  'x: 0x1F',
  'data: {max_seq_len: 1e999}',
  'environments: 3',
  '__proto__: {polluted: true}',
];

function mutateConfigText(rng: Rng, text: string): string {
  const lines = text.split('\n');
  switch (rng.int(6)) {
    case 0:
      lines.splice(rng.int(lines.length), 1);
      return lines.join('\n');
    case 1:
      lines.splice(rng.int(lines.length), 0, pick(rng, GARBAGE_LINES));
      return lines.join('\n');
    case 2: {
      const i = rng.int(lines.length);
      lines[i] = ' '.repeat(rng.int(5)) + lines[i]!.trimStart();
      return lines.join('\n');
    }
    case 3: {
      const i = rng.int(lines.length);
      lines.splice(i, 0, lines[i]!);
      return lines.join('\n');
    }
    default: {
      // Structural: replace a leaf, rename a key or add an unknown one, then re-serialize.
      let doc: Record<string, Record<string, unknown>>;
      try {
        doc = YAML.parse(text) as Record<string, Record<string, unknown>>;
      } catch {
        return text + '\n' + pick(rng, GARBAGE_LINES); // already broken: break it further
      }
      if (doc === null || typeof doc !== 'object') return text + '\n' + pick(rng, GARBAGE_LINES);
      const section = pick(rng, Object.keys(doc).length ? Object.keys(doc) : ['model']);
      if (doc[section] === null || typeof doc[section] !== 'object') doc[section] = {};
      const keys = Object.keys(doc[section]);
      const key = keys.length ? pick(rng, keys) : 'x';
      const r = rng.int(3);
      if (r === 0) doc[section]![key] = oddValue(rng);
      else if (r === 1) {
        doc[section]![`${key}_`] = doc[section]![key];
        delete doc[section]![key];
      } else (doc as Record<string, unknown>)[pick(rng, [section, 'tokenizer', 'optimizer'])] = oddValue(rng);
      try {
        return YAML.stringify(doc);
      } catch {
        return text + '\n' + pick(rng, GARBAGE_LINES); // too deep for the serializer
      }
    }
  }
}

const ODD_SETS = [
  'training.lr=abc',
  '=x',
  'a..b=1',
  'training=3',
  'model.path=[1, 2]',
  'x.y.z=&a [*a]',
  'training.max_steps=-1',
  'lora.target_modules=all-linear',
  'data.max_seq_len=7',
  'training.warmup_ratio=0.1',
  'output.dir=',
  'lora.r=1e400',
  'training.lr=1e-4',
];

// ---------------------------------------------------------------------------------------------
// JSONL

function mutateJsonl(rng: Rng, rows: Record<string, unknown>[]): Buffer {
  const copy = rows.map((r) => ({ ...r }));
  const i = rng.int(copy.length);
  const lines = (): string[] => copy.map((r) => JSON.stringify(r));
  switch (rng.int(8)) {
    case 7: {
      // A field nested far deeper than any stack: quoting it in a message must not overflow.
      const l = lines();
      const depth = 20_000 + rng.int(80_000);
      const open = pick(rng, ['[', '{"a":']);
      l[i] =
        `{"${pick(rng, ['text', 'prediction', 'reference', 'question', 'answer', 'id', 'label', 'scores', 'step', 'task'])}": ${open.repeat(depth)}1${(open === '[' ? ']' : '}').repeat(depth)}}`;
      return Buffer.from(l.join('\n') + '\n');
    }
    case 0: {
      const keys = Object.keys(copy[i]!);
      if (keys.length) copy[i]![pick(rng, keys)] = oddValue(rng);
      return Buffer.from(lines().join('\n') + '\n');
    }
    case 1: {
      const keys = Object.keys(copy[i]!);
      if (keys.length) delete copy[i]![pick(rng, keys)];
      return Buffer.from(lines().join('\n') + '\n');
    }
    case 2: {
      const l = lines();
      l[i] = l[i]!.slice(0, rng.int(l[i]!.length));
      return Buffer.from(l.join('\n') + '\n');
    }
    case 3: {
      const l = lines();
      l.splice(
        i,
        0,
        pick(rng, [
          '',
          '   ',
          '[]',
          'null',
          '42',
          '"text"',
          '{"a": 1',
          '['.repeat(5000),
          '\u001b[31m{}',
          '{"text": "x"}{"text": "y"}',
        ]),
      );
      return Buffer.from(l.join('\r\n'));
    }
    case 4: {
      // Invalid UTF-8, a NUL, a BOM in the middle of the file.
      const b = Buffer.from(lines().join('\n') + '\n');
      const at = rng.int(b.length);
      return Buffer.concat([
        b.subarray(0, at),
        Buffer.from(pick(rng, [[0xff, 0xfe], [0xc3], [0x00], [0xef, 0xbb, 0xbf], [0xed, 0xa0, 0x80]])),
        b.subarray(at),
      ]);
    }
    case 5:
      copy[i]![pick(rng, ['id', 'task', 'label', 'prediction', 'scores', 'step'])] = oddValue(rng);
      return Buffer.from(lines().join('\n') + '\n');
    default:
      return Buffer.from('');
  }
}

const readRows = (file: string, n: number) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .slice(0, n)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

// ---------------------------------------------------------------------------------------------

let tokenizer: LlamaTokenizer;
beforeAll(async () => {
  checkBuilt();
  tokenizer = await LlamaTokenizer.load(MODEL);
});

describe('fuzzed inputs: exit 0 or 1, never 2, no stack trace, nothing half-written', () => {
  it(`${CASES} mutated safetensors headers: adapter files, tensor files, sharded checkpoint indexes`, async () => {
    const rng = testRng('fuzz-safetensors');
    const dir = tempDir();
    const good = await makeAdapter(join(dir, 'good'));
    const base = readFileSync(join(good, 'adapter_model.safetensors'));
    const adapter = join(dir, 'adapter');
    mkdirSync(adapter);
    writeFileSync(join(adapter, 'adapter_config.json'), readFileSync(join(good, 'adapter_config.json')));
    const counts = [0, 0];
    for (let c = 0; c < CASES; c++) {
      const bytes = mutateSafetensors(rng, base);
      const file = join(adapter, 'adapter_model.safetensors');
      writeFileSync(file, bytes);
      const show = () => bytes.subarray(0, 600).toString('latin1');
      const o1 = await outcome(() => readAdapter(adapter));
      expectUserOutcome(o1, show);
      const o2 = await outcome(async () => {
        const r = await SafetensorsReader.open(file);
        try {
          for (const name of r.names()) await r.readTyped(name);
        } finally {
          await r.close();
        }
        await readSafetensorsF32(file);
      });
      expectUserOutcome(o2, show);
      counts[o1.code]!++;
    }
    expect(counts[1], 'the mutations are refused at least sometimes').toBeGreaterThan(0);

    // Sharded checkpoints: an index whose weight_map is mutated.
    const ckpt = join(dir, 'sharded');
    mkdirSync(ckpt);
    writeFileSync(join(ckpt, 'model-00001-of-00001.safetensors'), base);
    const names = Object.keys(JSON.parse(base.subarray(8, 8 + Number(base.readBigUInt64LE(0))).toString()) as object);
    for (let c = 0; c < 40; c++) {
      const map: Record<string, unknown> = Object.fromEntries(
        names.map((n) => [n, 'model-00001-of-00001.safetensors']),
      );
      map[pick(rng, names)] = pick(rng, [
        '../model-00001-of-00001.safetensors',
        '/etc/passwd',
        'missing.safetensors',
        '',
        3,
        null,
        '.',
        'model-00001-of-00001.safetensors',
      ]);
      const index = pick(rng, [
        { weight_map: map },
        { metadata: 3, weight_map: map },
        { weight_map: [] },
        [],
        { weight_map: { x: 'model-00001-of-00001.safetensors' } },
      ]);
      writeFileSync(join(ckpt, 'model.safetensors.index.json'), JSON.stringify(index));
      expectUserOutcome(await outcome(async () => (await Checkpoint.open(ckpt)).close()), () => JSON.stringify(index));
    }
  });

  it(`${CASES} mutated configs (text, structure, --set, environments): loaded, or refused as bad input; a loaded one round-trips`, async () => {
    const rng = testRng('fuzz-config');
    const dir = tempDir();
    writeFileSync(join(dir, 'train.jsonl'), '{"text": "x"}\n');
    let text = BASE_CONFIG(dir);
    let loaded = 0;
    for (let c = 0; c < CASES; c++) {
      // Mostly one mutation of the valid file; sometimes several piled up.
      if (c % 10 === 0) text = BASE_CONFIG(dir);
      const mutated = mutateConfigText(rng, text);
      if (rng.int(3) === 0) text = mutated;
      const file = join(dir, `c${c}.yaml`);
      writeFileSync(file, mutated);
      const sets = rng.int(3) === 0 ? [pick(rng, ODD_SETS)] : [];
      const env = rng.int(5) === 0 ? pick(rng, ['gpu', 'cpu', '']) : undefined;
      const out = join(dir, `resolved${c}`);
      const o = await outcome(() => {
        const cfg = loadConfig({ file, sets, ...(env !== undefined ? { env } : {}) });
        // What a run saves must load again as the same configuration.
        mkdirSync(out);
        const saved = saveResolvedConfig(cfg, out);
        const again = loadConfig({ file: saved });
        expect({ ...again, source: null }).toEqual({ ...cfg, source: null });
        loaded++;
      });
      expectUserOutcome(o, () => `${mutated}\n--set ${sets.join(' ')} --env ${env}`);
      expect(tempsUnder(dir)).toEqual([]);
    }
    expect(loaded, 'some mutations still load').toBeGreaterThan(0);
    expect(loaded, 'most mutations are refused').toBeLessThan(CASES);
  });

  it(`${CASES} mutated JSONL files: training data, eval records, score inputs, results, training logs`, async () => {
    const rng = testRng('fuzz-jsonl');
    const dir = tempDir();
    const train = readRows(join(ROOT, 'data', 'sample', 'train.jsonl'), 6);
    const qa = readRows(join(ROOT, 'data', 'eval', 'fin-figures.jsonl'), 3);
    const score = [
      {
        prediction: 'Revenue rose 9% to $2.31 billion.',
        reference: 'Revenue grew 9 percent to 2.31 billion dollars.',
        id: 'a',
      },
      { prediction: 'Positive', reference: 'positive', source: 'Sales up.' },
    ];
    const results = JSON.parse(
      JSON.stringify({
        format: 'finllm.results.v1',
        model: 'm',
        adapter: null,
        task: 'qa',
        metrics: { rougeL: 0.5 },
        per_example: [0, 1, 2].map((k) => ({
          id: `e${k}`,
          prediction: 'p',
          reference: 'r',
          scores: { rougeL: 0.1 * k, bleu: k },
        })),
      }),
    ) as Record<string, unknown>;
    const log = [
      { step: 1, loss: 2.5 },
      { step: 2, loss: 2.1, val_loss: 2.3 },
    ];
    const cfg = (file: string, onInvalid: string) =>
      loadConfig({
        file: join(ROOT, 'configs', 'default.yaml'),
        sets: [
          `data.train=${file}`,
          'data.val=null',
          `data.on_invalid=${onInvalid}`,
          'data.max_seq_len=128',
          'data.dedup.near=false',
        ],
      });
    const seen = new Set<number>();
    for (let c = 0; c < CASES; c++) {
      const target = c % 6;
      const file = join(dir, `in${c}.jsonl`);
      const out = join(dir, `out${c}`);
      let bytes: Buffer;
      let run: () => unknown;
      switch (target) {
        case 0:
          bytes = mutateJsonl(rng, train);
          run = async () => {
            const prepared = await prepareData(cfg(file, pick(rng, ['fail', 'skip'])), tokenizer);
            saveReport(prepared.report, join(out, 'data-report.json'));
            JSON.parse(readFileSync(join(out, 'data-report.json'), 'utf8'));
          };
          break;
        case 1:
          bytes = mutateJsonl(rng, qa);
          run = async () =>
            buildEvalItems(await readDataRows(file), pick(rng, ['generation', 'classification'] as const), file, {
              tokenizer,
              limit: pick(rng, [null, 1, 2]),
            });
          break;
        case 2:
          bytes = mutateJsonl(rng, score);
          run = async () => scoreExamples(await readScoreInput(file));
          break;
        case 3:
          bytes = mutateJsonl(
            rng,
            train.map((r) => ({ text: r['text'] })),
          );
          run = async () => textsOf(await readDataRows(file), file);
          break;
        case 4: {
          // A results file: one mutated per_example entry (or top-level field), compared with the original.
          const mutated = JSON.parse(JSON.stringify(results)) as { per_example: Record<string, unknown>[] } & Record<
            string,
            unknown
          >;
          if (rng.int(2))
            mutated.per_example[rng.int(3)]![pick(rng, ['id', 'scores', 'prediction', 'reference'])] = oddValue(rng);
          else mutated[pick(rng, ['format', 'model', 'task', 'metrics', 'per_example', 'adapter'])] = oddValue(rng);
          bytes = Buffer.from(JSON.stringify(mutated));
          run = async () => {
            const cmp = compareResults(
              parseResults(results, 'base.json'),
              parseResults(JSON.parse(readFileSync(file, 'utf8')), file),
              { resamples: 100 },
            );
            const { writeReport } = await import('../../src/pipeline/eval/report.js');
            await writeReport(out, cmp);
          };
          break;
        }
        default:
          bytes = mutateJsonl(rng, log);
          run = async () => readTrainingLog(file);
      }
      writeFileSync(file, bytes);
      const o = await outcome(run);
      expectUserOutcome(o, () => `target ${target}:\n${bytes.toString('latin1')}`);
      seen.add(o.code);
      // Nothing half-written: no temps anywhere; a failed case wrote no output at all.
      expect(tempsUnder(dir)).toEqual([]);
      if (o.code !== 0) expect(readdirSync(dir).filter((n) => n === `out${c}`)).toEqual([]);
    }
    expect(seen.has(1), 'the mutations are refused at least sometimes').toBe(true);
  });

  it('a batch of mutated inputs through the real CLI: exit 0 or 1, one clean message, nothing half-written', async () => {
    const rng = testRng('fuzz-cli');
    const dir = tempDir();
    const good = await makeAdapter(join(dir, 'good'));
    const base = readFileSync(join(good, 'adapter_model.safetensors'));
    for (let c = 0; c < 3; c++) {
      const adapter = join(dir, `adapter${c}`);
      mkdirSync(adapter);
      writeFileSync(join(adapter, 'adapter_config.json'), readFileSync(join(good, 'adapter_config.json')));
      writeFileSync(join(adapter, 'adapter_model.safetensors'), mutateSafetensors(rng, base));
      const r = finllm(['export', '--model', MODEL, '--adapter', adapter, '--merged', join(dir, `merged${c}`)]);
      expect([0, 1], r.stderr).toContain(r.status);
      expectCleanStderr(r);
    }
    for (let c = 0; c < 3; c++) {
      const file = join(dir, `score${c}.jsonl`);
      writeFileSync(
        file,
        mutateJsonl(rng, [
          { prediction: 'a b', reference: 'a c' },
          { prediction: 'x', reference: 'y', id: 3 },
        ]),
      );
      const r = finllm(['score', '--input', file, '--json']);
      expect([0, 1], r.stderr).toContain(r.status);
      expectCleanStderr(r);
    }
    for (let c = 0; c < 2; c++) {
      const file = join(dir, `cfg${c}.yaml`);
      writeFileSync(
        join(dir, 'train.jsonl'),
        readFileSync(join(ROOT, 'data', 'sample', 'train.jsonl'), 'utf8')
          .split('\n')
          .slice(0, 4)
          .join('\n') + '\n',
      );
      writeFileSync(file, mutateConfigText(rng, BASE_CONFIG(dir)));
      const r = finllm(['data', 'stats', '--config', file, '--report', join(dir, `report${c}.json`)]);
      expect([0, 1], r.stderr).toContain(r.status);
      expectCleanStderr(r);
    }
    expect(tempsUnder(dir)).toEqual([]);
  });
});
