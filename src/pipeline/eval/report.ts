// Comparison report: report.html (self-contained: inline CSS and SVG, no scripts, fonts or other
// external resources), summary.md and report.json (every number), written atomically into an
// output directory.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../io/atomic.js';
import type {
  ClassificationComparison,
  Comparison,
  ExampleDelta,
  LabelledExample,
  MetricComparison,
  OutputSpread,
} from './compare.js';
import { metricInfo } from './metrics.js';
import type { TrainingLogPoint } from './results.js';
import { NEAR_FLOOR, PRIMARY_BY_KIND, verdictLine } from './verdict.js';

export interface ReportPaths {
  html: string;
  markdown: string;
  json: string;
}

/** report.json's format; a new one re-runs the pipeline's compare stage. */
export const REPORT_FORMAT = 'finllm.report.v2';

const BASE_COLOR = '#8a8f98';
const CAND_COLOR = '#1f6feb';

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A number for people: 4 significant digits, 'n/a' for NaN/null. */
export function fmt(x: number | null | undefined, digits = 4): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return 'n/a';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e-3 && a < 1e6) return Number(x.toPrecision(digits)).toString();
  return x.toExponential(digits - 1);
}

/** P(better) for people: 3 decimals, never rounded up to a certainty ('> 0.999', '< 0.001'). */
export function fmtPBetter(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  if (x > 0.999) return '> 0.999';
  if (x < 0.001) return '< 0.001';
  return x.toFixed(3);
}

function fmtP(p: number): string {
  if (!Number.isFinite(p)) return 'n/a';
  return p < 1e-4 ? p.toExponential(1) : p.toFixed(4);
}

function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const e = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= x) return m * e;
  return 10 * e;
}

/** The axis range of a metric: its scale (0-1 or 0-100) when known, else from the data. */
export function metricRange(
  m: Pick<MetricComparison, 'metric' | 'perExample' | 'base' | 'candidate'>,
): [number, number] {
  if (!m.perExample) return [0, 1];
  const info = metricInfo(m.metric);
  if (info) return [0, info.scale === '0-100' ? 100 : 1];
  const all = [...m.base, ...m.candidate];
  return [Math.min(0, ...all), niceMax(Math.max(...all, 0) || 1)];
}

function sideLabel(s: Comparison['base']): string {
  return s.adapter ? `${s.model} + ${s.adapter}` : s.model;
}

// ---------------------------------------------------------------------------------------------
// SVG charts. Every chart is an <svg class="chart" data-chart="KIND"> with a <title>.

function svgOpen(kind: string, w: number, h: number, title: string, extra = ''): string {
  return `<svg class="chart" data-chart="${kind}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" ${extra}><title>${esc(title)}</title>`;
}

/** The opening of a chart of one metric: tagged with the metric's name, which heads it at `headY`. */
function metricChartOpen(kind: string, m: MetricComparison, w: number, h: number, title: string, headY = 12): string {
  return (
    svgOpen(kind, w, h, title, `data-metric="${esc(m.metric)}"`) +
    `<text x="${w / 2}" y="${headY}" text-anchor="middle" class="ct">${esc(m.metric)}</text>`
  );
}

function metricBars(m: MetricComparison): string {
  const w = 220,
    h = 200,
    left = 40,
    bottom = 30,
    top = 26,
    right = 10;
  const yMax = metricRange(m)[1];
  const y = (v: number) => top + (h - top - bottom) * (1 - Math.max(0, v) / yMax);
  const plotW = w - left - right;
  const bw = plotW / 4;
  let s = metricChartOpen('metric-bars', m, w, h, `${m.metric}: base vs fine-tuned mean with 95% bootstrap CI`, 14);
  s += `<line x1="${left}" y1="${y(0)}" x2="${w - right}" y2="${y(0)}" class="axis"/>`;
  s += `<line x1="${left}" y1="${top}" x2="${left}" y2="${y(0)}" class="axis"/>`;
  for (const t of [0, 0.5, 1]) {
    s += `<text x="${left - 4}" y="${y(t * yMax) + 4}" text-anchor="end" class="tick">${fmt(t * yMax, 3)}</text>`;
  }
  const series: [string, number, MetricComparison['baseCI'], string][] = [
    ['base', m.baseMean, m.baseCI, BASE_COLOR],
    ['fine-tuned', m.candidateMean, m.candidateCI, CAND_COLOR],
  ];
  series.forEach(([label, v, ci, color], i) => {
    const x = left + bw * (0.5 + 2 * i);
    const val = Number.isFinite(v) ? v : 0;
    const yTop = y(val);
    s += `<rect class="bar" x="${x}" y="${yTop}" width="${bw}" height="${Math.max(y(0) - yTop, 0.5)}" fill="${color}"><title>${label}: ${fmt(v)} (95% CI ${fmt(ci.low)} to ${fmt(ci.high)})</title></rect>`;
    if (Number.isFinite(ci.low) && Number.isFinite(ci.high)) {
      const cx = x + bw / 2;
      s += `<path class="ci" d="M${cx} ${y(ci.low)}V${y(ci.high)}M${cx - 6} ${y(ci.low)}H${cx + 6}M${cx - 6} ${y(ci.high)}H${cx + 6}"/>`;
    }
    s += `<text x="${x + bw / 2}" y="${h - 10}" text-anchor="middle" class="tick">${label}</text>`;
  });
  return s + '</svg>';
}

function scatter(m: MetricComparison): string {
  const w = 240,
    h = 240,
    pad = 36,
    top = 30;
  const [lo, hi] = metricRange(m);
  const sx = (v: number) => pad + ((v - lo) / (hi - lo)) * (w - pad - 16);
  const sy = (v: number) => h - pad - ((v - lo) / (hi - lo)) * (h - pad - top);
  let s = metricChartOpen(
    'scatter',
    m,
    w,
    h,
    `${m.metric}: per-example base (x) vs fine-tuned (y); a larger dot with a number stands for that many examples`,
  );
  s += `<line x1="${sx(lo)}" y1="${sy(lo)}" x2="${sx(hi)}" y2="${sy(hi)}" class="diag"/>`;
  s += `<line x1="${pad}" y1="${h - pad}" x2="${w - 10}" y2="${h - pad}" class="axis"/><line x1="${pad}" y1="${top - 8}" x2="${pad}" y2="${h - pad}" class="axis"/>`;
  s += `<text x="${w / 2}" y="${h - 8}" text-anchor="middle" class="tick">base</text>`;
  s += `<text x="12" y="${h / 2}" text-anchor="middle" class="tick" transform="rotate(-90 12 ${h / 2})">fine-tuned</text>`;
  s += `<text x="${pad}" y="${h - pad + 14}" text-anchor="middle" class="tick">${fmt(lo, 3)}</text><text x="${sx(hi)}" y="${h - pad + 14}" text-anchor="middle" class="tick">${fmt(hi, 3)}</text>`;
  s += `<text x="${pad - 4}" y="${sy(hi) + 4}" text-anchor="end" class="tick">${fmt(hi, 3)}</text>`;
  // Examples with the same (base, fine-tuned) scores share one dot, sized by and labelled with their count.
  const groups = new Map<string, { b: number; c: number; ids: string[] }>();
  m.base.forEach((b, i) => {
    const c = m.candidate[i]!;
    const key = `${b.toPrecision(12)} ${c.toPrecision(12)}`;
    const g = groups.get(key);
    if (g) g.ids.push(m.ids[i]!);
    else groups.set(key, { b, c, ids: [m.ids[i]!] });
  });
  for (const { b, c, ids } of groups.values()) {
    const better = m.higherIsBetter ? c > b : c < b;
    const worse = m.higherIsBetter ? c < b : c > b;
    const cls = better ? 'pt up' : worse ? 'pt down' : 'pt same';
    const r = Math.min(12, 3.5 * Math.sqrt(ids.length));
    const cx = Math.min(Math.max(sx(b), pad + r), w - r);
    const cy = Math.min(Math.max(sy(c), top - 12 + r), h - pad - r);
    const who = ids.length <= 5 ? ids.join(', ') : `${ids.slice(0, 5).join(', ')} and ${ids.length - 5} more`;
    s += `<circle class="${cls}" data-count="${ids.length}" cx="${cx.toFixed(2)}" cy="${cy.toFixed(2)}" r="${r.toFixed(2)}"><title>${ids.length} example${ids.length === 1 ? '' : 's'} (${esc(who)}): base ${fmt(b)}, fine-tuned ${fmt(c)}</title></circle>`;
    if (ids.length > 1)
      s += `<text class="count" x="${cx.toFixed(2)}" y="${(cy + 3.5).toFixed(2)}" text-anchor="middle">${ids.length}</text>`;
  }
  return s + '</svg>';
}

function histogram(m: MetricComparison): string {
  const w = 260,
    h = 180,
    left = 30,
    bottom = 28,
    top = 20,
    right = 8,
    bins = 10;
  const [lo, hi] = metricRange(m);
  const count = (xs: number[]) => {
    const c = new Array<number>(bins).fill(0);
    for (const x of xs) c[Math.min(bins - 1, Math.max(0, Math.floor(((x - lo) / (hi - lo)) * bins)))]!++;
    return c;
  };
  const cb = count(m.base);
  const cc = count(m.candidate);
  const maxC = Math.max(1, ...cb, ...cc);
  const bw = (w - left - right) / bins;
  const y = (c: number) => h - bottom - (c / maxC) * (h - top - bottom);
  let s = metricChartOpen('distribution', m, w, h, `${m.metric}: distribution of per-example scores`);
  s += `<line x1="${left}" y1="${h - bottom}" x2="${w - right}" y2="${h - bottom}" class="axis"/>`;
  for (let i = 0; i < bins; i++) {
    const x0 = left + i * bw;
    const range = `${fmt(lo + ((hi - lo) * i) / bins, 3)}-${fmt(lo + ((hi - lo) * (i + 1)) / bins, 3)}`;
    s += `<rect class="hbar" x="${x0 + 1}" y="${y(cb[i]!)}" width="${bw / 2 - 1}" height="${h - bottom - y(cb[i]!)}" fill="${BASE_COLOR}"><title>base ${range}: ${cb[i]}</title></rect>`;
    s += `<rect class="hbar" x="${x0 + bw / 2}" y="${y(cc[i]!)}" width="${bw / 2 - 1}" height="${h - bottom - y(cc[i]!)}" fill="${CAND_COLOR}"><title>fine-tuned ${range}: ${cc[i]}</title></rect>`;
  }
  s += `<text x="${left}" y="${h - 10}" text-anchor="middle" class="tick">${fmt(lo, 3)}</text><text x="${w - right}" y="${h - 10}" text-anchor="end" class="tick">${fmt(hi, 3)}</text>`;
  s += `<text x="${left - 4}" y="${top + 4}" text-anchor="end" class="tick">${maxC}</text>`;
  return s + '</svg>';
}

function lossChart(log: TrainingLogPoint[]): string {
  const w = 640,
    h = 260,
    left = 50,
    bottom = 36,
    top = 24,
    right = 110;
  const pts = log.filter((p) => p.loss !== undefined || p.val_loss !== undefined);
  const steps = pts.map((p) => p.step);
  const losses = pts
    .flatMap((p) => [p.loss, p.val_loss])
    .filter((v): v is number => v !== undefined && Number.isFinite(v));
  const s0 = Math.min(...steps);
  const s1 = Math.max(...steps);
  const l0 = Math.min(...losses);
  const l1 = Math.max(...losses);
  const sx = (v: number) => left + (s1 > s0 ? (v - s0) / (s1 - s0) : 0.5) * (w - left - right);
  const sy = (v: number) => top + (l1 > l0 ? 1 - (v - l0) / (l1 - l0) : 0.5) * (h - top - bottom);
  let s = svgOpen('loss', w, h, 'Training and validation loss by step');
  s += `<text x="${(w - right + left) / 2}" y="14" text-anchor="middle" class="ct">loss by step</text>`;
  s += `<line x1="${left}" y1="${h - bottom}" x2="${w - right}" y2="${h - bottom}" class="axis"/><line x1="${left}" y1="${top}" x2="${left}" y2="${h - bottom}" class="axis"/>`;
  s += `<text x="${left}" y="${h - bottom + 16}" text-anchor="middle" class="tick">${s0}</text><text x="${w - right}" y="${h - bottom + 16}" text-anchor="middle" class="tick">${s1}</text>`;
  s += `<text x="${(w - right + left) / 2}" y="${h - 6}" text-anchor="middle" class="tick">step</text>`;
  s += `<text x="${left - 4}" y="${sy(l1) + 4}" text-anchor="end" class="tick">${fmt(l1, 3)}</text><text x="${left - 4}" y="${sy(l0) + 4}" text-anchor="end" class="tick">${fmt(l0, 3)}</text>`;
  const series: [keyof TrainingLogPoint, string, string][] = [
    ['loss', 'train loss', CAND_COLOR],
    ['val_loss', 'validation loss', '#d1242f'],
  ];
  series.forEach(([key, label, color], k) => {
    const p = pts.filter((q) => q[key] !== undefined);
    if (!p.length) return;
    const d = p.map((q, i) => `${i ? 'L' : 'M'}${sx(q.step).toFixed(2)} ${sy(q[key]!).toFixed(2)}`).join('');
    s += `<path class="line" data-series="${key}" d="${d}" stroke="${color}" fill="none" stroke-width="2"/>`;
    if (p.length === 1) s += `<circle cx="${sx(p[0]!.step)}" cy="${sy(p[0]![key]!)}" r="3" fill="${color}"/>`;
    s += `<rect x="${w - right + 10}" y="${top + 18 * k}" width="12" height="3" fill="${color}"/><text x="${w - right + 26}" y="${top + 18 * k + 5}" class="tick">${label}</text>`;
  });
  return s + '</svg>';
}

// ---------------------------------------------------------------------------------------------
// Text shared by the HTML and the Markdown.

/**
 * Smoothed end-of-training loss: the mean of the last 10% of the logged train losses, and of at
 * least the last 3 (or all, when fewer are logged): one batch's loss alone is noisy.
 */
export function finalTrainLoss(
  log: readonly TrainingLogPoint[],
): { loss: number; points: number; fromStep: number; toStep: number } | null {
  const train = log.filter(
    (p): p is TrainingLogPoint & { loss: number } => p.loss !== undefined && Number.isFinite(p.loss),
  );
  if (!train.length) return null;
  const k = Math.max(Math.min(3, train.length), Math.ceil(train.length / 10));
  const tail = train.slice(-k);
  return {
    loss: tail.reduce((a, p) => a + p.loss, 0) / k,
    points: k,
    fromStep: tail[0]!.step,
    toStep: tail[k - 1]!.step,
  };
}

function trainingFacts(log: readonly TrainingLogPoint[]): string[] {
  const out: string[] = [];
  const fin = finalTrainLoss(log);
  if (fin) {
    out.push(
      fin.points === 1
        ? `final train loss (one logged step, ${fin.toStep}): ${fmt(fin.loss)}`
        : `final train loss, mean of the last ${fin.points} logged steps (${fin.fromStep}–${fin.toStep}; one batch alone is noisy): ${fmt(fin.loss)}`,
    );
  }
  const val = log.filter((p) => p.val_loss !== undefined);
  if (val.length) {
    const best = val.reduce((a, b) => (b.val_loss! < a.val_loss! ? b : a));
    const last = val[val.length - 1]!;
    out.push(
      `validation loss: ${fmt(val[0]!.val_loss)} at step ${val[0]!.step} → ${fmt(last.val_loss)} at step ${last.step}; best validation loss: ${fmt(best.val_loss)} at step ${best.step}`,
    );
  }
  return out;
}

function ruleText(c: Comparison): string[] {
  const kinds = Object.entries(PRIMARY_BY_KIND)
    .map(([k, ms]) => `${k}: ${ms.join(', ')}`)
    .join('; ');
  return [
    `Primary metrics decide the verdict (${kinds}); every other metric is secondary and only shown. This suite: ${c.suite.kind}, primary ${c.suite.primary.join(', ') || 'none'}.`,
    `"Does not do the task": a primary metric of the fine-tuned model at or near its floor, i.e. within ${NEAR_FLOOR} of the metric's 0–1 range (${NEAR_FLOOR * 100} points on 0–100 scales) of the floor. Floors: 0 for exact match and numeric fidelity, 1 for the hallucinated-number rate, and for classification what answering the most frequent gold label for every item scores.`,
    `Otherwise: "regressed" if any primary metric is significantly worse (also when another one improved), "improved" if any is significantly better, else "no significant change". Significant: Holm-corrected p < ${c.alpha}, within the primary metrics (secondary metrics form their own Holm family).`,
    `P(better) = 1 − p/2 when the test favours the fine-tuned model, p/2 when it favours the base (p: the two-sided p of the same test, before Holm): the test's one-sided confidence that the fine-tuned model is better, which for large samples is the posterior probability of a shift in its favour under a flat prior. So p = 2·min(P, 1 − P), and P(better) > ${1 - c.alpha / 2} exactly when p < ${c.alpha} in the fine-tuned model's favour.`,
  ];
}

function spreadText(label: string, s: OutputSpread): string {
  if (!s.n) return `${label}: no outputs`;
  if (s.topCount < 2) return `${label}: ${s.n} outputs, all different`;
  return `${label}: ${s.distinct} distinct output${s.distinct === 1 ? '' : 's'} of ${s.n}; most frequent (${s.topCount}×): ${JSON.stringify(s.top.length > 120 ? `${s.top.slice(0, 119)}…` : s.top)}`;
}

// ---------------------------------------------------------------------------------------------
// HTML

function metricName(m: MetricComparison): string {
  return `${esc(m.metric)} <span class="role ${m.role}">${m.role}</span>${m.higherIsBetter ? '' : ' <small>(lower is better)</small>'}`;
}

function metricsTable(c: Comparison): string {
  const rows = c.metrics
    .map(
      (m) =>
        `<tr class="v-${m.verdict.replace(/ /g, '-')} r-${m.role}" data-metric="${esc(m.metric)}" data-role="${m.role}"><td>${metricName(m)}</td><td>${m.n}</td><td>${fmt(m.baseMean)}</td><td>${fmt(m.candidateMean)}</td><td>${fmt(m.meanDiff)} <small>[${fmt(m.diffCI.low)}, ${fmt(m.diffCI.high)}]</small></td><td>${fmtP(m.pValue)} <small>${m.test === 'paired permutation' ? 'permutation' : `Wilcoxon ${m.wilcoxon.method}`}</small></td><td>${fmtP(m.pHolm)}</td><td>${fmtP(m.tTest.pValue)}</td><td>${fmt(m.cohensDz, 3)}</td><td>${fmtPBetter(m.pBetter)}</td><td>${m.verdict}</td></tr>`,
    )
    .join('\n');
  return `<table class="metrics"><thead><tr><th>metric</th><th>n</th><th>base</th><th>fine-tuned</th><th>Δ [95% CI]</th><th>test p</th><th>Holm p</th><th>t-test p</th><th>d<sub>z</sub></th><th>P(better)</th><th>verdict</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function corpusTable(c: Comparison): string {
  const names = [...new Set([...Object.keys(c.base.metrics), ...Object.keys(c.candidate.metrics)])];
  if (!names.length) return '<p>No corpus-level figures in the results files.</p>';
  const rows = names
    .map((n) => `<tr><td>${esc(n)}</td><td>${fmt(c.base.metrics[n])}</td><td>${fmt(c.candidate.metrics[n])}</td></tr>`)
    .join('');
  return `<table class="corpus"><thead><tr><th>metric</th><th>base</th><th>fine-tuned</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function examplesTable(kind: 'improved' | 'regressed', list: ExampleDelta[], metric: string): string {
  if (!list.length) return `<p class="none">No ${kind} examples on ${esc(metric)}.</p>`;
  const rows = list
    .map(
      (e) =>
        `<tr><td class="id">${esc(e.id)}<br><small>${esc(metric)}: ${fmt(e.base)} → ${fmt(e.candidate)}</small></td>${e.source !== undefined ? `<td class="txt">${esc(e.source)}</td>` : '<td class="txt"><em>(no source)</em></td>'}<td class="txt">${esc(e.reference)}</td><td class="txt">${esc(e.basePrediction)}</td><td class="txt">${esc(e.candidatePrediction)}</td></tr>`,
    )
    .join('\n');
  return `<table class="examples" data-kind="${kind}"><thead><tr><th>id</th><th>source</th><th>reference</th><th>base</th><th>fine-tuned</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function confusionTable(cc: ClassificationComparison, side: 'base' | 'fine-tuned'): string {
  const mat = side === 'base' ? cc.baseConfusion : cc.candidateConfusion;
  const head = cc.labels.map((l) => `<th>${esc(l)}</th>`).join('');
  const rows = cc.labels
    .map(
      (g, i) =>
        `<tr><th>${esc(g)}</th>${mat[i]!.map((v, j) => `<td class="${i === j ? 'diag' : v > 0 ? 'off' : ''}" data-gold="${esc(g)}" data-pred="${esc(cc.labels[j]!)}">${v}</td>`).join('')}<td>${cc.goldCounts[i]}</td></tr>`,
    )
    .join('');
  const colSums = cc.labels.map((_, j) => mat.reduce((a, r) => a + r[j]!, 0));
  return `<table class="confusion" data-side="${side}"><caption>${side}: rows gold, columns predicted</caption><thead><tr><th>gold \\ predicted</th>${head}<th>total</th></tr></thead><tbody>${rows}<tr><th>total</th>${colSums.map((v) => `<td>${v}</td>`).join('')}<td>${cc.n}</td></tr></tbody></table>`;
}

function labelDistribution(cc: ClassificationComparison): string {
  const pct = (v: number) => (cc.n ? ` <small>(${Math.round((100 * v) / cc.n)}%)</small>` : '');
  const rows = cc.labels
    .map(
      (l, i) =>
        `<tr data-label="${esc(l)}"><td>${esc(l)}</td><td>${cc.goldCounts[i]}${pct(cc.goldCounts[i]!)}</td><td>${cc.baseCounts[i]}${pct(cc.baseCounts[i]!)}</td><td>${cc.candidateCounts[i]}${pct(cc.candidateCounts[i]!)}</td></tr>`,
    )
    .join('');
  return `<table class="labels"><thead><tr><th>label</th><th>gold (references)</th><th>base predictions</th><th>fine-tuned predictions</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function labelledTable(kind: 'right' | 'wrong' | 'changed', list: LabelledExample[], total: number): string {
  const what = {
    right: 'fine-tuned label right',
    wrong: 'fine-tuned label wrong',
    changed: 'fine-tuned label differs from the base',
  }[kind];
  if (!list.length) return `<h3>${what} (0)</h3><p class="none">No example where the ${what}.</p>`;
  const rows = list
    .map(
      (e) =>
        `<tr><td class="id">${esc(e.id)}</td><td class="txt">${e.source !== undefined ? esc(e.source) : '<em>(no text)</em>'}</td><td>${esc(e.gold)}</td><td class="txt"><b>${esc(e.baseLabel)}</b><br>${esc(e.basePrediction)}</td><td class="txt"><b>${esc(e.candidateLabel)}</b><br>${esc(e.candidatePrediction)}</td></tr>`,
    )
    .join('\n');
  return `<h3>${what} (${list.length} of ${total} shown)</h3><table class="examples" data-kind="${kind}"><thead><tr><th>id</th><th>text</th><th>gold</th><th>base</th><th>fine-tuned</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function classificationSection(cc: ClassificationComparison): string {
  return `<h2>Classification</h2>
<p>Labels read from the generated text (first "positive", else "negative", else neutral), ${cc.n} items with a gold label.</p>
<div class="side">${confusionTable(cc, 'base')}${confusionTable(cc, 'fine-tuned')}</div>
<h3>Label distribution</h3>
${labelDistribution(cc)}
${labelledTable('right', cc.right, cc.totals.right)}
${labelledTable('wrong', cc.wrong, cc.totals.wrong)}
${labelledTable('changed', cc.changed, cc.totals.changed)}`;
}

const CSS = `body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#1f2328;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}h3{font-size:15px;margin-top:20px}
table{border-collapse:collapse;margin:8px 0;width:100%;table-layout:auto}th,td{border:1px solid #d0d7de;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.txt{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;font-size:12px;max-width:260px}small{color:#59636e}
table.examples{table-layout:fixed}table.examples td.id{width:9em;overflow-wrap:anywhere}
tr.v-improved td:last-child{color:#1a7f37;font-weight:600}tr.v-regressed td:last-child{color:#d1242f;font-weight:600}
tr.r-secondary{color:#59636e}.role{font-size:11px;border-radius:8px;padding:0 6px;margin-left:4px}.role.primary{background:#ddf4ff;color:#0969da}.role.secondary{background:#eaeef2;color:#59636e}
#verdict{border:2px solid #d0d7de;border-radius:6px;padding:10px 14px;margin:12px 0}#verdict .word{font-size:20px;font-weight:700}
#verdict.v-improved{border-color:#1a7f37}#verdict.v-improved .word{color:#1a7f37}#verdict.v-regressed{border-color:#d1242f}#verdict.v-regressed .word{color:#d1242f}
#verdict.v-does-not-do-the-task{border-color:#bf8700;background:#fff8c5}#verdict.v-does-not-do-the-task .word{color:#9a6700}
.rule{font-size:12px;color:#59636e}.side{display:flex;gap:16px;flex-wrap:wrap}.side table{width:auto}
table.confusion td{text-align:right;min-width:3em}table.confusion td.diag{background:#dafbe1}table.confusion td.off{background:#ffebe9}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #eaeef2}
.ct{font-size:12px;font-weight:600;fill:#1f2328}.tick{font-size:10px;fill:#59636e}.axis{stroke:#8c959f;stroke-width:1}
.ci{stroke:#1f2328;stroke-width:1.5;fill:none}.diag{stroke:#8c959f;stroke-dasharray:4 3}
.pt.up{fill:#1a7f37}.pt.down{fill:#d1242f}.pt.same{fill:#8c959f}.pt{fill-opacity:.75}.count{font-size:9px;font-weight:700;fill:#fff;pointer-events:none}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}`;

function verdictBox(c: Comparison): string {
  const v = c.suite;
  return `<section id="verdict" class="v-${v.verdict.replace(/ /g, '-')}" data-verdict="${esc(v.verdict)}">
<p><span class="word">${esc(v.verdict)}</span> <small>(${esc(v.kind)}; primary: ${esc(v.primary.join(', ') || 'none')})</small></p>
<p class="line">${esc(verdictLine(c.candidate.task, v))}</p>
<ul class="reasons">${v.reasons.map((r) => `<li>${esc(r)}</li>`).join('')}</ul>
<details class="rule"><summary>How the verdict is decided</summary>${ruleText(c)
    .map((t) => `<p>${esc(t)}</p>`)
    .join('')}</details>
</section>`;
}

export function renderHtml(c: Comparison): string {
  const tested = c.metrics.filter((m) => m.n > 0);
  const perEx = tested.filter((m) => m.perExample);
  const primary = c.primaryMetric ?? '';
  const log = c.trainingLog ?? [];
  const hasLoss = log.some((p) => p.loss !== undefined || p.val_loss !== undefined);
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>finllm comparison: ${esc(sideLabel(c.candidate))} vs ${esc(sideLabel(c.base))}</title>
<style>${CSS}</style></head><body>
<h1>Fine-tuned vs base: ${esc(c.candidate.task)}</h1>
${verdictBox(c)}
<p><b>base:</b> ${esc(sideLabel(c.base))} &nbsp; <b>fine-tuned:</b> ${esc(sideLabel(c.candidate))} &nbsp; <b>task:</b> ${esc(c.candidate.task)} &nbsp; <b>examples:</b> ${c.nExamples}</p>
<p class="spread">${esc(spreadText('base', c.outputs.base))}<br>${esc(spreadText('fine-tuned', c.outputs.candidate))}</p>
<p class="legend"><span style="background:${BASE_COLOR}"></span>base<span style="background:${CAND_COLOR}"></span>fine-tuned</p>
<h2>Metrics</h2>
<p>Per-example scores, paired by example id; primary metrics first. Δ = fine-tuned − base with a ${c.resamples}-resample paired percentile bootstrap CI. Test: Wilcoxon signed-rank (scipy defaults); for macro-F1, a paired permutation test (${c.resamples} resamples). Holm correction at α = ${c.alpha} within the primary metrics and, separately, the secondary ones; paired t-test and Cohen's d<sub>z</sub> for reference. P(better) = 1 − p/2 toward the side the test favours (p/2 against): the test's one-sided confidence that the fine-tuned model is better, so it never contradicts the test's p.</p>
${metricsTable(c)}
${c.classification ? classificationSection(c.classification) : ''}
<h2>Corpus-level figures</h2>
${corpusTable(c)}
<h2>Means with 95% CI</h2>
<div class="charts" id="metric-bars">${tested.map(metricBars).join('\n')}</div>
<h2>Per-example scores</h2>
<div class="charts" id="scatter">${perEx.map(scatter).join('\n')}</div>
<h2>Score distributions</h2>
<div class="charts" id="distributions">${perEx.map(histogram).join('\n')}</div>
<h2>Training</h2>
${
  hasLoss
    ? `<ul class="training">${trainingFacts(log)
        .map((t) => `<li>${esc(t)}</li>`)
        .join('')}</ul><div class="charts" id="loss">${lossChart(log)}</div>`
    : '<p>No training log given.</p>'
}
<h2>Most improved examples (${esc(primary || 'n/a')})</h2>
${examplesTable('improved', c.improved, primary)}
<h2>Most regressed examples (${esc(primary || 'n/a')})</h2>
${examplesTable('regressed', c.regressed, primary)}
</body></html>
`;
}

// ---------------------------------------------------------------------------------------------
// Markdown

const mdCell = (s: string) => s.replace(/\|/g, '\\|').replace(/\s+/g, ' ').trim();

export function renderMarkdown(c: Comparison): string {
  const lines: string[] = [];
  lines.push(`# Fine-tuned vs base: ${c.candidate.task}`, '');
  lines.push(`**Verdict: ${c.suite.verdict}** (${c.suite.kind}; primary: ${c.suite.primary.join(', ') || 'none'})`, '');
  lines.push(verdictLine(c.candidate.task, c.suite), '');
  lines.push(...ruleText(c).map((t) => `> ${t}`), '');
  lines.push(
    `- base: ${sideLabel(c.base)}`,
    `- fine-tuned: ${sideLabel(c.candidate)}`,
    `- task: ${c.candidate.task}`,
    `- examples: ${c.nExamples}`,
  );
  lines.push(`- ${spreadText('base', c.outputs.base)}`, `- ${spreadText('fine-tuned', c.outputs.candidate)}`, '');
  lines.push(
    `Paired by example id. Δ = fine-tuned − base, 95% paired bootstrap CI (${c.resamples} resamples, seed ${c.seed}); test p: Wilcoxon signed-rank (macro-F1: paired permutation); Holm within primary and within secondary metrics (α = ${c.alpha}); paired t-test p; Cohen's d_z; P(better) = 1 − p/2 toward the side the test favours.`,
    '',
  );
  lines.push(
    '| metric | role | n | base | fine-tuned | Δ [95% CI] | test p | Holm p | t-test p | d_z | P(better) | verdict |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const m of c.metrics) {
    lines.push(
      `| ${m.metric}${m.higherIsBetter ? '' : ' (lower is better)'} | ${m.role} | ${m.n} | ${fmt(m.baseMean)} | ${fmt(m.candidateMean)} | ${fmt(m.meanDiff)} [${fmt(m.diffCI.low)}, ${fmt(m.diffCI.high)}] | ${fmtP(m.pValue)} | ${fmtP(m.pHolm)} | ${fmtP(m.tTest.pValue)} | ${fmt(m.cohensDz, 3)} | ${fmtPBetter(m.pBetter)} | ${m.verdict} |`,
    );
  }
  const cc = c.classification;
  if (cc) {
    lines.push('', '## Classification', '');
    for (const [side, mat] of [
      ['base', cc.baseConfusion],
      ['fine-tuned', cc.candidateConfusion],
    ] as const) {
      lines.push(
        `Confusion matrix, ${side} (rows gold, columns predicted):`,
        '',
        `| gold \\ predicted | ${cc.labels.join(' | ')} |`,
        `|---|${cc.labels.map(() => '---').join('|')}|`,
      );
      cc.labels.forEach((g, i) => {
        lines.push(`| ${g} | ${mat[i]!.join(' | ')} |`);
      });
      lines.push('');
    }
    lines.push('| label | gold | base predictions | fine-tuned predictions |', '|---|---|---|---|');
    cc.labels.forEach((l, i) => {
      lines.push(`| ${l} | ${cc.goldCounts[i]} | ${cc.baseCounts[i]} | ${cc.candidateCounts[i]} |`);
    });
    for (const kind of ['right', 'wrong', 'changed'] as const) {
      lines.push(
        '',
        `### Fine-tuned ${kind === 'changed' ? 'label changed from the base' : kind} (${cc[kind].length} of ${cc.totals[kind]} shown)`,
        '',
      );
      if (!cc[kind].length) lines.push('None.');
      for (const e of cc[kind])
        lines.push(
          `- ${e.id}: gold ${e.gold}; base ${e.baseLabel} (${mdCell(JSON.stringify(e.basePrediction.slice(0, 80)))}); fine-tuned ${e.candidateLabel} (${mdCell(JSON.stringify(e.candidatePrediction.slice(0, 80)))})`,
        );
    }
  }
  const names = [...new Set([...Object.keys(c.base.metrics), ...Object.keys(c.candidate.metrics)])];
  if (names.length) {
    lines.push('', '## Corpus-level figures', '', '| metric | base | fine-tuned |', '|---|---|---|');
    for (const n of names) lines.push(`| ${n} | ${fmt(c.base.metrics[n])} | ${fmt(c.candidate.metrics[n])} |`);
  }
  const ex = (title: string, list: ExampleDelta[]) => {
    lines.push('', `## ${title} (${c.primaryMetric ?? 'n/a'})`, '');
    if (!list.length) lines.push('None.');
    for (const e of list) lines.push(`- ${e.id}: ${fmt(e.base)} → ${fmt(e.candidate)}`);
  };
  ex('Most improved examples', c.improved);
  ex('Most regressed examples', c.regressed);
  const log = c.trainingLog ?? [];
  if (log.length) {
    lines.push('', '## Training', '');
    for (const t of trainingFacts(log)) lines.push(`- ${t}`);
  }
  lines.push('', 'Charts and side-by-side examples: report.html. Every number: report.json.', '');
  return lines.join('\n');
}

/** Write report.html, summary.md and report.json into `outDir` (created if needed). */
export async function writeReport(outDir: string, c: Comparison): Promise<ReportPaths> {
  const paths: ReportPaths = {
    html: join(outDir, 'report.html'),
    markdown: join(outDir, 'summary.md'),
    json: join(outDir, 'report.json'),
  };
  const json = {
    generated_by: 'finllm compare',
    format: REPORT_FORMAT,
    verdict_line: verdictLine(c.candidate.task, c.suite),
    ...c,
  };
  await writeFileAtomic(
    paths.json,
    JSON.stringify(json, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n',
  );
  await writeFileAtomic(paths.markdown, renderMarkdown(c));
  await writeFileAtomic(paths.html, renderHtml(c));
  return paths;
}

/**
 * The verdict line a report.json records, or null when the file is missing or unreadable (a
 * pipeline re-run that skips its compare stage prints it again from there).
 */
export async function readReportVerdict(file: string): Promise<string | null> {
  try {
    const line = (JSON.parse(await readFile(file, 'utf8')) as { verdict_line?: unknown }).verdict_line;
    return typeof line === 'string' ? line : null;
  } catch {
    return null;
  }
}
