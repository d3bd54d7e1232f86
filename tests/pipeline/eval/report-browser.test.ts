// Opens report.html in headless Chromium (playwright-core driving the system browser) and checks
// what a reader sees: the verdict box first with the suite's verdict line, the confusion matrix
// and label distribution of a classification suite, charts with real geometry (rate axes ending at
// 1, repeated scatter points counted), long unbroken outputs kept inside their cells; also that
// nothing is fetched from outside the page and that no console errors occur. Saves screenshots.
// Needs: the npm package playwright-core (devDependency) and a Chromium binary (Debian:
// apt-get install -y chromium; or set FINLLM_CHROMIUM=/path/to/chrome). Skips only when no
// Chromium binary is found.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compareResults } from '../../../src/pipeline/eval/compare.js';
import { scoreExamples } from '../../../src/pipeline/eval/metrics.js';
import { writeReport } from '../../../src/pipeline/eval/report.js';
import type { Results } from '../../../src/pipeline/eval/results.js';
import { verdictLine } from '../../../src/pipeline/eval/verdict.js';
import { makeResults } from './helpers.js';

interface Geometry {
  charts: {
    kind: string;
    metric: string | null;
    width: number;
    height: number;
    shapes: number;
    nonEmpty: number;
    inside: boolean;
    counted: number;
    topTick: string | null;
  }[];
  lossLen: number[];
  firstSection: string | null;
  verdict: string | null;
  verdictLine: string;
  /** Text cells whose content is wider than the cell, and whether any table runs past the page. */
  overflowing: string[];
  pageOverflow: boolean;
}

interface ClassView {
  verdict: string | null;
  line: string;
  confusion: Record<string, Record<string, Record<string, number>>>;
  labels: Record<string, string[]>;
  examples: string[];
}

/** A classification suite where the fine-tuned model answers 'neutral' to every item (base: junk). */
function neutralEverywhere(): { base: Results; candidate: Results } {
  const rows = readFileSync(new URL('../../../data/eval/fin-sentiment.jsonl', import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .slice(0, 30)
    .map((l) => JSON.parse(l) as { id: string; text: string; label: string });
  const mk = (adapter: string | null, pred: (i: number) => string): Results => {
    const inputs = rows.map((r, i) => ({ id: r.id, prediction: pred(i), reference: r.label, source: r.text }));
    const scored = scoreExamples(inputs, { groups: ['label'] });
    return {
      model: 'fin-base',
      adapter,
      task: 'fin-sentiment',
      metrics: scored.metrics,
      per_example: inputs.map((x, i) => ({ ...x, scores: scored.per_example[i]!.scores })),
    };
  };
  return {
    base: mk(null, (i) => (i % 3 === 0 ? 'positive outlook' : '1'.repeat(40))),
    candidate: mk('ft', () => 'Sentiment: neutral.'),
  };
}

// The part of playwright-core's API used here.
interface PwPage {
  on(event: 'console', fn: (m: { type(): string; text(): string }) => void): void;
  on(event: 'pageerror', fn: (e: Error) => void): void;
  route(
    pattern: string,
    fn: (route: { request(): { url(): string }; continue(): Promise<void>; abort(): Promise<void> }) => Promise<void>,
  ): Promise<void>;
  goto(url: string, opts: { waitUntil: 'load' }): Promise<unknown>;
  evaluate(expression: string): Promise<unknown>;
  screenshot(opts: { path: string; fullPage: boolean }): Promise<unknown>;
}
interface PlaywrightCore {
  chromium: {
    launch(opts: { executablePath: string; headless: boolean; args: string[] }): Promise<{
      newPage(opts: { viewport: { width: number; height: number } }): Promise<PwPage>;
      close(): Promise<void>;
    }>;
  };
}

function findChromium(): string | undefined {
  const candidates = [
    process.env['FINLLM_CHROMIUM'],
    '/usr/bin/chromium',
    '/usr/bin/chromium-browser',
    '/usr/bin/google-chrome',
    '/usr/bin/google-chrome-stable',
  ];
  return candidates.find((p): p is string => !!p && existsSync(p));
}

const chromiumPath = findChromium();
const SKIP_MSG = 'no Chromium binary found (set FINLLM_CHROMIUM or apt-get install -y chromium)';
if (!chromiumPath) console.warn(`report-browser.test.ts skipped: ${SKIP_MSG}`);

describe('report.html in headless Chromium', () => {
  it.skipIf(!chromiumPath)(
    chromiumPath
      ? 'opens with the verdict, shows the confusion matrix, renders charts with geometry, wraps long outputs; no console errors, no external requests'
      : `skipped: ${SKIP_MSG}`,
    async () => {
      let pw: PlaywrightCore;
      try {
        const name = 'playwright-core'; // not resolved at type-check time: it is an optional devDependency
        pw = (await import(name)) as PlaywrightCore;
      } catch {
        throw new Error(
          'Chromium is installed but the npm package playwright-core is not: add playwright-core to devDependencies',
        );
      }
      const { base, candidate } = makeResults();
      const cmp = compareResults(base, candidate, { resamples: 1000, primaryMetric: 'rougeL' });
      // A base output of 600 unbroken characters (as the bundled base model writes) must wrap inside its cell.
      cmp.improved[0]!.basePrediction = '1'.repeat(600);
      cmp.trainingLog = Array.from({ length: 21 }, (_, i) => ({
        step: i * 10,
        loss: 3 * Math.exp(-i / 8) + 0.5,
        ...(i % 5 === 0 ? { val_loss: 3.2 * Math.exp(-i / 9) + 0.6 } : {}),
      }));
      const dir = mkdtempSync(join(tmpdir(), 'finllm-report-'));
      const paths = await writeReport(dir, cmp);

      const browser = await pw.chromium.launch({
        executablePath: chromiumPath!,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu'],
      });
      try {
        const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
        const errors: string[] = [];
        const external: string[] = [];
        page.on('console', (m) => {
          if (m.type() === 'error' || m.type() === 'warning') errors.push(`${m.type()}: ${m.text()}`);
        });
        page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
        await page.route('**/*', (route) => {
          const url = route.request().url();
          if (url.startsWith('file:')) return route.continue();
          external.push(url);
          return route.abort();
        });
        await page.goto(pathToFileURL(paths.html).href, { waitUntil: 'load' });

        // Runs in the page (a string, as the project's TypeScript lib has no DOM types).
        const geometry = (await page.evaluate(`(() => {
        const charts = Array.from(document.querySelectorAll('svg.chart')).map((svg) => {
          const r = svg.getBoundingClientRect();
          const shapes = Array.from(svg.querySelectorAll('rect.bar, rect.hbar, circle.pt, path.line, path.ci'));
          const boxes = shapes.map((s) => s.getBBox());
          const ticks = Array.from(svg.querySelectorAll('text.tick')).filter((t) => /^-?[0-9.e+-]+$/.test(t.textContent || ''));
          const top = ticks.sort((a, b) => a.getBBox().y - b.getBBox().y)[0];
          return {
            kind: svg.getAttribute('data-chart'), metric: svg.getAttribute('data-metric'), width: r.width, height: r.height,
            shapes: shapes.length,
            nonEmpty: boxes.filter((b) => b.width > 0 || b.height > 0).length,
            inside: boxes.every((b) => b.x >= -1 && b.y >= -1 && b.x + b.width <= r.width + 1 && b.y + b.height <= r.height + 1),
            counted: Array.from(svg.querySelectorAll('circle.pt')).reduce((a, c) => a + Number(c.getAttribute('data-count')), 0),
            topTick: top ? top.textContent : null,
          };
        });
        const lossLen = Array.from(document.querySelectorAll('svg[data-chart="loss"] path.line')).map((p) => p.getTotalLength());
        const first = document.querySelector('body > section, body > table, body > div, body > p');
        const v = document.querySelector('#verdict');
        const overflowing = Array.from(document.querySelectorAll('td')).filter((td) => td.scrollWidth > td.clientWidth + 1).map((td) => td.textContent.slice(0, 40));
        const pageOverflow = Array.from(document.querySelectorAll('table')).some((t) => t.getBoundingClientRect().right > document.body.getBoundingClientRect().right + 1);
        return { charts, lossLen, firstSection: first ? first.id : null, verdict: v && v.getAttribute('data-verdict'), verdictLine: v ? v.querySelector('.line').textContent : '', overflowing, pageOverflow };
      })()`)) as Geometry;

        // The page opens with the suite's verdict, in the words compare prints.
        expect(geometry.firstSection).toBe('verdict');
        expect(geometry.verdict).toBe(cmp.suite.verdict);
        expect(geometry.verdictLine).toBe(verdictLine(cmp.candidate.task, cmp.suite));
        expect(geometry.verdictLine).toMatch(/^summarization: regressed — hallucinated_number_rate/);
        expect(geometry.overflowing).toEqual([]);
        expect(geometry.pageOverflow).toBe(false);

        const tested = cmp.metrics.filter((m) => m.n > 0);
        const byKind = (k: string) => geometry.charts.filter((c) => c.kind === k);
        expect(byKind('metric-bars')).toHaveLength(tested.length);
        expect(byKind('scatter')).toHaveLength(tested.length);
        expect(byKind('distribution')).toHaveLength(tested.length);
        // Axes follow the metric's range: a rate or share ends at 1, BLEU and chrF at 100.
        for (const c of [...byKind('metric-bars'), ...byKind('scatter')]) {
          expect(c.topTick, `${c.kind} ${c.metric}`).toBe(c.metric === 'bleu' || c.metric === 'chrf' ? '100' : '1');
        }
        expect(byKind('loss')).toHaveLength(1);
        for (const c of geometry.charts) {
          expect(c.width, `${c.kind} ${c.metric}`).toBeGreaterThan(100);
          expect(c.height, `${c.kind} ${c.metric}`).toBeGreaterThan(100);
          expect(c.inside, `${c.kind} ${c.metric} shapes inside the chart`).toBe(true);
        }
        for (const c of byKind('metric-bars')) expect(c.nonEmpty).toBeGreaterThanOrEqual(2);
        // Every example is one dot or counted in a shared one; repeated points are merged.
        for (const c of byKind('scatter')) {
          const m = tested.find((x) => x.metric === c.metric)!;
          expect(c.counted, `scatter ${c.metric}`).toBe(m.n);
          const distinct = new Set(m.base.map((b, i) => `${b.toPrecision(12)} ${m.candidate[i]!.toPrecision(12)}`))
            .size;
          expect(c.shapes, `scatter ${c.metric}`).toBe(distinct);
        }
        expect(byKind('scatter').some((c) => c.shapes < c.counted)).toBe(true);
        for (const c of byKind('distribution')) expect(c.nonEmpty).toBeGreaterThan(0);
        expect(geometry.lossLen).toHaveLength(2);
        for (const len of geometry.lossLen) expect(len).toBeGreaterThan(50);

        const shot = join(dir, 'report.png');
        await page.screenshot({ path: shot, fullPage: true });
        const png = readFileSync(shot);
        expect(png.subarray(1, 4).toString()).toBe('PNG');
        expect(png.length).toBeGreaterThan(20_000);

        // A classification suite: the verdict, the confusion matrices and the label distribution.
        const cls = neutralEverywhere();
        const ccmp = compareResults(cls.base, cls.candidate, { resamples: 1000, topK: 3 });
        const cdir = mkdtempSync(join(tmpdir(), 'finllm-report-cls-'));
        const cpaths = await writeReport(cdir, ccmp);
        await page.goto(pathToFileURL(cpaths.html).href, { waitUntil: 'load' });
        const view = (await page.evaluate(`(() => {
        const confusion = {};
        for (const t of document.querySelectorAll('table.confusion')) {
          const m = {};
          for (const td of t.querySelectorAll('td[data-gold]')) {
            const g = td.getAttribute('data-gold');
            (m[g] = m[g] || {})[td.getAttribute('data-pred')] = Number(td.textContent);
          }
          confusion[t.getAttribute('data-side')] = m;
        }
        const labels = {};
        for (const tr of document.querySelectorAll('table.labels tbody tr')) labels[tr.getAttribute('data-label')] = Array.from(tr.querySelectorAll('td')).slice(1).map((td) => td.textContent.split(' ')[0]);
        const v = document.querySelector('#verdict');
        return { verdict: v.getAttribute('data-verdict'), line: v.querySelector('.line').textContent, confusion, labels,
          examples: Array.from(document.querySelectorAll('table.examples')).map((t) => t.getAttribute('data-kind') + ':' + t.querySelectorAll('tbody tr').length) };
      })()`)) as ClassView;
        expect(view.verdict).toBe('does not do the task');
        expect(view.line).toBe(verdictLine('fin-sentiment', ccmp.suite));
        expect(view.line).toContain(`one label for every item: 'neutral' 30/30`);
        const cc = ccmp.classification!;
        const L = ['negative', 'neutral', 'positive'];
        for (const [side, mat] of [
          ['base', cc.baseConfusion],
          ['fine-tuned', cc.candidateConfusion],
        ] as const) {
          L.forEach((g, i) => {
            L.forEach((p, j) => {
              expect(view.confusion[side]![g]![p], `${side} ${g}->${p}`).toBe(mat[i]![j]);
            });
          });
        }
        // Every fine-tuned answer is in the neutral column.
        L.forEach((g, i) => {
          expect(view.confusion['fine-tuned']![g]!['neutral']).toBe(cc.goldCounts[i]);
        });
        expect(view.labels['neutral']).toEqual([String(cc.goldCounts[1]), String(cc.baseCounts[1]), '30']);
        expect(view.labels['positive']![2]).toBe('0');
        expect(view.examples).toEqual([
          `right:${Math.min(3, cc.totals.right)}`,
          `wrong:3`,
          `changed:3`,
          ...(ccmp.improved.length ? ['improved:' + Math.min(5, ccmp.improved.length)] : []),
          ...(ccmp.regressed.length ? ['regressed:' + Math.min(5, ccmp.regressed.length)] : []),
        ]);
        await page.screenshot({ path: join(cdir, 'report.png'), fullPage: true });
        console.log(`classification report screenshot: ${join(cdir, 'report.png')}`);

        expect(errors).toEqual([]);
        expect(external).toEqual([]);
        console.log(`report screenshot: ${shot}`);
      } finally {
        await browser.close();
      }
    },
  );
});
