// `finllm export --model DIR --adapter DIR --merged OUT_DIR [--dtype source|f32|bf16|f16]`: merges a
// LoRA adapter into its base model (W + scale·B·A) and writes a plain HF model folder.
// `finllm export --model DIR [--adapter DIR] --gguf OUT.gguf [--gguf-type T] [--ollama]`: writes the
// (merged) model as one GGUF file for llama.cpp, and with --ollama a Modelfile beside it.
import { stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { resolveModelPath } from '../io/hub.js';
import { exportGguf, GGUF_TYPES, type GgufExportType } from '../llama/gguf.js';
import { type ExportDtype, exportMerged } from '../llama/merge.js';
import { buildModelfile } from '../llama/ollama.js';
import { LlamaTokenizer } from '../llama/tokenizer.js';
import { warn } from '../warnings.js';

export interface ExportCliOptions {
  model?: string;
  adapter?: string;
  merged?: string;
  dtype?: string;
  gguf?: string;
  ggufType?: string;
  ollama?: boolean;
  chatTemplate?: string;
}

async function checkDir(dir: string, what: string): Promise<void> {
  const s = await stat(dir).catch(() => null);
  if (!s) throw new InputError(`${what} folder not found`, { file: dir });
  if (!s.isDirectory()) throw new InputError(`${what} must be a folder`, { file: dir });
}

async function exportGgufAction(
  o: ExportCliOptions & { model: string; gguf: string },
  out: (s: string) => void,
): Promise<void> {
  if (o.merged) throw new InputError('--merged and --gguf are separate exports: give one of them', { flag: 'gguf' });
  if (!o.gguf.toLowerCase().endsWith('.gguf'))
    throw new InputError(`expected a file name ending in .gguf, got ${JSON.stringify(o.gguf)}`, { flag: 'gguf' });
  const type = (o.ggufType ?? 'f16') as GgufExportType;
  if (!GGUF_TYPES.includes(type))
    throw new InputError(`expected ${GGUF_TYPES.join(', ')}, got ${JSON.stringify(o.ggufType)}`, { flag: 'gguf-type' });
  if (o.chatTemplate && !(await stat(o.chatTemplate).catch(() => null))?.isFile())
    throw new InputError('chat template file not found', { file: o.chatTemplate });
  const r = await exportGguf(o.model, o.gguf, {
    type,
    ...(o.adapter ? { adapter: o.adapter } : {}),
    ...(o.chatTemplate ? { chatTemplateFile: o.chatTemplate } : {}),
  });
  if (r.fallbacks.length > 0) {
    // One line per substitution (e.g. Q4_K by Q5_0), naming the first weights it applies to.
    const groups = new Map<string, { wanted: string; written: string; names: string[] }>();
    for (const f of r.fallbacks) {
      const key = `${f.wanted}>${f.written}`;
      if (!groups.has(key)) groups.set(key, { wanted: f.wanted, written: f.written, names: [] });
      groups.get(key)!.names.push(f.name);
    }
    for (const { wanted, written, names } of groups.values()) {
      warn(
        `${names.length} weight(s) have rows that do not fill whole ${wanted} blocks and were written as ${written} instead: ${names.slice(0, 4).join(', ')}${names.length > 4 ? ', ...' : ''}`,
      );
    }
  }
  out(`GGUF (${type}, ${r.tensors} tensors) written to ${o.gguf}\n`);
  if (o.ollama) {
    const tok = await LlamaTokenizer.load(o.model, o.chatTemplate ? { chatTemplateFile: o.chatTemplate } : {});
    const bos = tok.bosId !== null ? (tok.idToToken(tok.bosId) ?? null) : null;
    const mf = buildModelfile(basename(o.gguf), tok, bos, tok.idToToken(tok.eosId)!);
    const path = join(dirname(o.gguf), 'Modelfile');
    await writeFileAtomic(path, mf.text);
    if (mf.note) warn(`Modelfile has no TEMPLATE: ${mf.note}`);
    out(`Ollama Modelfile written to ${path} (ollama create NAME -f ${path})\n`);
  }
}

export async function exportAction(
  o: ExportCliOptions,
  out: (s: string) => void = (s) => void process.stdout.write(s),
): Promise<void> {
  if (!o.model) throw new InputError('--model is required', { flag: 'model' });
  const model = await resolveModelPath(o.model);
  await checkDir(model, 'model');
  if (o.adapter) await checkDir(o.adapter, 'adapter');
  if (o.gguf) return exportGgufAction({ ...o, model, gguf: o.gguf }, out);
  if (o.ollama) throw new InputError('--ollama needs --gguf', { flag: 'ollama' });
  if (!o.adapter) throw new InputError('--adapter is required', { flag: 'adapter' });
  if (!o.merged) throw new InputError('--merged is required (or --gguf for a GGUF file)', { flag: 'merged' });
  const dtype = o.dtype ?? 'source';
  if (!['source', 'f32', 'bf16', 'f16'].includes(dtype))
    throw new InputError(`expected source, f32, bf16 or f16, got ${JSON.stringify(dtype)}`, { flag: 'dtype' });
  const { files } = await exportMerged(o.adapter, model, o.merged, { dtype: dtype as ExportDtype });
  out(`merged model written to ${o.merged} (${files.join(', ')})\n`);
}

export function register(program: Command): void {
  program
    .command('export')
    .description(
      'merge a LoRA adapter into its base model and write a HF safetensors model folder, or write a GGUF file for llama.cpp / Ollama',
    )
    .requiredOption(
      '-m, --model <dir>',
      'base HF model folder, a full-training model/ folder, or a Hugging Face Hub id ORG/NAME[@REVISION] (downloaded into the HF cache)',
    )
    .option('-a, --adapter <dir>', 'PEFT LoRA adapter folder (merged into the weights; required with --merged)')
    .option('-o, --merged <dir>', 'output folder (must not exist or be empty; written atomically)')
    .option('--dtype <dtype>', 'weight dtype: source (as the base checkpoint), f32, bf16 or f16', 'source')
    .option(
      '--gguf <file>',
      'write one GGUF file (llama.cpp, Ollama, LM Studio) instead of a HF folder; written atomically',
    )
    .option('--gguf-type <type>', `GGUF weight type: ${GGUF_TYPES.join(', ')}`, 'f16')
    .option(
      '--ollama',
      'with --gguf: also write an Ollama Modelfile beside the GGUF (FROM, TEMPLATE from the chat template, stop tokens)',
    )
    .option('--chat-template <file>', "with --gguf: a Jinja chat template file to embed instead of the model folder's")
    .addHelpText(
      'after',
      `
Each adapted weight becomes W + scale·B·A (scale = lora_alpha/r, or lora_alpha/sqrt(r) with rsLoRA),
computed in f32 from the base checkpoint as PEFT's merge_and_unload does. config.json, tokenizer
and generation files are copied. Use --dtype f32 to keep the merged weights unrounded.

GGUF: norms stay f32; q8_0 and q4_0 quantize every 2-D weight in blocks of 32 (weights whose rows
are not a multiple of 32 are written f16). q4_k_m is llama.cpp's mix of 256-value super-blocks: Q6_K
for the output matrix (the token embedding when tied) and for attn_v and ffn_down on the layers
llama.cpp picks (first and last eighth, every third between), Q4_K for the rest (Q5_K for the other
attn_v of an 80-layer GQA model). Rows that are not a multiple of 256 fall back as llama.cpp does:
Q4_K -> Q5_0, Q6_K -> Q8_0, and f16 when not a multiple of 32 either. The tokenizer (SentencePiece-style or Llama 3 byte-level
BPE), special tokens and chat template go into the file. finllm eval and generate read the file back
(--model OUT.gguf).

Exit codes: 0 done, 1 bad input (missing folder, adapter not fitting the model), 2 runtime failure.`,
    )
    .action(async (o: ExportCliOptions) => exportAction(o));
}
