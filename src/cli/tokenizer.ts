// `finllm tokenizer train --data FILE.jsonl --vocab-size N OUT_DIR`: train a byte-fallback BPE
// tokenizer (Llama layout) on the text of a JSONL file, for a model pretrained from scratch.
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import { readJsonl } from '../pipeline/eval/fsutil.js';
import { trainBpe, writeTokenizerFolder } from '../llama/tokenizer-train.js';
import { numberOption } from './model-options.js';

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
    .argument('<out_dir>', 'output folder: tokenizer.json, tokenizer_config.json, special_tokens_map.json (must not exist or be empty)')
    .requiredOption('--data <file>', 'JSONL file, one {"text": ...} per line (e.g. from finllm data generate --kind corpus)')
    .option('--field <name>', 'the field holding the text', 'text')
    .option('--vocab-size <n>', 'vocabulary size, the 3 specials and 256 byte tokens included', '2048')
    .option('--min-frequency <n>', 'pairs seen fewer times are not merged', '2')
    .addHelpText('after', `
Numbers are spelt digit by digit; characters outside the vocabulary fall back to byte tokens, so any
text encodes. The same data and options give the same tokenizer.

Example:
  finllm data generate --kind corpus -n 20000 --seed 1 -o corpus.jsonl
  finllm tokenizer train --data corpus.jsonl --vocab-size 2048 my-tokenizer/
  finllm init-model --preset fin-s --tokenizer my-tokenizer/ my-model/`)
    .action(async (outDir: string, o: TrainTokenizerOpts) => {
      const vocabSize = numberOption(o.vocabSize, 'vocab-size', true)!;
      const minPairFrequency = numberOption(o.minFrequency, 'min-frequency', true)!;
      const texts: string[] = [];
      for (const { row, value } of await readJsonl(o.data)) {
        const t = (value as Record<string, unknown> | null)?.[o.field];
        if (typeof t !== 'string') throw new InputError(`expected a "${o.field}" string`, { file: o.data, row, key: o.field });
        texts.push(t);
      }
      if (texts.length === 0) throw new InputError('no records', { file: o.data });
      const bpe = trainBpe(texts, { vocabSize, minPairFrequency });
      await writeTokenizerFolder(outDir, bpe);
      process.stdout.write(`wrote ${outDir}: vocabulary ${bpe.vocab.size} (${bpe.merges.length} merges) from ${texts.length} texts\n`);
    });
}
