// Results format, comparison and report files.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { compareResults } from '../../../src/pipeline/eval/compare.js';
import { scoreExamples } from '../../../src/pipeline/eval/metrics.js';
import { finalTrainLoss, fmtPBetter, metricRange, renderHtml, writeReport } from '../../../src/pipeline/eval/report.js';
import {
  parseResults,
  readResults,
  readScoreInput,
  readTrainingLog,
  writeResults,
} from '../../../src/pipeline/eval/results.js';
import { wilcoxon } from '../../../src/pipeline/eval/stats.js';
import { makeResults } from './helpers.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'finllm-eval-'));

describe('results file', () => {
  it('round-trips through writeResults/readResults and leaves no temp files', async () => {
    const dir = tmp();
    const { base } = makeResults();
    await writeResults(join(dir, 'results.json'), base);
    expect(readdirSync(dir)).toEqual(['results.json']);
    const back = await readResults(join(dir, 'results.json'));
    expect(back).toEqual({ format: 'finllm.results.v1', ...base });
  });
  it('reports schema problems with file and key', () => {
    const { base } = makeResults();
    const bad = structuredClone(base) as unknown as { per_example: { scores: Record<string, unknown> }[] };
    bad.per_example[3]!.scores['rougeL'] = 'high';
    expect(() => parseResults(bad, 'base.json')).toThrow(InputError);
    expect(() => parseResults(bad, 'base.json')).toThrow(
      /base\.json, key 'per_example\[3\]\.scores\.rougeL'.*expected number/,
    );
    const dup = structuredClone(base);
    dup.per_example[2]!.id = dup.per_example[1]!.id;
    expect(() => parseResults(dup, 'b.json')).toThrow(/duplicate id/);
    expect(() => parseResults({ model: 'm', task: 't', metrics: {}, per_example: [] }, 'x.json')).toThrow(
      /per_example/,
    );
  });
  it('score input and training log JSONL errors name the line', async () => {
    const dir = tmp();
    writeFileSync(
      join(dir, 'in.jsonl'),
      '{"prediction": "a", "reference": "b"}\n\n{"prediction": 3, "reference": "b"}\n',
    );
    await expect(readScoreInput(join(dir, 'in.jsonl'))).rejects.toThrow(/in\.jsonl, row 3, key 'prediction'/);
    writeFileSync(join(dir, 'in2.jsonl'), '{"prediction": "a", "reference": "b"}\nnot json\n');
    await expect(readScoreInput(join(dir, 'in2.jsonl'))).rejects.toThrow(
      /in2\.jsonl, row 2: invalid JSON \(expected one JSON object per line\)/,
    );
    writeFileSync(join(dir, 'log.jsonl'), '{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.1, "val_loss": 2.3}\n');
    expect(await readTrainingLog(join(dir, 'log.jsonl'))).toEqual([
      { step: 1, loss: 2.5 },
      { step: 2, loss: 2.1, val_loss: 2.3 },
    ]);
    await expect(readResults(join(dir, 'missing.json'))).rejects.toThrow(/missing\.json: file not found/);
  });
});

describe('scoreExamples', () => {
  it('aggregates means over present values and corpus BLEU/chrF', () => {
    const r = scoreExamples([
      { prediction: 'Revenue rose 5% to $2 billion.', reference: 'Revenue rose 5% to $2 billion.' },
      { prediction: 'Guidance unchanged.', reference: 'The outlook was maintained.' },
    ]);
    expect(r.per_example[0]!.scores['rougeL']).toBe(1);
    expect(r.per_example[1]!.scores['numeric_fidelity']).toBeNull();
    expect(r.metrics['numeric_fidelity']).toBe(1);
    expect(r.metrics['rougeL']).toBeCloseTo((1 + (r.per_example[1]!.scores['rougeL'] as number)) / 2, 15);
    expect(r.metrics['bleu']).toBeGreaterThan(0);
    expect(r.metrics['bleu']).not.toBeCloseTo(
      ((r.per_example[0]!.scores['bleu'] as number) + (r.per_example[1]!.scores['bleu'] as number)) / 2,
      3,
    );
  });
  it('label group reports accuracy and F1 for gold-labelled references', () => {
    const r = scoreExamples(
      [
        { prediction: 'Positive', reference: 'positive' },
        { prediction: 'It is negative.', reference: 'neutral' },
        { prediction: 'neutral', reference: 'neutral' },
        { prediction: 'negative', reference: 'negative' },
      ],
      { groups: ['label'] },
    );
    expect(r.metrics['label_correct']).toBe(0.75);
    expect(r.classification?.confusion).toEqual([
      [1, 0, 0],
      [1, 1, 0],
      [0, 0, 1],
    ]);
    expect(r.metrics['label_macro_f1']).toBeCloseTo((2 / 3 + 2 / 3 + 1) / 3, 12);
  });
});

describe('compareResults', () => {
  const { base, candidate } = makeResults();
  const cmp = compareResults(base, candidate, { resamples: 2000 });

  it('pairs examples by id regardless of order and runs the statistics per metric', () => {
    const shuffled = { ...candidate, per_example: [...candidate.per_example].reverse() };
    const cmp2 = compareResults(base, shuffled, { resamples: 2000 });
    const r1 = cmp.metrics.find((m) => m.metric === 'rougeL')!;
    const r2 = cmp2.metrics.find((m) => m.metric === 'rougeL')!;
    expect(r2.wilcoxon.pValue).toBe(r1.wilcoxon.pValue);
    expect(r1.n).toBe(30);
    const b = base.per_example.map((e) => e.scores['rougeL'] as number);
    const c = base.per_example.map((e) => candidate.per_example.find((x) => x.id === e.id)!.scores['rougeL'] as number);
    expect(r1.wilcoxon.pValue).toBe(wilcoxon(b, c).pValue);
    expect(r1.meanDiff).toBeCloseTo(c.reduce((s, x) => s + x, 0) / 30 - b.reduce((s, x) => s + x, 0) / 30, 12);
  });
  it('finds the clear ROUGE improvement and orders metrics, primary first', () => {
    const r = cmp.metrics.find((m) => m.metric === 'rougeL')!;
    expect(r.verdict).toBe('improved');
    expect(r.role).toBe('secondary');
    expect(r.diffCI.low).toBeGreaterThan(0);
    expect(r.pBetter).toBeGreaterThan(0.99);
    expect(r.pBetter).toBeCloseTo(1 - r.pValue / 2, 15);
    expect(cmp.metrics.map((m) => m.metric).slice(0, 5)).toEqual([
      'numeric_fidelity',
      'hallucinated_number_rate',
      'rouge1',
      'rouge2',
      'rougeL',
    ]);
    expect(cmp.metrics.slice(0, 2).map((m) => m.role)).toEqual(['primary', 'primary']);
    // Examples are ranked by the first primary metric that changed.
    expect(cmp.primaryMetric).toBe('numeric_fidelity');
  });
  it('a summary suite whose numbers improve but that invents a figure in 6 of 30: the primary metrics disagree, and it regressed', () => {
    // The fixture's candidate writes "99%" for a figure in every fifth summary (helpers.ts).
    expect(cmp.suite.kind).toBe('generation');
    expect(cmp.suite.primary).toEqual(['numeric_fidelity', 'hallucinated_number_rate']);
    expect(cmp.metrics[0]!.verdict).toBe('improved');
    expect(cmp.metrics[1]!.verdict).toBe('regressed');
    expect(cmp.suite.verdict).toBe('regressed');
    expect(cmp.suite.reasons.join('; ')).toMatch(
      /^hallucinated_number_rate 0 → 0\.0444 .*although numeric_fidelity 0\.611 → 0\.894/,
    );
  });
  it('uses only pairs where both sides have a value, and Holm-adjusts', () => {
    const hr = cmp.metrics.find((m) => m.metric === 'hallucinated_number_rate')!;
    expect(hr.higherIsBetter).toBe(false);
    const cand2 = structuredClone(candidate);
    cand2.per_example[4]!.scores['numeric_fidelity'] = null;
    delete cand2.per_example[5]!.scores['numeric_fidelity'];
    const nf = compareResults(base, cand2, { resamples: 200 }).metrics.find((m) => m.metric === 'numeric_fidelity')!;
    expect(nf.n).toBe(28);
    expect(nf.ids).not.toContain(base.per_example[4]!.id);
    for (const m of cmp.metrics)
      expect(m.pHolm).toBeGreaterThanOrEqual(Number.isNaN(m.wilcoxon.pValue) ? 1 : m.wilcoxon.pValue);
  });
  it('lists most improved and regressed examples by gain', () => {
    const byRouge = compareResults(base, candidate, { resamples: 200, primaryMetric: 'rougeL' });
    expect(byRouge.primaryMetric).toBe('rougeL');
    expect(byRouge.improved.length).toBe(5);
    expect(byRouge.regressed.length).toBeGreaterThan(0);
    for (let i = 1; i < byRouge.improved.length; i++)
      expect(byRouge.improved[i - 1]!.gain).toBeGreaterThanOrEqual(byRouge.improved[i]!.gain);
    for (const e of byRouge.regressed) expect(e.candidate).toBeLessThan(e.base);
  });
  it('rejects mismatched example ids naming the file', () => {
    const fewer = { ...candidate, per_example: candidate.per_example.slice(1) };
    expect(() => compareResults(base, fewer, { baseFile: 'b.json', candidateFile: 'c.json' })).toThrow(
      /c\.json, key 'per_example': expected the same example ids as b\.json, got 1 missing \(first: eval-00001\)/,
    );
    expect(() => compareResults(base, candidate, { primaryMetric: 'nope' })).toThrow(/'nope'/);
  });
});

describe('writeReport', () => {
  it('writes html, markdown and json with every number and no external resources', async () => {
    const { base, candidate } = makeResults();
    const cmp = compareResults(base, candidate, { resamples: 1000 });
    cmp.trainingLog = [
      { step: 0, loss: 2.9 },
      { step: 10, loss: 2.2, val_loss: 2.4 },
      { step: 20, loss: 1.8, val_loss: 2.1 },
    ];
    const dir = join(tmp(), 'nested', 'out');
    const paths = await writeReport(dir, cmp);
    expect(readdirSync(dir).sort()).toEqual(['report.html', 'report.json', 'summary.md']);
    const json = JSON.parse(readFileSync(paths.json, 'utf8'));
    const rl = json.metrics.find((m: { metric: string }) => m.metric === 'rougeL');
    const ours = cmp.metrics.find((m) => m.metric === 'rougeL')!;
    expect(rl.wilcoxon.pValue).toBe(ours.wilcoxon.pValue);
    expect(rl.diffCI.low).toBe(ours.diffCI.low);
    expect(rl.base).toHaveLength(30);
    expect(json.trainingLog).toHaveLength(3);
    const html = readFileSync(paths.html, 'utf8');
    expect(html).not.toMatch(/<script|<link|src=|url\(|@import/i);
    expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    expect((html.match(/data-chart="metric-bars"/g) ?? []).length).toBe(cmp.metrics.filter((m) => m.n > 0).length);
    expect(html).toContain('data-chart="loss"');
    expect(html).toContain('data-series="val_loss"');
    expect(html).toContain(cmp.improved[0]!.id);
    const md = readFileSync(paths.markdown, 'utf8');
    expect(md).toMatch(/\| rougeL \| secondary \| 30 \|/);
    expect(md).toMatch(/\| numeric_fidelity \| primary \| 30 \|/);
    expect(md).toContain('**Verdict: regressed** (generation; primary: numeric_fidelity, hallucinated_number_rate)');
    expect(md).toContain('best validation loss: 2.1 at step 20');
    expect(md).toContain('final train loss, mean of the last 3 logged steps (0–20; one batch alone is noisy): 2.3');
    expect(json.verdict_line).toMatch(/^summarization: regressed — /);
    expect(html).toContain(`data-verdict="regressed"`);
  });
  it('escapes example text', () => {
    const { base, candidate } = makeResults();
    candidate.per_example[0]!.prediction = '<img src=x onerror=alert(1)> & "quotes"';
    candidate.per_example[0]!.scores['rougeL'] = 1;
    const html = renderHtml(compareResults(base, candidate, { resamples: 200, primaryMetric: 'rougeL' }));
    expect(html).not.toContain('<img');
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quotes&quot;');
  });
});

describe('report figures', () => {
  it('the final train loss is the mean of the last 10% (at least 3) of logged steps, not the last batch', () => {
    const log = Array.from({ length: 40 }, (_, i) => ({ step: i * 5, loss: i === 39 ? 0.127 : 1 + (i % 2) * 0.2 }));
    const fin = finalTrainLoss([...log, { step: 200, val_loss: 1.3 }])!;
    // Steps 180-195 (i = 36..39): 1, 1.2, 1 and the last noisy batch 0.127.
    expect(fin).toMatchObject({ points: 4, fromStep: 180, toStep: 195 });
    expect(fin.loss).toBeCloseTo((1 + 1.2 + 1 + 0.127) / 4, 14);
    expect(finalTrainLoss([{ step: 0, val_loss: 2 }])).toBeNull();
    // Few logged steps: at least the last 3 (all of them when fewer).
    expect(finalTrainLoss(log.slice(0, 6))).toMatchObject({
      points: 3,
      fromStep: 15,
      toStep: 25,
      loss: (1.2 + 1 + 1.2) / 3,
    });
    expect(finalTrainLoss(log.slice(0, 2))).toMatchObject({ points: 2, fromStep: 0, toStep: 5 });
  });
  it('P(better) is never shown as a certainty', () => {
    expect([0.9999, 0.999, 0.5, 0.0004, NaN].map(fmtPBetter)).toEqual(['> 0.999', '0.999', '0.500', '< 0.001', 'n/a']);
  });
  it('axes follow the metric range: a rate ends at 1, BLEU at 100, unknown scores at a round value above the data', () => {
    const m = (metric: string, xs: number[]) => ({ metric, perExample: true, base: xs, candidate: xs });
    expect(metricRange(m('hallucinated_number_rate', [1, 1, 0.5]))).toEqual([0, 1]);
    expect(metricRange(m('exact_match', [0, 0]))).toEqual([0, 1]);
    expect(metricRange(m('bleu', [3, 40]))).toEqual([0, 100]);
    expect(metricRange(m('embedding_cosine', [0.2, 0.7]))).toEqual([0, 1]);
    expect(metricRange(m('my_score', [-2, 3.4]))).toEqual([-2, 5]);
    expect(metricRange({ metric: 'label_macro_f1', perExample: false, base: [], candidate: [] })).toEqual([0, 1]);
  });
});
