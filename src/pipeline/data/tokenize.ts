// Tokenization with response-only loss masking.
//
// The full text (prompt + response) is encoded once, the prompt alone once more; the prompt's
// tokens are the longest common prefix of the two (robust to tokenizers that merge across the
// boundary). EOS is appended, then the sequence is truncated to max_seq_len (from the right: the
// end of the response is what gets lost, which is reported as truncation).
//
// Labels are SHIFTED targets: labels[i] = ids[i+1] when token i+1 is trained on, else -100; the
// last position is always -100 (nothing of this example follows it).
import type { TextExample, TextTokenizer, TokenizedExample } from './types.js';
import { IGNORE_INDEX } from './types.js';

export interface TokenizeOptions {
  maxSeqLen: number;
  responseOnlyLoss: boolean;
}

export function tokenizeExample(ex: TextExample, tok: TextTokenizer, opts: TokenizeOptions): TokenizedExample {
  const special = !ex.rendered;
  const full = tok.encode(ex.prompt + ex.response, { addSpecialTokens: special });
  const promptIds = ex.prompt === '' && !special ? [] : tok.encode(ex.prompt, { addSpecialTokens: special });
  let boundary = 0;
  while (boundary < promptIds.length && boundary < full.length && promptIds[boundary] === full[boundary]) boundary++;
  full.push(tok.eosId);
  const fullLength = full.length;
  const truncated = fullLength > opts.maxSeqLen;
  const ids = truncated ? full.slice(0, opts.maxSeqLen) : full;
  const n = ids.length;
  const inputIds = Int32Array.from(ids);
  const labels = new Int32Array(n).fill(IGNORE_INDEX);
  const firstTarget = opts.responseOnlyLoss ? Math.max(boundary, 1) : 1;
  let numTargets = 0;
  for (let i = 0; i + 1 < n; i++) {
    if (i + 1 >= firstTarget) {
      labels[i] = ids[i + 1]!;
      numTargets++;
    }
  }
  return { file: ex.file, row: ex.row, task: ex.task, inputIds, labels, numTargets, fullLength, truncated };
}
