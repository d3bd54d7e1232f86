// Opens report.html in headless Chromium (playwright-core driving the system browser) and checks
// that every chart has real geometry, that nothing is fetched from outside the page and that no
// console errors occur; saves a full-page screenshot.
// Needs: the npm package playwright-core (devDependency) and a Chromium binary (Debian:
// apt-get install -y chromium; or set FINLLM_CHROMIUM=/path/to/chrome). Skips only when no
// Chromium binary is found.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compareResults } from '../../src/pipeline/eval/compare.js';
import { writeReport } from '../../src/pipeline/eval/report.js';
import { makeResults } from './helpers.js';

interface Geometry {
  charts: { kind: string; metric: string | null; width: number; height: number; shapes: number; nonEmpty: number; inside: boolean }[];
  lossLen: number[];
}

// The part of playwright-core's API used here.
interface PwPage {
  on(event: 'console', fn: (m: { type(): string; text(): string }) => void): void;
  on(event: 'pageerror', fn: (e: Error) => void): void;
  route(pattern: string, fn: (route: { request(): { url(): string }; continue(): Promise<void>; abort(): Promise<void> }) => Promise<void>): Promise<void>;
  goto(url: string, opts: { waitUntil: 'load' }): Promise<unknown>;
  evaluate(expression: string): Promise<unknown>;
  screenshot(opts: { path: string; fullPage: boolean }): Promise<unknown>;
}
interface PlaywrightCore {
  chromium: {
    launch(opts: { executablePath: string; headless: boolean; args: string[] }): Promise<{ newPage(opts: { viewport: { width: number; height: number } }): Promise<PwPage>; close(): Promise<void> }>;
  };
}

function findChromium(): string | undefined {
  const candidates = [process.env['FINLLM_CHROMIUM'], '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/usr/bin/google-chrome-stable'];
  return candidates.find((p): p is string => !!p && existsSync(p));
}

const chromiumPath = findChromium();
const SKIP_MSG = 'no Chromium binary found (set FINLLM_CHROMIUM or apt-get install -y chromium)';
if (!chromiumPath) console.warn(`report-browser.test.ts skipped: ${SKIP_MSG}`);

describe('report.html in headless Chromium', () => {
  it.skipIf(!chromiumPath)(chromiumPath ? 'renders charts with geometry, no console errors, no external requests' : `skipped: ${SKIP_MSG}`, async () => {
    let pw: PlaywrightCore;
    try {
      const name = 'playwright-core'; // not resolved at type-check time: it is an optional devDependency
      pw = (await import(name)) as PlaywrightCore;
    } catch {
      throw new Error('Chromium is installed but the npm package playwright-core is not: add playwright-core to devDependencies');
    }
    const { base, candidate } = makeResults();
    const cmp = compareResults(base, candidate, { resamples: 1000 });
    cmp.trainingLog = Array.from({ length: 21 }, (_, i) => ({ step: i * 10, loss: 3 * Math.exp(-i / 8) + 0.5, ...(i % 5 === 0 ? { val_loss: 3.2 * Math.exp(-i / 9) + 0.6 } : {}) }));
    const dir = mkdtempSync(join(tmpdir(), 'finllm-report-'));
    const paths = await writeReport(dir, cmp);

    const browser = await pw.chromium.launch({ executablePath: chromiumPath!, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors: string[] = [];
      const external: string[] = [];
      page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') errors.push(`${m.type()}: ${m.text()}`); });
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
          return {
            kind: svg.getAttribute('data-chart'), metric: svg.getAttribute('data-metric'), width: r.width, height: r.height,
            shapes: shapes.length,
            nonEmpty: boxes.filter((b) => b.width > 0 || b.height > 0).length,
            inside: boxes.every((b) => b.x >= -1 && b.y >= -1 && b.x + b.width <= r.width + 1 && b.y + b.height <= r.height + 1),
          };
        });
        const lossLen = Array.from(document.querySelectorAll('svg[data-chart="loss"] path.line')).map((p) => p.getTotalLength());
        return { charts, lossLen };
      })()`)) as Geometry;

      const tested = cmp.metrics.filter((m) => m.n > 0);
      const byKind = (k: string) => geometry.charts.filter((c) => c.kind === k);
      expect(byKind('metric-bars')).toHaveLength(tested.length);
      expect(byKind('scatter')).toHaveLength(tested.length);
      expect(byKind('distribution')).toHaveLength(tested.length);
      expect(byKind('loss')).toHaveLength(1);
      for (const c of geometry.charts) {
        expect(c.width, `${c.kind} ${c.metric}`).toBeGreaterThan(100);
        expect(c.height, `${c.kind} ${c.metric}`).toBeGreaterThan(100);
        expect(c.inside, `${c.kind} ${c.metric} shapes inside the chart`).toBe(true);
      }
      for (const c of byKind('metric-bars')) expect(c.nonEmpty).toBeGreaterThanOrEqual(2);
      for (const c of byKind('scatter')) {
        const m = tested.find((x) => x.metric === c.metric)!;
        expect(c.shapes).toBe(m.n);
      }
      for (const c of byKind('distribution')) expect(c.nonEmpty).toBeGreaterThan(0);
      expect(geometry.lossLen).toHaveLength(2);
      for (const len of geometry.lossLen) expect(len).toBeGreaterThan(50);

      const shot = join(dir, 'report.png');
      await page.screenshot({ path: shot, fullPage: true });
      const png = readFileSync(shot);
      expect(png.subarray(1, 4).toString()).toBe('PNG');
      expect(png.length).toBeGreaterThan(20_000);
      expect(errors).toEqual([]);
      expect(external).toEqual([]);
      console.log(`report screenshot: ${shot}`);
    } finally {
      await browser.close();
    }
  });
});
