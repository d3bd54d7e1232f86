// Shared types of the data stage.

/** A chat message as stored in `{"messages":[{role, content}]}` rows. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | (string & {});
  content: string;
}

/**
 * The tokenizer surface the data stage needs. `src/llama/tokenizer.ts` satisfies it, as do
 * the test doubles in tests/pipeline/data/helpers.ts.
 */
export interface TextTokenizer {
  /** Token ids; with addSpecialTokens the tokenizer's post-processor adds BOS (Llama style). */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[]): string;
  readonly bosId: number | null;
  readonly eosId: number;
  /** Padding id; when null, EOS is used for padding (padding is masked anyway). */
  readonly padId: number | null;
  readonly hasChatTemplate: boolean;
  /** Renders with the model's chat template (only called when hasChatTemplate). */
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

/** One row as read from a file: its 1-based row number (JSONL line / CSV record) and raw fields. */
export interface RawRow {
  /** 1-based row number: the line number in JSONL, the record number (header = row 1) in CSV. */
  row: number;
  /** 1-based physical line where the row starts (differs from `row` for CSV with embedded newlines). */
  line: number;
  fields: Record<string, unknown>;
  /** Problems found while reading (bad JSON, invalid UTF-8, wrong column count). */
  readProblems: { kind: ProblemKind; message: string }[];
}

/** A templated example before tokenization. */
export interface TextExample {
  /** File and row it came from, for messages. */
  file: string;
  row: number;
  task: string;
  source: string | null;
  prompt: string;
  response: string;
  /** True when the text already carries special tokens (chat template); then no BOS is added. */
  rendered: boolean;
}

/** A tokenized example. `labels` are already shifted: see Batch.labels. */
export interface TokenizedExample {
  file: string;
  row: number;
  task: string;
  inputIds: Int32Array;
  /** labels[i] = target for position i (= inputIds[i+1]) or -100. */
  labels: Int32Array;
  /** Number of label positions != -100. */
  numTargets: number;
  /** Token count before truncation (prompt + response + EOS). */
  fullLength: number;
  truncated: boolean;
}

/**
 * One training batch, row-major [batchSize, seqLen].
 *
 * - `labels` are ALREADY SHIFTED: `labels[b*T + t]` is the token that the logits at position t
 *   must predict (i.e. `inputIds[b*T + t + 1]` of the same example), or -100 for "no loss": prompt
 *   positions (with response_only_loss), the last token of each example (nothing of its own
 *   follows; so a packed sequence never predicts the next example's first token), and padding.
 *   The trainer computes cross-entropy(logits[i], labels[i]) over labels != -100, no extra shift.
 * - `positionIds` restart at 0 for every example (also inside packed sequences); 0 on padding.
 * - `segmentIds` give the example number (1, 2, ...) of each token within its row and 0 for
 *   padding; attention must be causal AND restricted to equal segment ids.
 * - `attentionMask` is 1 for real tokens, 0 for padding (equivalent to segmentIds != 0).
 */
export interface Batch {
  inputIds: Int32Array;
  labels: Int32Array;
  positionIds: Int32Array;
  segmentIds: Int32Array;
  attentionMask: Uint8Array;
  batchSize: number;
  seqLen: number;
  /** Count of labels != -100 (normalize the summed loss by this). */
  numTargetTokens: number;
  /** Number of examples in the batch (> batchSize when packed). */
  numExamples: number;
  /** Where each example came from (file, 1-based row), in batch order: named when a step fails. */
  sources?: { file: string; row: number }[];
}

export const IGNORE_INDEX = -100;

export type ProblemKind =
  | 'parse_error'
  | 'missing_field'
  | 'empty_field'
  | 'non_text'
  | 'invalid_utf8'
  | 'replacement_char'
  | 'control_char'
  | 'no_targets'
  | 'truncated'
  | 'duplicate'
  | 'near_duplicate';

/** Problems that make a row unusable (fail policy stops; skip policy drops the row). */
export const ERROR_KINDS: ReadonlySet<ProblemKind> = new Set<ProblemKind>([
  'parse_error',
  'missing_field',
  'empty_field',
  'non_text',
  'invalid_utf8',
  'replacement_char',
  'control_char',
  'no_targets',
]);

export interface Problem {
  kind: ProblemKind;
  file: string;
  row: number;
  message: string;
}
