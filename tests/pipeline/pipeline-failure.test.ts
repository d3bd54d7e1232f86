// A failing stage stops `finllm pipeline` with an error naming the stage, keeps what the earlier
// stages wrote, and a re-run after the fix continues from the failed stage.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pipelineAction } from '../../src/cli/pipeline.js';
import { InputError } from '../../src/errors.js';
import { loadConfig } from '../../src/pipeline/config.js';
import { type PipelineState, runPipeline } from '../../src/pipeline/pipeline.js';
import { useEngine } from '../helpers/index.js';
import { removeTinyPipelines, tinyPipeline } from './tiny-pipeline.js';

useEngine();
afterAll(removeTinyPipelines);

const readState = (runDir: string) =>
  JSON.parse(readFileSync(join(runDir, 'pipeline-state.json'), 'utf8')) as PipelineState;

describe('finllm pipeline: a failing stage', () => {
  it('a broken eval file fails baseline_eval with its file and row, keeps the data stage, and the fixed re-run continues', async () => {
    const t = tinyPipeline();
    const good = readFileSync(t.qaFile, 'utf8');
    writeFileSync(t.qaFile, good.split('\n')[0] + '\n{"id": "qa-x", "question": "q?", "context": "c"\n');
    let err: unknown;
    try {
      await pipelineAction({ config: t.config, set: [], quiet: true }, () => undefined);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^pipeline stage 'baseline_eval' failed: .*qa\.jsonl, row 2: .*invalid JSON/);
    expect(msg).toContain(`the completed stages (data) are kept in ${t.runDir}`);
    expect(msg).toMatch(/re-run to continue from 'baseline_eval'/);

    let st = readState(t.runDir);
    expect(st.stages.data!.status).toBe('done');
    expect(st.stages.baseline_eval!.status).toBe('failed');
    expect(st.stages.baseline_eval!.error).toMatch(/row 2/);
    expect(st.stages.train).toBeUndefined();
    expect(existsSync(join(t.runDir, 'stages', 'data', 'data-report.json'))).toBe(true);
    expect(existsSync(join(t.runDir, 'stages', 'train'))).toBe(false);

    // A record that parses but is not usable: still this stage, with the field named.
    writeFileSync(t.qaFile, good.split('\n')[0] + '\n{"id": "qa-x", "question": "q?", "context": "c", "answer": 3}\n');
    await expect(runPipeline(loadConfig({ file: t.config }), { quiet: true })).rejects.toThrow(
      /stage 'baseline_eval' failed: .*row 2, key 'answer': expected a non-empty string/,
    );

    writeFileSync(t.qaFile, good);
    const lines: string[] = [];
    const r = await runPipeline(loadConfig({ file: t.config }), { quiet: true, log: (l) => lines.push(l) });
    expect(r.stages.map((s) => [s.name, s.outcome])).toEqual([
      ['data', 'skipped (done)'],
      ['baseline_eval', 'ran'],
      ['train', 'ran'],
      ['finetuned_eval', 'ran'],
      ['compare', 'ran'],
      ['export', 'ran'],
    ]);
    st = readState(t.runDir);
    expect(Object.values(st.stages).every((s) => s.status === 'done')).toBe(true);
    expect(st.stages.baseline_eval!.error).toBeUndefined();
    expect(existsSync(join(t.runDir, 'stages', 'compare', 'qa', 'report.html'))).toBe(true);
  });

  it('a missing model folder fails the first stage, as bad input naming the folder', async () => {
    const t = tinyPipeline();
    const cfg = loadConfig({ file: t.config, sets: ['model.path=/nonexistent/model'] });
    const err = await runPipeline(cfg, { quiet: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/^pipeline stage 'data' failed: .*\/nonexistent\/model/);
    expect(readState(t.runDir).stages.data!.status).toBe('failed');
  });
});
