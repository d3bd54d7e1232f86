// `finllm pipeline` end to end on the tiny model: every stage's outputs, the reports, the state
// file; a re-run skips everything; a changed eval setting re-runs only the evaluation stages; an
// interrupted training stage resumes in its folder; a changed logging or prompt-layout setting
// re-runs the stages that read it.
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pipelineAction } from '../../src/cli/pipeline.js';
import { loadConfig } from '../../src/pipeline/config.js';
import { readResults } from '../../src/pipeline/eval/results.js';
import { PIPELINE_STATE_FORMAT, type PipelineState, runPipeline, STAGES } from '../../src/pipeline/pipeline.js';
import { useEngine } from '../helpers/index.js';
import { removeTinyPipelines, type TinySetup, tinyPipeline } from './tiny-pipeline.js';

useEngine();
afterAll(removeTinyPipelines);

const readState = (runDir: string) =>
  JSON.parse(readFileSync(join(runDir, 'pipeline-state.json'), 'utf8')) as PipelineState;

describe('finllm pipeline (tiny model, two training steps)', () => {
  let t: TinySetup;
  let printed = '';
  beforeAll(async () => {
    t = tinyPipeline();
    await pipelineAction({ config: t.config, set: [], quiet: true }, (s) => (printed += s));
  });

  it('runs every stage into <output.dir>/stages and records them in pipeline-state.json', async () => {
    const st = readState(t.runDir);
    expect(st.format).toBe(PIPELINE_STATE_FORMAT);
    for (const name of STAGES) {
      const rec = st.stages[name]!;
      expect(rec.status, name).toBe('done');
      expect(rec.fingerprint).toMatch(/^[0-9a-f]{64}$/);
      expect(rec.outputs.length).toBeGreaterThan(0);
      for (const o of rec.outputs) expect(existsSync(join(t.runDir, o)), o).toBe(true);
    }
    // Fingerprints chain: train depends on the data stage, the fine-tuned eval on training.
    expect(st.stages.train!.inputs['data']).toBe(st.stages.data!.fingerprint);
    expect(st.stages.finetuned_eval!.inputs['train']).toBe(st.stages.train!.fingerprint);
    const s = join(t.runDir, 'stages');
    expect(existsSync(join(s, 'data', 'data-report.json'))).toBe(true);
    expect(existsSync(join(s, 'train', 'adapter', 'adapter_model.safetensors'))).toBe(true);
    expect(existsSync(join(s, 'export', 'adapter', 'adapter_config.json'))).toBe(true);
    expect(readFileSync(join(s, 'export', 'adapter', 'adapter_model.safetensors'))).toEqual(
      readFileSync(join(s, 'train', 'adapter', 'adapter_model.safetensors')),
    );
    expect(printed).toMatch(/run folder: .*run\n/);
    expect(printed).toMatch(/report qa: .*stages\/compare\/qa\/report\.html/);
    // It ends with one verdict line per suite, the lines `finllm compare` ends with.
    const last = printed.trimEnd().split('\n').slice(-2);
    expect(last[0]).toMatch(/^qa: (improved|no significant change|regressed|does not do the task)( — |$)/);
    expect(last[1]).toMatch(/^sentiment: (improved|no significant change|regressed|does not do the task)( — |$)/);
    const rep = JSON.parse(readFileSync(join(t.runDir, 'stages', 'compare', 'sentiment', 'report.json'), 'utf8')) as {
      verdict_line: string;
    };
    expect(last[1]).toBe(rep.verdict_line);
  });

  it('baseline and fine-tuned results cover the same examples; the fine-tuned one names the adapter', async () => {
    const s = join(t.runDir, 'stages');
    for (const suite of ['qa', 'sentiment']) {
      const base = await readResults(join(s, 'baseline_eval', `${suite}.results.json`));
      const tuned = await readResults(join(s, 'finetuned_eval', `${suite}.results.json`));
      expect(base.adapter).toBeNull();
      expect(tuned.adapter).toBe(join(s, 'train', 'adapter'));
      expect(tuned.per_example.map((e) => e.id)).toEqual(base.per_example.map((e) => e.id));
      expect(base.per_example).toHaveLength(3);
    }
    // eval.embeddings adds base-model embedding scores to generation suites (not to classification).
    const qa = await readResults(join(s, 'finetuned_eval', 'qa.results.json'));
    for (const e of qa.per_example) {
      expect(e.scores['bertscore_f1']).toBeGreaterThanOrEqual(-1);
      expect(e.scores['bertscore_f1']).toBeLessThanOrEqual(1);
      expect(e.scores['embedding_cosine']).toBeGreaterThanOrEqual(-1);
    }
    const sent = await readResults(join(s, 'finetuned_eval', 'sentiment.results.json'));
    expect(sent.metrics).not.toHaveProperty('bertscore_f1');
    expect(sent.metrics).toHaveProperty('label_correct');
    expect(sent.metrics).toHaveProperty('label_macro_f1');
  });

  it('writes the comparison report per suite (report.html, summary.md, report.json) with the training log', () => {
    const c = join(t.runDir, 'stages', 'compare');
    for (const suite of ['qa', 'sentiment']) {
      for (const f of ['report.html', 'summary.md', 'report.json'])
        expect(existsSync(join(c, suite, f)), `${suite}/${f}`).toBe(true);
      const rep = JSON.parse(readFileSync(join(c, suite, 'report.json'), 'utf8')) as Record<string, unknown>;
      expect(JSON.stringify(rep)).toContain('"nExamples":3');
      expect(readFileSync(join(c, suite, 'report.html'), 'utf8')).toMatch(/<html/i);
    }
    const qaReport = readFileSync(join(c, 'qa', 'report.json'), 'utf8');
    expect(qaReport).toMatch(/"trainingLog":\s*\[/);
    expect(JSON.stringify(JSON.parse(qaReport))).toContain('"metric":"bertscore_f1"');
    const summary = JSON.parse(readFileSync(join(c, 'summary.json'), 'utf8')) as { suites: { suite: string }[] };
    expect(summary.suites.map((x) => x.suite)).toEqual(['qa', 'sentiment']);
    expect(readFileSync(join(c, 'summary.md'), 'utf8')).toMatch(/\*\*sentiment\*\* \(classification, 3 examples/);
  });

  it('a re-run skips every completed stage and leaves its outputs untouched', async () => {
    const results = join(t.runDir, 'stages', 'baseline_eval', 'qa.results.json');
    const before = statSync(results).mtimeMs;
    const r = await runPipeline(loadConfig({ file: t.config }), { quiet: true });
    expect(r.stages.map((s) => s.outcome)).toEqual(STAGES.map(() => 'skipped (done)'));
    expect(r.reports.map((x) => x.suite)).toEqual(['qa', 'sentiment']);
    // The verdict lines come back from the reports on disk.
    expect(r.reports.map((x) => x.verdict?.split(':')[0])).toEqual(['qa', 'sentiment']);
    expect(statSync(results).mtimeMs).toBe(before);
  });

  it('a changed eval setting re-runs the evaluation stages only; --rerun-from forces a stage and the ones after it', async () => {
    const trainState = readState(t.runDir).stages.train!;
    const r = await runPipeline(loadConfig({ file: t.config, sets: ['eval.max_new_tokens=3'] }), { quiet: true });
    expect(Object.fromEntries(r.stages.map((s) => [s.name, s.outcome]))).toEqual({
      data: 'skipped (done)',
      baseline_eval: 'ran',
      train: 'skipped (done)',
      finetuned_eval: 'ran',
      compare: 'ran',
      export: 'skipped (done)',
    });
    expect(readState(t.runDir).stages.train).toEqual(trainState);
    const base = JSON.parse(readFileSync(join(t.runDir, 'stages', 'baseline_eval', 'qa.results.json'), 'utf8')) as {
      generation: { max_new_tokens: number };
    };
    expect(base.generation.max_new_tokens).toBe(3);
    const again = await runPipeline(loadConfig({ file: t.config, sets: ['eval.max_new_tokens=3'] }), {
      quiet: true,
      rerunFrom: 'export',
    });
    expect(again.stages.filter((s) => s.outcome === 'ran').map((s) => s.name)).toEqual(['export']);
  });

  it('an interrupted training stage resumes in its folder from the last checkpoint', async () => {
    // Make the state look like a crash after the last checkpoint, before the adapter was written.
    const st = readState(t.runDir);
    st.stages.train!.status = 'running';
    writeFileSync(join(t.runDir, 'pipeline-state.json'), JSON.stringify(st));
    const adapter = join(t.runDir, 'stages', 'train', 'adapter', 'adapter_model.safetensors');
    const trained = readFileSync(adapter);
    writeFileSync(adapter, 'partial');
    const lines: string[] = [];
    const r = await runPipeline(loadConfig({ file: t.config, sets: ['eval.max_new_tokens=3'] }), {
      quiet: true,
      log: (l) => lines.push(l),
    });
    expect(lines).toContain('[pipeline] train: running (resuming)');
    expect(readFileSync(adapter)).toEqual(trained);
    const summary = JSON.parse(readFileSync(join(t.runDir, 'stages', 'train', 'train-summary.json'), 'utf8')) as {
      steps: number;
    };
    expect(summary.steps).toBe(2);
    // Same training inputs, same fingerprint: the evaluations of the adapter stay valid.
    expect(r.stages.find((s) => s.name === 'finetuned_eval')!.outcome).toBe('skipped (done)');
  });

  it('a changed logging setting re-runs training (its metrics.jsonl and tensorboard/ are its outputs) and what depends on it', async () => {
    const sets = ['eval.max_new_tokens=3', 'logging.tensorboard=true'];
    const r = await runPipeline(loadConfig({ file: t.config, sets }), { quiet: true });
    expect(Object.fromEntries(r.stages.map((s) => [s.name, s.outcome]))).toEqual({
      data: 'skipped (done)',
      baseline_eval: 'skipped (done)',
      train: 'ran',
      finetuned_eval: 'ran',
      compare: 'ran',
      export: 'ran',
    });
    expect(existsSync(join(t.runDir, 'stages', 'train', 'tensorboard'))).toBe(true);
  });

  it('a changed prompt layout (data.columns) re-runs the base model evaluation too: its prompts are laid out with it', async () => {
    // The sample records name no conversations column: every row is kept, yet the layout's settings changed.
    const before = readState(t.runDir).stages.baseline_eval!.inputs;
    const sets = ['eval.max_new_tokens=3', 'logging.tensorboard=true', 'data.columns.conversations=dialogue'];
    const r = await runPipeline(loadConfig({ file: t.config, sets }), { quiet: true });
    expect(r.stages.map((s) => s.outcome)).toEqual(STAGES.map(() => 'ran'));
    // The base model's evaluation re-ran for the layout alone (it does not depend on training).
    const after = readState(t.runDir).stages.baseline_eval!.inputs;
    expect(Object.keys(after).filter((k) => after[k] !== before[k])).toEqual(['evaluate.data']);
  });
});
