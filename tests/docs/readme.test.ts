// Every `finllm ...` command in README.md's fenced blocks is either run here against the bundled
// default (models/fin-base, configs/default.yaml, data/) with tiny step and token counts, or listed
// in EXCLUDED with the reason. A new README example fails the first test until it is classified.
// Commands run as the CLI in a scratch folder whose configs/, data/ and models/ link to the
// repository's, so the README's relative paths hold and nothing is written into the repository.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');

/** The `finllm` commands of the README's fenced shell blocks: continuation lines joined, comments dropped. */
function readmeCommands(markdown: string): string[] {
  const out: string[] = [];
  for (const [, body] of markdown.matchAll(/```(?:sh|bash|shell)?\n([\s\S]*?)```/g)) {
    const lines = body!.split('\n');
    for (let i = 0; i < lines.length; i++) {
      let line = lines[i]!;
      while (/\\\s*$/.test(line) && i + 1 < lines.length) line = line.replace(/\\\s*$/, ' ') + lines[++i]!.trim();
      line = line
        .replace(/\s+#.*$/, '')
        .trim()
        .replace(/\s+/g, ' ');
      if (line.startsWith('finllm ')) out.push(line);
    }
  }
  return out;
}

const EXCLUDED: Record<string, string> = {
  'finllm train --config configs/llama-1b-qlora-gpu.yaml --set training.max_steps=500 --env gpu':
    'a GPU config for TinyLlama-1.1B, which is not bundled (a hub download)',
  'finllm eval --model ~/models/TinyLlama-1.1B --adapter runs/llama-1b-qlora/adapter --data held-out.jsonl --json':
    'TinyLlama-1.1B is not bundled (a hub download)',
  'finllm eval ... --precision fp16-mixed': "a fragment ('...' stands for the line above)",
  'finllm eval ... --task generation --kv-cache f16': "a fragment ('...' stands for the line above)",
  'finllm init-model --preset 1.1b --tokenizer models/tiny-fin out/':
    'writes a 1.1B-parameter checkpoint (4.4 GB of f32 weights)',
  'finllm serve --model DIR --adapter ft=ADAPTER --route ab=base:50,ft:50':
    'a long-running server: tests/serve start it on fixture models',
  'finllm serve --model ~/models/TinyLlama-1.1B --adapter ft=runs/llama-1b-qlora/adapter --route ab=base:50,ft:50 --port 8000 [--api-key KEY] [--max-model-len 4096] [--max-batch-size 8] [--precision fp32|fp16-mixed|auto] [--kv-cache f32|f16|auto]':
    'TinyLlama-1.1B is not bundled, and a long-running server',
  'finllm serve --model runs/default/stages/train/model':
    'a long-running server: tests/serve start it on fixture models',
};

const TINY_TRAIN = [
  '--set',
  'training.max_steps=2',
  '--set',
  'training.eval_every=1',
  '--set',
  'training.save_every=1',
  '--set',
  'training.batch_size=2',
];
const PLACEHOLDERS: Record<string, string> = {
  DIR: 'models/fin-base',
  ADAPTER: 'runs/lora/adapter',
  'my.yaml': 'configs/default.yaml',
};

/** Commands run in order (later ones use what earlier ones wrote), each: the README line and the arguments appended to it. */
const RUN: { readme: string; extra: string[] }[] = [
  { readme: 'finllm data validate --config my.yaml', extra: [] },
  { readme: 'finllm data stats --config my.yaml', extra: [] },
  { readme: 'finllm train --set training.method=full --set model.quantize=none', extra: TINY_TRAIN },
  { readme: 'finllm train --resume', extra: TINY_TRAIN },
  { readme: 'finllm train --resume --allow-config-change', extra: TINY_TRAIN },
  { readme: 'finllm train --set data.train=my-data.csv', extra: [...TINY_TRAIN, '--set', 'output.dir=runs/own'] },
  // The LoRA adapter the DIR/ADAPTER examples use (not a README line itself).
  { readme: '', extra: ['train', '--env', 'lora', '--set', 'output.dir=runs/lora', ...TINY_TRAIN] },
  {
    readme:
      'finllm eval --model DIR --adapter ADAPTER --data data/eval/fin-figures.jsonl --task generation --batch-size 8 --out ft.json',
    extra: ['--limit', '3', '--max-new-tokens', '4', '-q'],
  },
  {
    readme: '',
    extra: [
      'eval',
      '--model',
      'models/fin-base',
      '--data',
      'data/eval/fin-figures.jsonl',
      '--task',
      'generation',
      '--out',
      'base.json',
      '--limit',
      '3',
      '--max-new-tokens',
      '4',
      '-q',
    ],
  },
  { readme: 'finllm compare --base base.json --candidate ft.json --out report/', extra: ['--resamples', '200'] },
  { readme: 'finllm score --input predictions.jsonl --json', extra: [] },
  {
    readme:
      'finllm generate --model DIR --adapter ADAPTER --prompt "Summarize: revenue rose 9% to $2.31 billion" --max-new-tokens 64 --temperature 0.7 --top-p 0.9 --seed 1',
    extra: ['--max-new-tokens', '4'],
  },
  {
    readme: 'finllm generate --model DIR --adapter ADAPTER --merge-adapter --quantize nf4 --prompt "…"',
    extra: ['--max-new-tokens', '4'],
  },
  { readme: 'finllm export --model DIR --adapter ADAPTER --merged merged-model/', extra: [] },
  { readme: 'finllm export --model DIR --adapter ADAPTER --gguf out/fin.gguf --gguf-type q8_0 --ollama', extra: [] },
  { readme: 'finllm eval --model out/fin.gguf --data heldout.jsonl', extra: [] },
  { readme: 'finllm data generate --kind corpus -n 20000 --seed 1 -o corpus.jsonl', extra: ['-n', '300'] },
  { readme: 'finllm data generate --kind tasks -n 200 --seed 2 -o tasks.jsonl', extra: ['-n', '20'] },
  { readme: 'finllm tokenizer train --data corpus.jsonl --vocab-size 2048 tok/', extra: [] },
  {
    readme: 'finllm pipeline',
    extra: [
      '--set',
      'output.dir=runs/pipeline',
      ...TINY_TRAIN,
      '--set',
      'eval.limit=2',
      '--set',
      'eval.max_new_tokens=4',
      '--set',
      'eval.resamples=100',
    ],
  },
];

/** Shell-like split of a README command (double quotes group words). */
function words(cmd: string): string[] {
  return [...cmd.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

describe('README examples', () => {
  const commands = readmeCommands(readFileSync(join(ROOT, 'README.md'), 'utf8'));

  it('every finllm command in the README is run below or excluded with a reason', () => {
    expect(commands.length).toBeGreaterThan(10);
    const classified = new Set([...Object.keys(EXCLUDED), ...RUN.map((r) => r.readme).filter(Boolean)]);
    expect(commands.filter((c) => !classified.has(c))).toEqual([]);
    expect([...classified].filter((c) => !commands.includes(c))).toEqual([]);
  });

  it('the runnable ones exit 0 against the bundled default (tiny step and token counts)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-readme-'));
    for (const d of ['configs', 'data', 'models']) symlinkSync(join(ROOT, d), join(dir, d));
    const alpaca = Array.from(
      { length: 40 },
      (_, i) =>
        `"Give the revenue of company ${i}.","Company ${i} reported revenue of $${i}.5 million.","$${i}.5 million"`,
    );
    writeFileSync(join(dir, 'my-data.csv'), ['instruction,input,output', ...alpaca].join('\n') + '\n');
    writeFileSync(
      join(dir, 'heldout.jsonl'),
      '{"text": "Revenue rose 9% to $2.31 billion."}\n{"text": "Operating margin fell to 12%."}\n',
    );
    writeFileSync(
      join(dir, 'predictions.jsonl'),
      '{"prediction": "Revenue rose 9% to $2.31 billion.", "reference": "Revenue rose 9% to $2.31 billion."}\n',
    );
    try {
      for (const { readme, extra } of RUN) {
        const argv = readme
          ? [
              ...words(readme)
                .slice(1)
                .map((w) => PLACEHOLDERS[w] ?? w),
              ...extra,
            ]
          : extra;
        const r = spawnSync(process.execPath, [CLI, ...argv], {
          cwd: dir,
          encoding: 'utf8',
          env: { ...process.env, FINLLM_ENV: '' },
          timeout: 280_000,
        });
        expect({
          command: readme || argv.join(' '),
          status: r.status,
          stderr: r.status === 0 ? '' : r.stderr.slice(-2000),
        }).toEqual({ command: readme || argv.join(' '), status: 0, stderr: '' });
        if (readme === 'finllm train --set data.train=my-data.csv') {
          expect(r.stdout + r.stderr).toMatch(
            /my-data\.csv \(csv, 40 rows\): Alpaca records \(instruction, input, output\)/,
          );
          expect(r.stderr).toMatch(
            /data\.val .* is not used because data\.train was set by --set data\.train=my-data\.csv/,
          );
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 1_800_000);
});
