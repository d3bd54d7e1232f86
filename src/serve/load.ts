// What the server serves: one base model on the GPU, the LoRA state of each named adapter over it
// (the base weights are held once), the tokenizer, and the decoding defaults of
// generation_config.json.
import { basename, resolve } from 'node:path';
import { InputError } from '../errors.js';
import { hubIdOfSnapshot } from '../io/hub.js';
import { checkAdapterBase } from '../llama/adapter-base.js';
import { type GenerationConfig, generationEosIds, readGenerationConfig } from '../llama/generate.js';
import { LlamaModel, type LoadModelOptions, type LoraLayers } from '../llama/model.js';
import { readAdapter } from '../llama/peft.js';
import { LlamaTokenizer } from '../llama/tokenizer.js';

export interface ServeModelSpec {
  /** HF model folder. */
  modelDir: string;
  /** Base weights' storage / quantization (an `adapter` key here is ignored: use `adapters`). */
  load?: Omit<LoadModelOptions, 'adapter'>;
  /** Named PEFT adapter folders served over the base. */
  adapters?: readonly { name: string; dir: string }[];
  /** A Jinja file replacing the tokenizer's chat template. */
  chatTemplateFile?: string;
  /** Context length (prompt + generated tokens); default min(max_position_embeddings, 4096). */
  maxModelLen?: number;
}

export interface ServingModels {
  model: LlamaModel;
  tokenizer: LlamaTokenizer;
  /** Adapter name → its LoRA state (installed per decode step by the scheduler). */
  adapters: Map<string, LoraLayers>;
  generation: GenerationConfig;
  eosIds: number[];
  contextLength: number;
}

export const DEFAULT_MAX_MODEL_LEN = 4096;

/** The base model id when none is given: the Hub id of an HF cache snapshot, else the model folder's name. */
export function defaultModelId(modelDir: string): string {
  return hubIdOfSnapshot(modelDir) ?? basename(resolve(modelDir));
}

/** Loads everything; on failure nothing stays allocated. The engine must be initialized. */
export async function loadServingModels(spec: ServeModelSpec): Promise<ServingModels> {
  const tokenizer = await LlamaTokenizer.load(
    spec.modelDir,
    spec.chatTemplateFile ? { chatTemplateFile: spec.chatTemplateFile } : {},
  );
  const generation = await readGenerationConfig(spec.modelDir);
  const adapterData = [];
  for (const a of spec.adapters ?? [])
    adapterData.push({ name: a.name, dir: a.dir, adapter: await readAdapter(a.dir) });
  for (const a of adapterData) checkAdapterBase(a.adapter.config, a.dir, spec.modelDir);
  const model = await LlamaModel.load(spec.modelDir, spec.load ?? {});
  const adapters = new Map<string, LoraLayers>();
  try {
    const maxPos = model.config.maxPositionEmbeddings;
    const contextLength = spec.maxModelLen ?? Math.min(maxPos, DEFAULT_MAX_MODEL_LEN);
    if (!(Number.isInteger(contextLength) && contextLength >= 2 && contextLength <= maxPos)) {
      throw new InputError(
        `expected an integer in [2, ${maxPos}] (the model's max_position_embeddings), got ${contextLength}`,
        { key: 'max-model-len' },
      );
    }
    for (const a of adapterData) adapters.set(a.name, model.createLoraState(a.adapter, a.dir));
    return {
      model,
      tokenizer,
      adapters,
      generation,
      eosIds: generationEosIds(generation, model.config.eosTokenIds, tokenizer.eosId),
      contextLength,
    };
  } catch (err) {
    for (const s of adapters.values()) s.dispose();
    model.dispose();
    throw err;
  }
}

export function disposeServingModels(m: ServingModels): void {
  m.model.lora = null;
  for (const s of m.adapters.values()) s.dispose();
  m.adapters.clear();
  m.model.dispose();
}
