// Reverse-mode autograd: each differentiable op records a GradNode (its backward rule beside its
// forward, in the kernel's own file). backward() walks the nodes once in reverse topological order,
// summing gradients where a tensor feeds several ops, and accumulates (+=) into leaves that have
// requiresGrad. Frozen weights (requiresGrad false) never receive gradients and nothing is
// computed for them.
//
// Memory: a node keeps alive only the tensors its rule saved (`node.save`), and releases them as
// soon as its rule has run; each gradient is freed as soon as the node that reads it is done. A
// tensor marked `recomputable` is not kept at all: nodes that save it get an unbound stand-in, and
// backward rebuilds the value (once, shared by every node that saved it) just before the first of
// those rules runs, freeing it after the last.
import { copyInto, Tensor, tidy } from './tensor.js';

export type BackwardFn = (gradOutputs: (Tensor | null)[]) => (Tensor | null)[];

/** How to rebuild a tensor in backward from inputs it keeps instead (see `withRecompute`). */
class Recipe {
  /** Saved stand-ins not yet released. */
  private users = 0;
  /** Set when the marking scope has ended: no new stand-ins, free everything with the last user. */
  private sealed = false;
  private inputViews: Tensor[];
  private value: Tensor | null = null;
  constructor(
    private readonly source: Tensor,
    inputs: readonly Tensor[],
    private readonly fn: (inputs: Tensor[]) => Tensor,
  ) {
    this.inputViews = inputs.map((t) => t.reshape(t.shape).keep());
  }

  /** A stand-in for `saved` (a view of the source's storage) that `bind` fills later. */
  standIn(saved: Tensor): Tensor {
    this.users++;
    return Tensor.unbound(saved.shape, saved.dtype).keep();
  }

  bind(standIn: Tensor): void {
    if (!this.value) {
      // The original may still be alive (e.g. inside a checkpointed re-run): then nothing is recomputed.
      this.value = !this.source.disposed
        ? this.source.reshape(this.source.shape).keep()
        : tidy(() => noGrad(() => this.fn(this.inputViews))).keep();
    }
    standIn.bindStorage(this.value);
  }

  release(standIn: Tensor): void {
    standIn.dispose();
    this.users--;
    this.freeIfDone();
  }

  seal(): void {
    this.sealed = true;
    this.freeIfDone();
  }

  private freeIfDone(): void {
    if (!this.sealed || this.users > 0) return;
    this.value?.dispose();
    this.value = null;
    for (const t of this.inputViews) t.dispose();
    this.inputViews = [];
  }
}

/** Recipes by the storage of the tensor they rebuild (so views of it find the recipe too). */
const recipes = new WeakMap<object, Recipe>();

/**
 * Runs `body()` with `t` marked as cheap to rebuild as `fn(inputs)`: ops inside `body` that save
 * `t` (or a view of it) for backward keep `inputs` instead (views of them, so they should be tensors
 * kept for backward anyway, e.g. a norm's input), and `t`'s own storage is freed with its scope.
 * Backward rebuilds `t` once, just before the first rule that reads it, and frees it after the
 * last. `fn` must reproduce `t` exactly (deterministic kernels); it runs under noGrad. When autograd
 * is not recording, just runs `body()`.
 */
export function withRecompute<T>(
  t: Tensor,
  inputs: readonly Tensor[],
  fn: (inputs: Tensor[]) => Tensor,
  body: () => T,
): T {
  const key = t.storageKey;
  if (!gradEnabled || !key) return body();
  const recipe = new Recipe(t, inputs, fn);
  recipes.set(key, recipe);
  try {
    return body();
  } finally {
    recipes.delete(key);
    recipe.seal();
  }
}

/** Whether `t` is marked recomputable (inside `withRecompute` for it): saving it keeps no memory. */
export function isRecomputable(t: Tensor): boolean {
  const key = t.storageKey;
  return key !== null && recipes.has(key);
}

export class GradNode {
  /** Views that keep saved tensors alive until backward has used them. */
  private saved: Tensor[] = [];
  /** Stand-ins for recomputed saved tensors, with the recipe that fills each. */
  private deferred: [Tensor, Recipe][] = [];
  constructor(
    readonly name: string,
    readonly inputs: Tensor[],
    readonly outputs: Tensor[],
    readonly backwardFn: BackwardFn,
  ) {}

  /**
   * Keeps `t` for backward even if its tidy scope ends first; returns the tensor to use in backward
   * (only there: a recomputed one is bound just before the rule runs).
   */
  save(t: Tensor): Tensor {
    const key = t.storageKey;
    const recipe = key ? recipes.get(key) : undefined;
    if (recipe) {
      const standIn = recipe.standIn(t);
      this.deferred.push([standIn, recipe]);
      return standIn;
    }
    const v = t.reshape(t.shape).keep();
    this.saved.push(v);
    return v;
  }

  /** Rebuilds the recomputed saved tensors (backward calls it just before the rule). */
  materialize(): void {
    for (const [standIn, recipe] of this.deferred) recipe.bind(standIn);
  }

  release(): void {
    for (const t of this.saved) t.dispose();
    this.saved = [];
    for (const [standIn, recipe] of this.deferred) recipe.release(standIn);
    this.deferred = [];
  }
}

let gradEnabled = true;

/** The nodes recorded inside each open releaseOnError call, innermost last. */
const guarded: GradNode[][] = [];

/**
 * Runs `fn` (a forward, a backward, or both); if it throws, every node it recorded releases what it
 * saved. A forward that fails midway (out of memory) never reaches backward, which is what releases
 * saved tensors otherwise: without this they would stay allocated for the rest of the process.
 */
export function releaseOnError<T>(fn: () => T): T {
  const nodes: GradNode[] = [];
  guarded.push(nodes);
  try {
    const result = fn();
    if (result instanceof Promise) throw new Error('releaseOnError() takes a synchronous function');
    guarded.pop();
    const outer = guarded.at(-1);
    if (outer) for (const node of nodes) outer.push(node);
    return result;
  } catch (err) {
    guarded.pop();
    for (const node of nodes) node.release();
    throw err;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording any autograd nodes (evaluation, generation, optimizer steps). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function needsGrad(inputs: readonly (Tensor | null | undefined)[]): boolean {
  return gradEnabled && inputs.some((t) => t != null && (t.requiresGrad || t.gradFn !== null));
}

/**
 * Records an op. `inputs` are the differentiable inputs (others are captured by the closure, saved
 * through `node.save`). Returns the node, or null when no input needs a gradient.
 * The backward rule receives one gradient per output (null when that output got none) and returns
 * one gradient per input (null where the input needs none), each shaped like that input.
 */
export function recordOp(
  name: string,
  inputs: Tensor[],
  outputs: Tensor | Tensor[],
  makeBackward: (node: GradNode) => BackwardFn,
): GradNode | null {
  if (!needsGrad(inputs)) return null;
  const outs = Array.isArray(outputs) ? outputs : [outputs];
  const node = new GradNode(name, inputs, outs, () => []);
  guarded.at(-1)?.push(node);
  const fn = makeBackward(node);
  (node as { backwardFn: BackwardFn }).backwardFn = fn;
  for (const o of outs) o.gradFn = node;
  return node;
}

/** Hooks into the kernels this module needs (set by src/kernels/elementwise.ts to avoid an import cycle). */
export const autogradKernels: {
  /** dst += src, in place. */
  accumulate: ((dst: Tensor, src: Tensor) => void) | null;
  /** A tensor of ones with `shape`. */
  ones: ((shape: readonly number[]) => Tensor) | null;
} = { accumulate: null, ones: null };

function kernels(): { accumulate: (dst: Tensor, src: Tensor) => void; ones: (shape: readonly number[]) => Tensor } {
  const { accumulate, ones } = autogradKernels;
  if (!accumulate || !ones) throw new Error('autograd kernels not registered: import src/kernels/index.js');
  return { accumulate, ones };
}

function topoOrder(root: GradNode): GradNode[] {
  const order: GradNode[] = [];
  const visited = new Set<GradNode>();
  // Iterative DFS (models are deep; recursion would overflow on long graphs).
  const stack: [GradNode, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [node, i] = top;
    if (i < node.inputs.length) {
      top[1]++;
      const child = node.inputs[i]!.gradFn;
      if (child && !visited.has(child)) {
        visited.add(child);
        stack.push([child, 0]);
      }
    } else {
      order.push(node);
      stack.pop();
    }
  }
  return order.reverse(); // root first
}

let backwardObserver: ((node: GradNode) => void) | null = null;

/**
 * Runs `body` (synchronous) with `observer` called for each graph node just before its backward
 * rule runs (or its saved tensors are rebuilt for it): e.g. the memory estimate names the op whose
 * backward is running at its peak.
 */
export function observeBackward<T>(observer: (node: GradNode) => void, body: () => T): T {
  const previous = backwardObserver;
  backwardObserver = observer;
  try {
    return body();
  } finally {
    backwardObserver = previous;
  }
}

/**
 * Backpropagates from `root` (a scalar loss unless `gradRoot` is given). Leaf gradients accumulate
 * into `.grad` (kept tensors, summed across calls until zeroGrad). The graph is freed afterwards;
 * so is every intermediate gradient, as soon as the node reading it is done (the caller keeps
 * `gradRoot`).
 */
export function backward(root: Tensor, gradRoot?: Tensor): void {
  const { accumulate, ones } = kernels();
  if (!root.gradFn) {
    if (root.requiresGrad) {
      accumulateLeaf(root, gradRoot ?? ones(root.shape), accumulate);
      return;
    }
    throw new Error('backward() on a tensor that does not depend on any parameter with requiresGrad');
  }
  if (!gradRoot && root.numel !== 1)
    throw new Error(`backward() without a gradient needs a scalar, got [${root.shape.join(', ')}]`);
  // Every tensor in `grads` is owned here (the caller's gradRoot enters as a view of it).
  const grads = new Map<Tensor, Tensor>();
  grads.set(root, gradRoot ? gradRoot.reshape(gradRoot.shape) : ones(root.shape));
  const order = topoOrder(root.gradFn);
  for (const node of order) {
    const gOut = node.outputs.map((o) => grads.get(o) ?? null);
    for (const o of node.outputs) grads.delete(o);
    if (gOut.every((g) => g === null)) {
      node.release();
      continue;
    }
    backwardObserver?.(node);
    node.materialize();
    const gIn = node.backwardFn(gOut);
    if (gIn.length !== node.inputs.length)
      throw new Error(`backward of '${node.name}' returned ${gIn.length} grads for ${node.inputs.length} inputs`);
    const stored = new Set<Tensor>();
    const storedStorage = new Set<object | null>();
    node.inputs.forEach((input, i) => {
      const g = gIn[i];
      if (!g) return;
      if (g.numel !== input.numel)
        throw new Error(`backward of '${node.name}': grad ${i} has shape [${g.shape}] for input [${input.shape}]`);
      if (input.gradFn) {
        const prev = grads.get(input);
        if (prev) accumulate(prev, g);
        else {
          // Gradients are accumulated in place, so two inputs must never share one buffer.
          let own: Tensor;
          if (storedStorage.has(g.storageKey)) {
            own = Tensor.empty(input.shape);
            copyInto(own, g);
          } else own = g.shape.length === input.shape.length ? g : g.reshape(input.shape);
          grads.set(input, own);
          stored.add(own);
          storedStorage.add(own.storageKey);
        }
      } else if (input.requiresGrad) {
        accumulateLeaf(input, g, accumulate);
      }
    });
    node.release();
    // Freed in queue order: work recorded later may reuse the buffers, work recorded earlier has read them.
    for (const g of new Set([...gOut, ...gIn])) if (g && !stored.has(g)) g.dispose();
  }
  for (const node of order) for (const o of node.outputs) o.gradFn = null;
}

function accumulateLeaf(leaf: Tensor, g: Tensor, accumulate: (dst: Tensor, src: Tensor) => void): void {
  if (leaf.grad) accumulate(leaf.grad, g);
  else {
    // A fresh copy the leaf owns (g may be shared with other consumers or be a view).
    const own = Tensor.empty(leaf.shape, 'f32').keep();
    own.name = leaf.name ? `${leaf.name}.grad` : undefined;
    leaf.grad = own;
    copyInto(own, g);
  }
}

/** Drops the gradients of `params` (call after each optimizer step). */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}
