// "Did you mean" suggestions for names a user or file got wrong (tensor names, module names, keys).

function editDistance(a: string, b: string): number {
  const previous = new Array<number>(b.length + 1);
  const current = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) previous[j] = j;
  for (let i = 1; i <= a.length; i++) {
    current[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution);
    }
    for (let j = 0; j <= b.length; j++) previous[j] = current[j]!;
  }
  return previous[b.length]!;
}

/** The `count` candidates closest to `name` by edit distance (ties keep candidate order). */
export function similarNames(name: string, candidates: Iterable<string>, count = 3): string[] {
  return [...candidates]
    .map((candidate, index) => ({ candidate, index, distance: editDistance(name, candidate) }))
    .sort((x, y) => x.distance - y.distance || x.index - y.index)
    .slice(0, count)
    .map((x) => x.candidate);
}
