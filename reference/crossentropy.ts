// Float64 reference for cross-entropy from the definition: loss_r = log Σ_j exp(z_rj) − z_r,label
// (computed stably with the row max), counted rows have label ≥ 0 and ≠ ignoreIndex; the mean is over
// counted rows, 0 when there are none (finllm's documented choice). d loss_r / d z_rj = softmax_rj − [j = label].

export function crossEntropyRowsRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  v: number,
  ignoreIndex = -100,
): { loss: Float64Array; lse: Float64Array; counted: boolean[] } {
  const rows = labels.length;
  const loss = new Float64Array(rows);
  const lse = new Float64Array(rows);
  const counted: boolean[] = [];
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let j = 0; j < v; j++) m = Math.max(m, logits[r * v + j]!);
    let s = 0;
    for (let j = 0; j < v; j++) s += Math.exp(logits[r * v + j]! - m);
    lse[r] = m + Math.log(s);
    const label = labels[r]!;
    counted.push(label >= 0 && label !== ignoreIndex);
    loss[r] = counted[r] ? lse[r]! - logits[r * v + label]! : 0;
  }
  return { loss, lse, counted };
}

export function crossEntropyMeanRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  v: number,
  ignoreIndex = -100,
): { loss: number; count: number } {
  const { loss, counted } = crossEntropyRowsRef(logits, labels, v, ignoreIndex);
  const count = counted.filter(Boolean).length;
  const sum = loss.reduce((a, b) => a + b, 0);
  return { loss: count === 0 ? 0 : sum / count, count };
}

/** d(Σ_r rowScale_r · loss_r)/d logits. */
export function crossEntropyBackwardRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  v: number,
  rowScale: ArrayLike<number>,
  ignoreIndex = -100,
): Float64Array {
  const { lse, counted } = crossEntropyRowsRef(logits, labels, v, ignoreIndex);
  const d = new Float64Array(logits.length);
  for (let r = 0; r < labels.length; r++) {
    if (!counted[r]) continue;
    for (let j = 0; j < v; j++) {
      const p = Math.exp(logits[r * v + j]! - lse[r]!);
      d[r * v + j] = (p - (j === labels[r] ? 1 : 0)) * rowScale[r]!;
    }
  }
  return d;
}
