// Reverse-mode autograd: each differentiable op records a GradNode (its backward rule beside its
// forward, in the kernel's own file). backward() walks the nodes once in reverse topological order,
// summing gradients where a tensor feeds several ops, and accumulates (+=) into leaves that have
// requiresGrad. Frozen weights (requiresGrad false) never receive gradients and nothing is
// computed for them.
import { Tensor, copyInto } from './tensor.js';

export type BackwardFn = (gradOutputs: (Tensor | null)[]) => (Tensor | null)[];

export class GradNode {
  /** Views that keep saved tensors alive until backward has used them. */
  private saved: Tensor[] = [];
  constructor(
    readonly name: string,
    readonly inputs: Tensor[],
    readonly outputs: Tensor[],
    readonly backwardFn: BackwardFn,
  ) {}

  /** Keeps `t` alive for backward even if its tidy scope ends first; returns the tensor to use in backward. */
  save(t: Tensor): Tensor {
    const v = t.reshape(t.shape).keep();
    this.saved.push(v);
    return v;
  }

  release(): void {
    for (const t of this.saved) t.dispose();
    this.saved = [];
  }
}

let gradEnabled = true;

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

/**
 * Backpropagates from `root` (a scalar loss unless `gradRoot` is given). Leaf gradients accumulate
 * into `.grad` (kept tensors, summed across calls until zeroGrad). The graph is freed afterwards.
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
  if (!gradRoot && root.numel !== 1) throw new Error(`backward() without a gradient needs a scalar, got [${root.shape.join(', ')}]`);
  const grads = new Map<Tensor, Tensor>();
  grads.set(root, gradRoot ?? ones(root.shape));
  const order = topoOrder(root.gradFn);
  for (const node of order) {
    const gOut = node.outputs.map((o) => grads.get(o) ?? null);
    for (const o of node.outputs) grads.delete(o);
    if (gOut.every((g) => g === null)) {
      node.release();
      continue;
    }
    const gIn = node.backwardFn(gOut);
    if (gIn.length !== node.inputs.length) throw new Error(`backward of '${node.name}' returned ${gIn.length} grads for ${node.inputs.length} inputs`);
    node.inputs.forEach((input, i) => {
      const g = gIn[i];
      if (!g) return;
      if (g.numel !== input.numel) throw new Error(`backward of '${node.name}': grad ${i} has shape [${g.shape}] for input [${input.shape}]`);
      if (input.gradFn) {
        const prev = grads.get(input);
        if (prev) accumulate(prev, g);
        else grads.set(input, g.shape.length === input.shape.length ? g : g.reshape(input.shape));
      } else if (input.requiresGrad) {
        accumulateLeaf(input, g, accumulate);
      }
    });
    node.release();
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
