// Training configuration: one YAML file, validated into typed sections.
//
//   base file  <  environments.<name> (chosen by --env / FINLLM_ENV)  <  --set a.b=c
//
// Every error names the key path, the value found and what was expected, plus where that value
// came from (the file, an environment, or a --set flag). Unknown keys are errors with a
// "did you mean" suggestion. Paths given in the file (or its environments) resolve relative to the
// file's folder; paths given with --set resolve relative to the current working directory.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { InputError, readFailure } from '../errors.js';
import { writeFileAtomicSync as writeFileAtomic } from '../io/atomic.js';
import { parseHubId, resolveModelPath } from '../io/hub.js';
import { describeValue } from '../io/json.js';
import { warn } from '../warnings.js';
import { DATA_FORMATS } from './data/readers.js';
import { METRIC_GROUPS } from './eval/metrics.js';
import { EMBEDDING_METRICS } from './eval/semantic.js';

export const TEMPLATE_NAMES = [
  'auto',
  'completion',
  'chat',
  'alpaca',
  'financial_analysis',
  'transcript_completion',
  'summarization',
  'qa',
] as const;
export type TemplateName = (typeof TEMPLATE_NAMES)[number];

/** The projection names `lora.target_modules` may list (or the shorthand `all-linear`). */
export const LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

const positiveInt = z.number().int().positive();
/** training.grad_checkpointing values (src/llama/ops.ts CheckpointMode). */
const CHECKPOINTING = ['none', 'selective', 'full'] as const;
const nonNegInt = z.number().int().nonnegative();

const modelSchema = z.strictObject({
  /** Folder with config.json, *.safetensors and tokenizer.json (Hugging Face layout). */
  path: z.string().min(1),
  /** nf4: frozen base weights quantized to 4-bit NormalFloat (QLoRA); none: kept at `storage`. */
  quantize: z.enum(['nf4', 'none']).default('nf4'),
  /** Storage dtype of the non-quantized weights (embeddings, norms, or everything when quantize=none). */
  storage: z.enum(['f32', 'bf16', 'f16']).default('f32'),
});

const loraSchema = z.strictObject({
  r: positiveInt.default(8),
  alpha: z.number().positive().default(16),
  dropout: z.number().min(0).max(0.9).default(0.05),
  target_modules: z
    .union([z.literal('all-linear'), z.array(z.enum(LORA_TARGETS)).min(1)])
    .default(['q_proj', 'k_proj', 'v_proj', 'o_proj'])
    .transform((v): LoraTarget[] => (v === 'all-linear' ? [...LORA_TARGETS] : [...new Set(v)])),
  /** rsLoRA scaling alpha/sqrt(r) instead of alpha/r. */
  rslora: z.boolean().default(false),
});

const columnsSchema = z.strictObject({
  text: z.string().min(1).default('text'),
  task: z.string().min(1).default('task'),
  source: z.string().min(1).default('source'),
  question: z.string().min(1).default('question'),
  answer: z.string().min(1).default('answer'),
  summary: z.string().min(1).default('summary'),
  sentiment: z.string().min(1).default('sentiment'),
  analysis: z.string().min(1).default('analysis'),
  continuation: z.string().min(1).default('continuation'),
  messages: z.string().min(1).default('messages'),
  prompt: z.string().min(1).default('prompt'),
  response: z.string().min(1).default('response'),
  /** Alpaca records: instruction (+ input) → output. */
  instruction: z.string().min(1).default('instruction'),
  input: z.string().min(1).default('input'),
  output: z.string().min(1).default('output'),
  /** ShareGPT records: [{from: human|gpt|system, value}, ...]. */
  conversations: z.string().min(1).default('conversations'),
});

/** The column mapping with every field at its own name (what `data.columns: {}` resolves to). */
export const DEFAULT_COLUMNS: ColumnMapping = columnsSchema.parse({});

const dataSchema = z.strictObject({
  train: z.string().min(1),
  /** Validation file; when absent, `val_split` of the training rows are held out (seeded). */
  val: z.string().min(1).nullable().default(null),
  /** File format; null infers it from the extension (.jsonl/.ndjson → jsonl, .json → json, .csv → csv). */
  format: z.enum(DATA_FORMATS).nullable().default(null),
  /** Maps the template field names (text, question, answer, ...) to column names in your files. */
  columns: columnsSchema.prefault({}),
  /** Prompt/response template; `auto` picks one per row from its task column / available fields. */
  template: z.enum(TEMPLATE_NAMES).default('auto'),
  max_seq_len: z.number().int().min(8).max(131072).default(512),
  /** Pack several examples into each sequence (attention kept within each example). */
  packing: z.boolean().default(false),
  /** Train only on response tokens (prompt tokens get label -100). */
  response_only_loss: z.boolean().default(true),
  val_split: z.number().min(0).max(0.5).default(0.05),
  dedup: z
    .strictObject({
      exact: z.boolean().default(true),
      near: z.boolean().default(true),
      /** Jaccard similarity of word 3-gram shingles at or above which two rows are near duplicates. */
      near_threshold: z.number().gt(0).max(1).default(0.9),
    })
    .prefault({}),
  /** fail: stop with the first problems listed; skip: drop bad rows and report them. */
  on_invalid: z.enum(['fail', 'skip']).default('fail'),
  preprocess: z
    .strictObject({
      /** NFKC for compatibility characters (full-width, ligatures, odd spaces), never for ², ½, ™. */
      unicode: z.boolean().default(true),
      whitespace: z.boolean().default(true),
      /** Rewrite transcript speaker labels into `Speaker: text` lines (auto: when a text has ≥2 labels). */
      speaker_turns: z.enum(['auto', 'always', 'never']).default('auto'),
    })
    .prefault({}),
  /** Mega-batch size (in batches) inside which rows are sorted by length when packing is off. */
  bucket_megabatches: positiveInt.default(50),
});

const trainingSchema = z
  .strictObject({
    /**
     * lora: train LoRA adapters on the frozen (optionally NF4) base; full: train every weight
     * (embeddings, norms, LM head) in f32, as pretraining from scratch does.
     */
    method: z.enum(['lora', 'full']).default('lora'),
    epochs: positiveInt.default(1),
    /** When set, training stops after this many optimizer steps (overrides epochs). */
    max_steps: positiveInt.nullable().default(null),
    /** Sequences per micro-batch (at most the number of training examples), or `auto`: the largest that fits the device's memory (see effective_batch_size). */
    batch_size: z.union([positiveInt, z.literal('auto')]).default(4),
    grad_accum: positiveInt.default(1),
    /**
     * With batch_size: auto, sequences per optimizer step (micro-batch × grad_accum, grad_accum
     * re-derived); null: 4 × grad_accum.
     */
    effective_batch_size: positiveInt.nullable().default(null),
    lr: z.number().positive().max(1).default(2e-4),
    schedule: z.enum(['linear', 'cosine', 'constant']).default('cosine'),
    warmup_steps: nonNegInt.nullable().default(null),
    warmup_ratio: z.number().min(0).max(1).nullable().default(null),
    weight_decay: z.number().min(0).default(0),
    max_grad_norm: z.number().positive().nullable().default(1.0),
    /** none | selective | full (what backward keeps vs recomputes; true/false of older configs mean full/none). */
    grad_checkpointing: z.preprocess(
      (v) => (v === true ? 'full' : v === false ? 'none' : v),
      z.enum(CHECKPOINTING).default('none'),
    ),
    /**
     * fp32 | fp16-mixed (GEMM operands f16 with f32 accumulation, activations saved in f16, LoRA
     * weights/grads/AdamW state f32, dynamic loss scaling) | auto (fp16-mixed where the adapter has
     * f16 subgroup matrices, i.e. tensor cores; fp32 elsewhere).
     */
    precision: z.enum(['fp32', 'fp16-mixed', 'auto']).default('auto'),
    /** Dynamic loss scaling in fp16-mixed (torch GradScaler's defaults and semantics). */
    loss_scaling: z
      .strictObject({
        init_scale: z.number().positive().default(65536),
        growth_factor: z.number().gt(1).default(2),
        backoff_factor: z.number().gt(0).lt(1).default(0.5),
        growth_interval: positiveInt.default(2000),
      })
      .prefault({}),
    seed: z.number().int().nonnegative().default(42),
    /** Steps between validation passes (0: only at the end). */
    eval_every: nonNegInt.default(100),
    /** Steps between checkpoints (0: only at the end). */
    save_every: nonNegInt.default(200),
    log_every: positiveInt.default(10),
    keep_last_checkpoints: positiveInt.default(3),
    early_stopping: z
      .strictObject({
        patience: positiveInt.default(3),
        min_delta: z.number().min(0).default(0),
      })
      .nullable()
      .default(null),
    resume: z.enum(['auto', 'never']).default('auto'),
  })
  .superRefine((t, ctx) => {
    if (t.effective_batch_size !== null && t.batch_size !== 'auto') {
      ctx.addIssue({
        code: 'custom',
        path: ['effective_batch_size'],
        message: `effective_batch_size (${t.effective_batch_size}) only applies with batch_size: auto; with batch_size ${t.batch_size} the effective batch is batch_size × grad_accum`,
      });
    }
    if (t.warmup_steps !== null && t.warmup_ratio !== null) {
      ctx.addIssue({
        code: 'custom',
        path: ['warmup_ratio'],
        message: `set either training.warmup_steps (${t.warmup_steps}) or training.warmup_ratio (${t.warmup_ratio}), not both`,
      });
    }
  });

const outputSchema = z.strictObject({
  dir: z.string().min(1).default('runs/finllm'),
  /** Also write base + adapter merged into a standalone model folder at the end. */
  export_merged: z.boolean().default(false),
});

const loggingSchema = z.strictObject({
  console: z.boolean().default(true),
  jsonl: z.boolean().default(true),
  tensorboard: z.boolean().default(false),
});

/** Metric groups an eval suite may ask for (src/pipeline/eval/metrics.ts) plus the embedding ones. */
export const EVAL_METRIC_NAMES = [...METRIC_GROUPS, ...EMBEDDING_METRICS, 'perplexity'] as const;
export const EVAL_TASKS = ['generation', 'classification', 'perplexity'] as const;

/** One evaluation file of `finllm pipeline` (see src/pipeline/eval/generation.ts for the record formats). */
const evalSuiteSchema = z.strictObject({
  /** Names the suite's results and report folder; default: the file name without extension. */
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . - only')
    .nullable()
    .default(null),
  file: z.string().min(1),
  task: z.enum(EVAL_TASKS).default('generation'),
  /** Metric groups; null: the defaults of the record kind (qa, summarization, sentiment, ...). */
  metrics: z.array(z.enum(EVAL_METRIC_NAMES)).min(1).nullable().default(null),
  /** First N records of this file (overrides eval.limit). */
  limit: positiveInt.nullable().default(null),
});

/** Evaluation settings of `finllm pipeline` (baseline and fine-tuned evals, comparison). */
const evalSchema = z.strictObject({
  suites: z.array(evalSuiteSchema).min(1),
  /** First N records of every suite (null: all). */
  limit: positiveInt.nullable().default(null),
  max_new_tokens: positiveInt.default(64),
  sampling: z
    .strictObject({
      /** Greedy decoding (reproducible); false samples with the settings below. */
      greedy: z.boolean().default(true),
      temperature: z.number().positive().default(1),
      top_k: nonNegInt.default(0),
      top_p: z.number().gt(0).max(1).default(1),
      repetition_penalty: z.number().positive().default(1),
      seed: nonNegInt.default(0),
    })
    .prefault({}),
  /** Add embedding cosine and BERTScore (base model hidden states) to generation suites. */
  embeddings: z.boolean().default(false),
  /** Family-wise significance level of the comparison. */
  alpha: z.number().gt(0).lt(1).default(0.05),
  /** Bootstrap resamples of the comparison. */
  resamples: z.number().int().min(100).default(10000),
});

/** Schema of the merged (base + environment + --set) config, without `environments`. */
export const configSchema = z
  .strictObject({
    model: modelSchema,
    lora: loraSchema.prefault({}),
    data: dataSchema,
    training: trainingSchema.prefault({}),
    output: outputSchema.prefault({}),
    logging: loggingSchema.prefault({}),
    /** Only `finllm pipeline` reads it; absent: the pipeline skips its evaluation stages. */
    eval: evalSchema.nullable().default(null),
  })
  .superRefine((c, ctx) => {
    if (c.training.method !== 'full') return;
    // Full training updates every weight in place with f32 master weights and AdamW moments.
    if (c.model.quantize === 'nf4') {
      ctx.addIssue({
        code: 'custom',
        path: ['model', 'quantize'],
        message:
          'training.method full trains every weight, and NF4-quantized weights cannot be trained: set model.quantize: none (or use training.method: lora for QLoRA)',
      });
    }
    if (c.model.storage !== 'f32') {
      ctx.addIssue({
        code: 'custom',
        path: ['model', 'storage'],
        message: `training.method full keeps f32 master weights, got model.storage ${c.model.storage}: set model.storage: f32`,
      });
    }
  });

export type ModelConfig = z.infer<typeof modelSchema>;
export type LoraConfig = z.infer<typeof loraSchema>;
export type DataConfig = z.infer<typeof dataSchema>;
export type ColumnMapping = DataConfig['columns'];
export type TrainingConfig = z.infer<typeof trainingSchema>;
export type OutputConfig = z.infer<typeof outputSchema>;
export type LoggingConfig = z.infer<typeof loggingSchema>;
export type EvalConfig = z.infer<typeof evalSchema>;
export type EvalSuiteConfig = EvalConfig['suites'][number];

export interface ConfigSource {
  /** Absolute path of the config file, or null when running on built-in defaults only. */
  file: string | null;
  /** Environment profile applied, or null. */
  env: string | null;
  /** --set overrides applied, in order. */
  sets: string[];
}

/** The fully resolved configuration: every default filled in, every path absolute. */
export interface ResolvedConfig {
  model: ModelConfig;
  lora: LoraConfig;
  data: DataConfig;
  training: TrainingConfig;
  output: OutputConfig;
  logging: LoggingConfig;
  /** Optional so configs built in code without it stay valid; loadConfig always sets it (null when absent). */
  eval?: EvalConfig | null;
  source: ConfigSource;
}

export interface LoadConfigOptions {
  /** YAML file. Default: `configs/default.yaml` under the current directory, when it exists. */
  file?: string;
  /** Environment profile name. Default: $FINLLM_ENV when set. */
  env?: string;
  /** `a.b=c` overrides; the value is parsed as a YAML scalar (`10`, `true`, `null`, `1e-4`, `[a, b]`). */
  sets?: string[];
  /** Working directory for the default file and --set paths (default process.cwd()). */
  cwd?: string;
}

export const DEFAULT_CONFIG_FILE = 'configs/default.yaml';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Where each leaf value came from, keyed by dotted path. */
type Provenance = Map<string, { origin: string; baseDir: string }>;

function recordProvenance(value: Json, path: string[], prov: Provenance, origin: string, baseDir: string): void {
  if (isObj(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) recordProvenance(v, [...path, k], prov, origin, baseDir);
  } else if (path.length > 0) {
    const key = path.join('.');
    // A later source replacing a subtree drops the old leaves below it.
    for (const p of [...prov.keys()]) if (p.startsWith(key + '.')) prov.delete(p);
    prov.set(key, { origin, baseDir });
  }
}

function deepMerge(base: Json, over: Json): Json {
  if (isObj(base) && isObj(over)) {
    const out: Obj = { ...base };
    for (const [k, v] of Object.entries(over)) out[k] = k in out ? deepMerge(out[k]!, v) : v;
    return out;
  }
  return over;
}

function describe(v: unknown): string {
  return v === undefined ? 'nothing' : typeof v === 'string' ? JSON.stringify(v) : describeValue(v);
}

function getAt(obj: unknown, path: (string | number)[]): unknown {
  let cur: unknown = obj;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[p];
  }
  return cur;
}

/** Levenshtein distance, for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  const prev = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

export function suggest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** The keys an object schema accepts at `path` (through defaults/nullable/pipes), or undefined. */
function knownKeysAt(path: (string | number)[]): string[] | undefined {
  let s: unknown = configSchema;
  const unwrap = (x: unknown): unknown => {
    for (let i = 0; i < 10; i++) {
      const def = (x as { _zod?: { def?: { innerType?: unknown; in?: unknown } } })._zod?.def;
      if (def?.innerType) x = def.innerType;
      else if (def?.in) x = def.in;
      else break;
    }
    return x;
  };
  s = unwrap(s);
  for (const p of path) {
    const shape = (s as { shape?: Record<string, unknown> }).shape;
    if (!shape || typeof p !== 'string' || !(p in shape)) return undefined;
    s = unwrap(shape[p]);
  }
  const shape = (s as { shape?: Record<string, unknown> }).shape;
  return shape ? Object.keys(shape) : undefined;
}

function expectedFor(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${issue.expected === 'int' ? 'an integer' : issue.expected}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'too_small':
      return `expected ${issue.origin === 'array' ? 'at least ' + String(issue.minimum) + ' item(s)' : issue.origin === 'string' ? 'a non-empty string' : (issue.inclusive ? '>= ' : '> ') + String(issue.minimum)}${issue.origin === 'int' || (issue as { format?: string }).format === 'safeint' ? ' (integer)' : ''}`;
    case 'too_big':
      return `expected ${issue.inclusive ? '<= ' : '< '}${String(issue.maximum)}`;
    case 'invalid_format':
      return `expected ${issue.format}`;
    case 'invalid_union':
      return issue.path.join('.') === 'training.batch_size'
        ? 'expected a positive integer or "auto"'
        : 'expected "all-linear" or a list of projection names (' + LORA_TARGETS.join(', ') + ')';
    default:
      return issue.message;
  }
}

function issuesToError(
  issues: z.core.$ZodIssue[],
  merged: Json,
  prov: Provenance,
  file: string | null,
  noFileHint = false,
): InputError {
  const lines: string[] = [];
  // The file is named unless every problem is in a value given with --set (then the file is not at fault).
  let fromFile = false;
  for (const issue of issues) {
    const path = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeysAt(issue.path as (string | number)[]) ?? [];
      for (const k of issue.keys) {
        const key = [...path, k].join('.');
        const hint = suggest(k, known);
        const from = prov.get(key)?.origin ?? [...prov.entries()].find(([p]) => p.startsWith(key + '.'))?.[1].origin;
        if (!from?.startsWith('--set ')) fromFile = true;
        lines.push(
          `key '${key}'${from ? ` (from ${from})` : ''}: unknown key${hint ? `; did you mean '${[...path, hint].join('.')}'?` : ''}` +
            ` (allowed here: ${known.join(', ')})`,
        );
      }
      continue;
    }
    const key = path.join('.') || '(root)';
    const value = getAt(merged, issue.path as (string | number)[]);
    const from = prov.get(key)?.origin;
    if (!from?.startsWith('--set ')) fromFile = true;
    // YAML's .inf / .nan and numbers past the double range (1e400) are numbers, but not finite ones.
    const expected =
      typeof value === 'number' && !Number.isFinite(value) ? 'expected a finite number' : expectedFor(issue);
    const what = issue.code === 'custom' ? issue.message : `got ${describe(value)}, ${expected}`;
    lines.push(
      `key '${key}'${from ? ` (from ${from})` : ''}: ${value === undefined && issue.code === 'invalid_type' ? `missing, ${expectedFor(issue)}` : what}`,
    );
  }
  let head = lines.length === 1 ? lines[0]! : `${lines.length} problems in the configuration:\n  ${lines.join('\n  ')}`;
  if (noFileHint)
    head += `\n(no config file was given and ${DEFAULT_CONFIG_FILE} does not exist here: pass --config FILE)`;
  return new InputError(head, file && fromFile ? { file } : {});
}

/** Parse the right-hand side of `--set key=value` as a YAML scalar/flow value. */
function parseSet(raw: string): { path: string[]; value: Json } {
  const eq = raw.indexOf('=');
  if (eq <= 0)
    throw new InputError(`--set ${JSON.stringify(raw)}: expected key.path=value (e.g. training.max_steps=10)`);
  const key = raw.slice(0, eq).trim();
  const path = key.split('.');
  if (path.some((p) => p === '' || !/^[A-Za-z0-9_-]+$/.test(p))) {
    throw new InputError(
      `--set ${JSON.stringify(raw)}: key path ${JSON.stringify(key)} must be dot-separated names like training.lr`,
    );
  }
  let value: Json;
  try {
    value = YAML.parse(raw.slice(eq + 1)) as Json;
  } catch (e) {
    throw new InputError(
      `--set ${JSON.stringify(raw)}: value is not valid YAML (${(e as Error).message.split('\n')[0]})`,
    );
  }
  return { path, value: value === undefined ? null : value };
}

function nest(path: string[], value: Json): Obj {
  let out: Json = value;
  for (let i = path.length - 1; i >= 0; i--) out = { [path[i]!]: out };
  return out as Obj;
}

function readYaml(file: string): Obj {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw readFailure(e, file, 'config file');
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const err = doc.errors[0]!;
    const line = err.linePos?.[0]?.line;
    throw new InputError(`invalid YAML${line ? ` at line ${line}` : ''}: ${err.message.split('\n')[0]}`, { file });
  }
  let value: unknown;
  try {
    // The yaml library refuses documents whose aliases expand too much (an alias "bomb").
    value = doc.toJS({ maxAliasCount: 100 }) as unknown;
  } catch (e) {
    throw new InputError(`invalid YAML: ${(e as Error).message}`, { file });
  }
  if (value === null || value === undefined) return {};
  if (!isObj(value))
    throw new InputError(
      `expected a mapping of sections (model, lora, data, ...) at the top level, got ${describe(value)}`,
      { file },
    );
  return value;
}

/**
 * Load, merge and validate a config. Throws InputError (naming key, value, expected, and origin)
 * on any problem. The result is plain data, safe to JSON/YAML-serialize.
 */
export function loadConfig(opts: LoadConfigOptions = {}): ResolvedConfig {
  const cwd = opts.cwd ?? process.cwd();
  let file: string | null = null;
  if (opts.file !== undefined) file = resolve(cwd, opts.file);
  else if (existsSync(join(cwd, DEFAULT_CONFIG_FILE))) file = resolve(cwd, DEFAULT_CONFIG_FILE);

  const fileDir = file ? dirname(file) : cwd;
  const raw: Obj = file ? readYaml(file) : {};
  const prov: Provenance = new Map();
  const fileLabel = file ?? 'built-in defaults';

  const { environments, ...base } = raw;
  recordProvenance(base, [], prov, fileLabel, fileDir);
  let merged: Json = base;

  const envName = opts.env ?? (process.env.FINLLM_ENV ? process.env.FINLLM_ENV : undefined);
  if (environments !== undefined && !isObj(environments)) {
    throw new InputError(
      `key 'environments': got ${describe(environments)}, expected a mapping of profile name → partial config`,
      file ? { file } : {},
    );
  }
  if (envName !== undefined && envName !== '') {
    const envs = (environments ?? {}) as Obj;
    const names = Object.keys(envs);
    // Own keys only: `in` would also find __proto__, toString and the rest of Object.prototype.
    if (!Object.hasOwn(envs, envName)) {
      const hint = suggest(envName, names);
      throw new InputError(
        `environment ${JSON.stringify(envName)} (from ${opts.env !== undefined ? '--env' : 'FINLLM_ENV'}) is not defined under 'environments'; ` +
          (names.length ? `defined: ${names.join(', ')}` : 'the file defines none') +
          (hint ? `; did you mean ${JSON.stringify(hint)}?` : ''),
        file ? { file } : {},
      );
    }
    const overlay = envs[envName] ?? {};
    if (!isObj(overlay)) {
      throw new InputError(
        `key 'environments.${envName}': got ${describe(overlay)}, expected a mapping of partial sections`,
        file ? { file } : {},
      );
    }
    if ('environments' in overlay)
      throw new InputError(
        `key 'environments.${envName}.environments': environments cannot be nested`,
        file ? { file } : {},
      );
    recordProvenance(overlay, [], prov, `environment '${envName}' in ${fileLabel}`, fileDir);
    merged = deepMerge(merged, overlay);
  }

  for (const s of opts.sets ?? []) {
    const { path, value } = parseSet(s);
    const overlay = nest(path, value);
    recordProvenance(overlay, [], prov, `--set ${s}`, cwd);
    merged = deepMerge(merged, overlay);
  }

  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) throw issuesToError(parsed.error.issues, merged, prov, file, file === null);
  const cfg = parsed.data;

  // A validation file belongs to the training file it was written for: when data.train comes from
  // a later layer (an environment or --set) than data.val, the file's data.val is not used.
  const layer = (origin: string | undefined) =>
    origin === undefined ? -1 : origin.startsWith('--set') ? 2 : origin.startsWith('environment') ? 1 : 0;
  const trainOrigin = prov.get('data.train')?.origin;
  const valOrigin = prov.get('data.val')?.origin;
  if (cfg.data.val !== null && layer(trainOrigin) > layer(valOrigin)) {
    warn(
      `data.val (${cfg.data.val}, from ${valOrigin}) is not used because data.train was set by ${trainOrigin}: ` +
        `validation is held out from data.train instead (data.val_split ${cfg.data.val_split}); set data.val too to use a validation file`,
      'config:data.val-dropped',
    );
    cfg.data.val = null;
  }

  // Resolve paths relative to the folder of whoever set them.
  const resolvePath = (key: string, p: string): string =>
    isAbsolute(p) ? p : resolve(prov.get(key)?.baseDir ?? fileDir, p);
  cfg.model.path = modelPathOrHubId(cfg.model.path, resolvePath('model.path', cfg.model.path));
  cfg.data.train = resolvePath('data.train', cfg.data.train);
  if (cfg.data.val !== null) cfg.data.val = resolvePath('data.val', cfg.data.val);
  cfg.output.dir = resolvePath('output.dir', cfg.output.dir);
  // A list is one provenance leaf: suite files resolve against whoever set eval.suites.
  for (const suite of cfg.eval?.suites ?? []) suite.file = resolvePath('eval.suites', suite.file);

  return { ...cfg, source: { file, env: envName && envName !== '' ? envName : null, sets: [...(opts.sets ?? [])] } };
}

/**
 * model.path as written (`org/name[@revision]`) when it is shaped like a Hugging Face Hub id and no
 * file or folder exists at its resolved path; otherwise the resolved path. The loaders download a
 * Hub id into the HF cache (src/io/hub.ts).
 */
function modelPathOrHubId(written: string, resolved: string): string {
  return parseHubId(written) !== null && !existsSync(resolved) ? written : resolved;
}

/** Validate an in-memory config object (same rules as a file, paths resolved against `baseDir`). */
export function parseConfigObject(obj: unknown, baseDir: string = process.cwd()): ResolvedConfig {
  if (!isObj(obj)) throw new InputError(`config: expected a mapping of sections, got ${describe(obj)}`);
  const prov: Provenance = new Map();
  const { environments: _ignored, ...base } = obj;
  recordProvenance(base, [], prov, 'config object', baseDir);
  const parsed = configSchema.safeParse(base);
  if (!parsed.success) throw issuesToError(parsed.error.issues, base, prov, null);
  const cfg = parsed.data;
  const r = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  cfg.model.path = modelPathOrHubId(cfg.model.path, r(cfg.model.path));
  cfg.data.train = r(cfg.data.train);
  if (cfg.data.val !== null) cfg.data.val = r(cfg.data.val);
  cfg.output.dir = r(cfg.output.dir);
  for (const suite of cfg.eval?.suites ?? []) suite.file = r(suite.file);
  return { ...cfg, source: { file: null, env: null, sets: [] } };
}

/** `cfg` with model.path a local folder: a Hub id is downloaded into (or found in) the HF cache (`quiet`: no progress lines). */
export async function withLocalModel(cfg: ResolvedConfig, opts: { quiet?: boolean } = {}): Promise<ResolvedConfig> {
  const path = await resolveModelPath(cfg.model.path, opts.quiet ? { progress: () => undefined } : {});
  return path === cfg.model.path ? cfg : { ...cfg, model: { ...cfg.model, path } };
}

export const RESOLVED_CONFIG_NAME = 'resolved-config.yaml';

/**
 * Write the resolved config as YAML to `<dir>/resolved-config.yaml` (atomic: temp file + rename).
 * The file is itself a valid config (absolute paths, no environments), so
 * `loadConfig({file})` on it reproduces the same run. Returns the written path.
 */
export function saveResolvedConfig(cfg: ResolvedConfig, dir: string, notes: readonly string[] = []): string {
  const { source, ...sections } = cfg;
  const header =
    `# Resolved finllm configuration (every default filled in, paths absolute).\n` +
    `# source file: ${source.file ?? '(built-in defaults)'}\n` +
    `# environment: ${source.env ?? '(none)'}\n` +
    (source.sets.length ? `# --set: ${source.sets.join(' ')}\n` : '') +
    notes.map((n) => `# ${n}\n`).join('');
  const path = join(dir, RESOLVED_CONFIG_NAME);
  writeFileAtomic(path, header + YAML.stringify(sections, { lineWidth: 0 }));
  return path;
}
