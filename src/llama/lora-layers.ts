// The LoRA wrapper of the decoder's linear layers: the trainable A/B leaves of every adapted module,
// with their PEFT initialisation, loading, saving and disposal. The adapter's on-disk format and
// config live in peft.ts; the projection that applies a pair is `project` below.
import { Rng } from '../engine/random.js';
import { engine, Tensor } from '../engine/tensor.js';
import { InputError } from '../errors.js';
import { linear, loraLinear, nf4Linear } from '../kernels/index.js';
import type { LlamaConfig } from './config.js';
import {
  type LoraAdapter,
  type LoraAdapterConfig,
  type LoraWeights,
  loraKey,
  peftTensorName,
  scaling,
  validateAdapterAgainstModel,
} from './peft.js';
import { isNf4, LINEAR_MODULES, type LinearModule, type LinearWeight, linearShape } from './weights.js';

export interface LoraPair {
  /** [r, in] f32 leaf with requiresGrad. */
  A: Tensor;
  /** [out, r] f32 leaf with requiresGrad. */
  B: Tensor;
}

/** Options for a fresh adapter (PEFT LoraConfig names in camelCase). */
export interface NewLoraOptions {
  r: number;
  loraAlpha: number;
  useRslora?: boolean;
  targetModules?: LinearModule[];
  loraDropout?: number;
  baseModelNameOrPath?: string | null;
}

/** LoRA leaves per decoder layer and module, plus the adapter config they were made from. */
export class LoraLayers {
  /** alpha / r (alpha / sqrt(r) with rsLoRA). */
  readonly scale: number;

  private constructor(
    readonly config: LoraAdapterConfig,
    /** Per decoder layer, the adapted modules. */
    readonly layers: Partial<Record<LinearModule, LoraPair>>[],
    /** False for a view over another LoraLayers' tensors (dispose leaves them alone). */
    private readonly owned = true,
  ) {
    this.scale = scaling(config);
  }

  /**
   * Fresh LoRA matrices initialised the way PEFT does: A ~ kaiming_uniform(a=√5) on [r, in]
   * (= U(-1/√in, 1/√in)), B = 0.
   */
  static init(model: LlamaConfig, opts: NewLoraOptions, seed: number): LoraLayers {
    const config = LoraLayers.newConfig(opts);
    const rng = new Rng(seed);
    const weights: LoraWeights = new Map();
    for (let l = 0; l < model.numHiddenLayers; l++) {
      for (const mod of config.targetModules) {
        const [out, inp] = linearShape(model, mod);
        const bound = 1 / Math.sqrt(inp);
        weights.set(loraKey(l, mod), {
          A: rng.uniformArray(config.r * inp, -bound, bound),
          B: new Float32Array(out * config.r),
          r: config.r,
          inFeatures: inp,
          outFeatures: out,
        });
      }
    }
    return LoraLayers.fromAdapter(model, { config, weights });
  }

  /**
   * Leaves of the shapes `init` makes, in the same order, with no values drawn or uploaded: for
   * counting what they take on a MetaDevice (the memory estimate), not for training.
   */
  static empty(model: LlamaConfig, opts: NewLoraOptions): LoraLayers {
    const config = LoraLayers.newConfig(opts);
    const layers: Partial<Record<LinearModule, LoraPair>>[] = [];
    for (let l = 0; l < model.numHiddenLayers; l++) {
      const entry: Partial<Record<LinearModule, LoraPair>> = {};
      for (const mod of config.targetModules) {
        const [out, inp] = linearShape(model, mod);
        const A = Tensor.empty([config.r, inp]).keep();
        const B = Tensor.empty([out, config.r]).keep();
        A.requiresGrad = true;
        B.requiresGrad = true;
        entry[mod] = { A, B };
      }
      layers.push(entry);
    }
    return new LoraLayers(config, layers);
  }

  /** The adapter config of a fresh adapter, checked. */
  private static newConfig(opts: NewLoraOptions): LoraAdapterConfig {
    const config: LoraAdapterConfig = {
      r: opts.r,
      loraAlpha: opts.loraAlpha,
      useRslora: opts.useRslora ?? false,
      targetModules: [...(opts.targetModules ?? LINEAR_MODULES)],
      loraDropout: opts.loraDropout ?? 0,
      baseModelNameOrPath: opts.baseModelNameOrPath ?? null,
      taskType: 'CAUSAL_LM',
    };
    if (!(Number.isInteger(config.r) && config.r > 0))
      throw new InputError(`LoRA rank r must be a positive integer, got ${config.r}`, { key: 'r' });
    if (!(config.loraAlpha > 0))
      throw new InputError(`lora_alpha must be positive, got ${config.loraAlpha}`, { key: 'lora_alpha' });
    if (!(config.loraDropout >= 0 && config.loraDropout < 1))
      throw new InputError(`lora_dropout must be in [0, 1), got ${config.loraDropout}`, { key: 'lora_dropout' });
    return config;
  }

  /** An adapter (validated against the model) uploaded as trainable f32 leaves. */
  static fromAdapter(model: LlamaConfig, adapter: LoraAdapter, file?: string): LoraLayers {
    validateAdapterAgainstModel(adapter.config, model, adapter.weights, file);
    const layers: Partial<Record<LinearModule, LoraPair>>[] = [];
    const created: Tensor[] = [];
    try {
      for (let l = 0; l < model.numHiddenLayers; l++) {
        const entry: Partial<Record<LinearModule, LoraPair>> = {};
        for (const mod of adapter.config.targetModules) {
          const key = loraKey(l, mod);
          const w = adapter.weights.get(key)!;
          const a = Tensor.from(w.A, [w.r, w.inFeatures]).keep();
          created.push(a);
          const b = Tensor.from(w.B, [w.outFeatures, w.r]).keep();
          created.push(b);
          a.requiresGrad = true;
          b.requiresGrad = true;
          a.name = peftTensorName(key, 'A');
          b.name = peftTensorName(key, 'B');
          entry[mod] = { A: a, B: b };
        }
        layers.push(entry);
      }
    } catch (err) {
      for (const t of created) t.dispose();
      throw err;
    }
    return new LoraLayers({ ...adapter.config, targetModules: [...adapter.config.targetModules] }, layers);
  }

  /** A view over the first `n` layers sharing these tensors (disposing it frees nothing). */
  firstLayers(n: number): LoraLayers {
    return new LoraLayers(this.config, this.layers.slice(0, n), false);
  }

  pair(layer: number, mod: LinearModule): LoraPair | undefined {
    return this.layers[layer]?.[mod];
  }

  /** Parameters by PEFT tensor name, in a fixed order (layer, module in LINEAR_MODULES order, A then B). */
  named(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    this.layers.forEach((entry, l) => {
      for (const mod of LINEAR_MODULES) {
        const p = entry[mod];
        if (!p) continue;
        out.set(peftTensorName(loraKey(l, mod), 'A'), p.A);
        out.set(peftTensorName(loraKey(l, mod), 'B'), p.B);
      }
    });
    return out;
  }

  parameters(): Tensor[] {
    return [...this.named().values()];
  }

  /** The LoRA leaves of one decoder layer (A then B per module). */
  layerParameters(layer: number): Tensor[] {
    return Object.values(this.layers[layer] ?? {}).flatMap((p) => [p.A, p.B]);
  }

  /**
   * Overwrites the values of these leaves (same tensor objects, so an optimizer holding them stays
   * valid) from an adapter whose rank and targets match (resume).
   */
  overwriteFrom(model: LlamaConfig, adapter: LoraAdapter, dir: string): void {
    validateAdapterAgainstModel(adapter.config, model, adapter.weights, dir);
    const mine = this.config;
    const same = adapter.config.r === mine.r && adapter.config.targetModules.join() === mine.targetModules.join();
    if (!same) {
      throw new InputError(
        `adapter has r=${adapter.config.r} on ${adapter.config.targetModules.join(', ')}; the model's LoRA has r=${mine.r} on ${mine.targetModules.join(', ')}`,
        { file: dir },
      );
    }
    const dev = engine().dev;
    this.layers.forEach((entry, l) => {
      for (const mod of LINEAR_MODULES) {
        const pair = entry[mod];
        if (!pair) continue;
        const w = adapter.weights.get(loraKey(l, mod))!;
        dev.write(pair.A.buffer, 0, w.A);
        dev.write(pair.B.buffer, 0, w.B);
      }
    });
  }

  /** The weights read back to the CPU (for saving or merging). */
  async toAdapter(): Promise<LoraAdapter> {
    const weights: LoraWeights = new Map();
    for (let l = 0; l < this.layers.length; l++) {
      for (const mod of LINEAR_MODULES) {
        const p = this.layers[l]![mod];
        if (!p) continue;
        weights.set(loraKey(l, mod), {
          A: await p.A.toFloat32(),
          B: await p.B.toFloat32(),
          r: p.A.shape[0]!,
          inFeatures: p.A.shape[1]!,
          outFeatures: p.B.shape[0]!,
        });
      }
    }
    return { config: { ...this.config }, weights };
  }

  dispose(): void {
    if (!this.owned) return;
    for (const t of this.parameters()) {
      t.grad?.dispose();
      t.grad = null;
      t.dispose();
    }
  }
}

/**
 * One linear layer of the decoder: the frozen base (f32, 16-bit or NF4) plus, when `pair` is given,
 * its LoRA update s·(dropout(x)·Aᵀ)·Bᵀ.
 */
export function project(
  x: Tensor,
  base: LinearWeight,
  lora?: { pair: LoraPair; scale: number; dropout: number; seed: number },
): Tensor {
  if (lora) {
    const { pair, scale, dropout, seed } = lora;
    return loraLinear(x, base, pair.A, pair.B, scale, dropout > 0 ? { dropout, seed } : {});
  }
  return isNf4(base) ? nf4Linear(x, base) : linear(x, base);
}
