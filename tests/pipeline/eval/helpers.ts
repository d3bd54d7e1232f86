// Shared fixtures for the evaluation tests: a base and a fine-tuned results file built from the
// first 30 items of the bundled summary suite (data/eval/fin-summary.jsonl) with deterministic,
// plausibly different predictions.
import { readFileSync } from 'node:fs';
import { scoreExamples } from '../../../src/pipeline/eval/metrics.js';
import type { Results } from '../../../src/pipeline/eval/results.js';

interface Summ {
  id: string;
  source: string;
  summary: string;
}

export function loadSummaries(): Summ[] {
  return readFileSync(new URL('../../../data/eval/fin-summary.jsonl', import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .slice(0, 30)
    .map((l) => JSON.parse(l) as Summ);
}

/** Base: first sentence of the source (generic, few figures). Candidate: the reference with edits. */
export function makeResults(): { base: Results; candidate: Results } {
  const items = loadSummaries();
  const basePreds = items.map((it) =>
    it.source
      .split(/(?<=\.)\s/)
      .slice(0, 2)
      .join(' '),
  );
  const candPreds = items.map((it, i) => {
    if (i % 7 === 3) return it.source.split(/(?<=\.)\s/)[1]!; // a few regressions
    if (i % 5 === 0) return it.summary.replace(/\d+(\.\d+)?%/, '99%'); // a wrong number
    return it.summary.replace(/guidance was \w+/, 'guidance was updated');
  });
  const mk = (model: string, adapter: string | null, preds: string[]): Results => {
    const inputs = items.map((it, i) => ({
      id: it.id,
      prediction: preds[i]!,
      reference: it.summary,
      source: it.source,
    }));
    const scored = scoreExamples(inputs, { groups: ['rouge', 'bleu', 'chrf', 'numeric', 'terms'] });
    return {
      model,
      adapter,
      task: 'summarization',
      metrics: scored.metrics,
      per_example: inputs.map((inp, i) => ({ ...inp, scores: scored.per_example[i]!.scores })),
    };
  };
  return {
    base: mk('fin-llama-test', null, basePreds),
    candidate: mk('fin-llama-test', 'runs/demo/adapter', candPreds),
  };
}
