// Duplicate detection: exact (identical normalized text) and near duplicates (MinHash over word
// 3-gram shingles with LSH banding; candidate pairs are confirmed with the exact Jaccard similarity).

/** FNV-1a 32-bit. */
export function fnv1a(s: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Lowercase, drop punctuation except inside numbers, collapse whitespace. */
export function normalizeForDedup(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{N}$€£¥%.,\s]/gu, ' ')
    .replace(/(?<!\p{N})[.,]|[.,](?!\p{N})/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** Hashed word 3-gram shingles (whole text as one shingle when shorter than 3 words). */
export function shingles(normalized: string, k = 3): Set<number> {
  const words = normalized.split(' ').filter(Boolean);
  const out = new Set<number>();
  if (words.length < k) {
    out.add(fnv1a(words.join(' ')));
    return out;
  }
  for (let i = 0; i + k <= words.length; i++) out.add(fnv1a(words.slice(i, i + k).join(' ')));
  return out;
}

export function jaccard(a: Set<number>, b: Set<number>): number {
  if (a.size === 0 && b.size === 0) return 1;
  let inter = 0;
  const [small, big] = a.size <= b.size ? [a, b] : [b, a];
  for (const x of small) if (big.has(x)) inter++;
  return inter / (a.size + b.size - inter);
}

const NUM_HASHES = 128;
const BANDS = 16;
const ROWS = NUM_HASHES / BANDS;
const SEEDS = Array.from({ length: NUM_HASHES }, (_, i) => mix32(0x9e3779b9 + i * 0x85ebca6b));

export function minhash(sh: Set<number>): Uint32Array {
  const sig = new Uint32Array(NUM_HASHES).fill(0xffffffff);
  for (const x of sh) {
    for (let i = 0; i < NUM_HASHES; i++) {
      const h = mix32(x ^ SEEDS[i]!);
      if (h < sig[i]!) sig[i] = h;
    }
  }
  return sig;
}

export interface DuplicateMatch {
  /** Index of the dropped item. */
  index: number;
  /** Index of the earlier item it duplicates. */
  of: number;
  kind: 'duplicate' | 'near_duplicate';
  similarity: number;
}

/**
 * Find duplicates in `texts` (in order; the first occurrence is kept). Returns one match per
 * dropped item.
 */
export function findDuplicates(
  texts: readonly string[],
  opts: { exact: boolean; near: boolean; threshold: number },
): DuplicateMatch[] {
  const out: DuplicateMatch[] = [];
  const exactSeen = new Map<string, number>();
  const bands = Array.from({ length: BANDS }, () => new Map<string, number[]>());
  const kept: { index: number; sh: Set<number> }[] = [];
  const keptByIndex = new Map<number, Set<number>>();
  for (let i = 0; i < texts.length; i++) {
    const norm = normalizeForDedup(texts[i]!);
    if (opts.exact) {
      const prev = exactSeen.get(norm);
      if (prev !== undefined) {
        out.push({ index: i, of: prev, kind: 'duplicate', similarity: 1 });
        continue;
      }
      exactSeen.set(norm, i);
    }
    if (!opts.near) continue;
    const sh = shingles(norm);
    const sig = minhash(sh);
    const keys: string[] = [];
    const candidates = new Set<number>();
    for (let b = 0; b < BANDS; b++) {
      const key = Array.from(sig.subarray(b * ROWS, (b + 1) * ROWS)).join(',');
      keys.push(key);
      for (const c of bands[b]!.get(key) ?? []) candidates.add(c);
    }
    let match: DuplicateMatch | undefined;
    for (const c of [...candidates].sort((a, b) => a - b)) {
      const sim = jaccard(sh, keptByIndex.get(c)!);
      if (sim >= opts.threshold) {
        match = { index: i, of: c, kind: 'near_duplicate', similarity: sim };
        break;
      }
    }
    if (match) {
      out.push(match);
      continue;
    }
    kept.push({ index: i, sh });
    keptByIndex.set(i, sh);
    keys.forEach((key, b) => {
      const m = bands[b]!;
      const list = m.get(key);
      if (list) list.push(i);
      else m.set(key, [i]);
    });
  }
  return out;
}
