// `finllm tokenizer train --data FILE.jsonl --vocab-size N OUT_DIR`: train a byte-fallback BPE
// tokenizer (Llama layout) on the text of a JSONL file, for a model pretrained from scratch.
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import {
  MAX_VOCAB_SIZE,
  SPECIAL_TOKENS,
  trainBpe,
  VocabTooSmallError,
  writeTokenizerFolder,
} from '../llama/tokenizer-train.js';
import { readRecords } from '../pipeline/data/readers.js';
import { warn } from '../warnings.js';
import { intOption, numberOption } from './model-options.js';

interface TrainTokenizerOpts {
  data: string;
  field: string;
  vocabSize: string;
  minFrequency: string;
}

export function register(program: Command): void {
  const tok = program.command('tokenizer').description('tokenizer tools');
  tok
    .command('train')
    .description('train a byte-fallback BPE tokenizer (Llama / SentencePiece layout) on a JSONL text file')
    .argument(
      '<out_dir>',
      'output folder: tokenizer.json, tokenizer_config.json, special_tokens_map.json (must not exist or be empty)',
    )
    .requiredOption(
      '--data <file>',
      'JSONL file, one {"text": ...} per line (e.g. from finllm data generate --kind corpus)',
    )
    .option('--field <name>', 'the field holding the text', 'text')
    .option(
      '--vocab-size <n>',
      `vocabulary size, the 3 specials, 256 byte tokens and the corpus's characters included (355 for plain ASCII text; at most ${MAX_VOCAB_SIZE})`,
      '2048',
    )
    .option('--min-frequency <n>', 'pairs seen fewer times are not merged (an integer >= 1)', '2')
    .addHelpText(
      'after',
      `
Numbers are spelt digit by digit; characters outside the vocabulary fall back to byte tokens, so any
text encodes. The same data and options give the same tokenizer. A corpus with fewer frequent pairs
than --vocab-size asks for gives a smaller vocabulary, with a warning.

Example:
  finllm data generate --kind corpus -n 20000 --seed 1 -o corpus.jsonl
  finllm tokenizer train --data corpus.jsonl --vocab-size 2048 my-tokenizer/
  finllm init-model --preset fin-s --tokenizer my-tokenizer/ my-model/`,
    )
    .action(async (outDir: string, o: TrainTokenizerOpts) => {
      const vocabSize = numberOption(o.vocabSize, 'vocab-size', true)!;
      if (vocabSize > MAX_VOCAB_SIZE)
        throw new InputError(`expected at most ${MAX_VOCAB_SIZE}, got ${vocabSize}`, { key: 'vocab-size' });
      const minPairFrequency = intOption(o.minFrequency, 'min-frequency', 1)!;
      const texts: string[] = [];
      for (const { row, value } of await readRecords(o.data, { format: 'jsonl', what: 'file' })) {
        const t = (value as Record<string, unknown> | null)?.[o.field];
        if (typeof t !== 'string')
          throw new InputError(`expected a "${o.field}" string`, { file: o.data, row, key: o.field });
        texts.push(t);
      }
      if (texts.length === 0) throw new InputError('no records', { file: o.data });
      if (texts.every((t) => t === ''))
        throw new InputError(`every "${o.field}" is empty: there is nothing to learn a vocabulary from`, {
          file: o.data,
        });
      let bpe: ReturnType<typeof trainBpe>;
      try {
        bpe = trainBpe(texts, { vocabSize, minPairFrequency });
      } catch (err) {
        if (err instanceof VocabTooSmallError) {
          throw new InputError(
            `expected at least ${err.minimum} for this corpus (${SPECIAL_TOKENS.length} special tokens, 256 byte tokens, ${err.alphabetSize} characters), got ${vocabSize}`,
            { key: 'vocab-size' },
          );
        }
        throw err;
      }
      if (bpe.vocab.size < vocabSize) {
        warn(
          `${o.data}: the vocabulary has ${bpe.vocab.size} tokens (${bpe.merges.length} merges), not the ${vocabSize} of --vocab-size: no other pair of symbols occurs at least ${minPairFrequency} times (--min-frequency); a larger corpus gives more`,
        );
      }
      await writeTokenizerFolder(outDir, bpe);
      process.stdout.write(
        `wrote ${outDir}: vocabulary ${bpe.vocab.size} (${bpe.merges.length} merges) from ${texts.length} texts\n`,
      );
    });
}
