// Float64 reference for SwiGLU: y = silu(a)·b with silu(a) = a·σ(a), σ(a) = 1/(1 + e^(−a)).
// d/da silu(a) = σ(a) + a·σ(a)(1 − σ(a)).

const sigmoid = (a: number): number => 1 / (1 + Math.exp(-a));

export function swigluRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  return Float64Array.from(gate as ArrayLike<number>, (a, i) => a * sigmoid(a) * up[i]!);
}

export function swigluBackwardRef(
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
  dy: ArrayLike<number>,
): { dGate: Float64Array; dUp: Float64Array } {
  const n = gate.length;
  const dGate = new Float64Array(n);
  const dUp = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const a = gate[i]!;
    const s = sigmoid(a);
    dGate[i] = dy[i]! * up[i]! * (s + a * s * (1 - s));
    dUp[i] = dy[i]! * a * s;
  }
  return { dGate, dUp };
}
