// Float64 references for the embedding gather and its scatter-add gradient, from the definitions.

/** out[i, :] = table[ids[i], :] (NaN row for an id outside [0, V)). */
export function embeddingRef(ids: ArrayLike<number>, table: ArrayLike<number>, V: number, D: number): Float64Array {
  const out = new Float64Array(ids.length * D);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    for (let d = 0; d < D; d++) out[i * D + d] = id >= 0 && id < V ? table[id * D + d]! : NaN;
  }
  return out;
}

/** dTable[v, :] = Σ_{i: ids[i] = v} g[i, :], with Σ|g| and the term count per row for error bounds. */
export function embeddingGradRef(
  ids: ArrayLike<number>,
  g: ArrayLike<number>,
  V: number,
  D: number,
): { dTable: Float64Array; absSum: Float64Array; count: Int32Array } {
  const dTable = new Float64Array(V * D);
  const absSum = new Float64Array(V * D);
  const count = new Int32Array(V);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= V) continue;
    count[id]!++;
    for (let d = 0; d < D; d++) {
      dTable[id * D + d] += g[i * D + d]!;
      absSum[id * D + d] += Math.abs(g[i * D + d]!);
    }
  }
  return { dTable, absSum, count };
}
