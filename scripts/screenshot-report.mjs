#!/usr/bin/env node
// Screenshots a finllm comparison report (report.html) with headless Chromium, for the README.
//   node scripts/screenshot-report.mjs runs/default/stages/compare/fin-summary/report.html docs/report.png [width] [height]
// Chromium: /usr/bin/chromium (apt-get install -y chromium) or $FINLLM_CHROMIUM.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const [html, out, width = '1100', height = '1400'] = process.argv.slice(2);
if (!html || !out) {
  console.error('usage: screenshot-report.mjs REPORT.html OUT.png [width] [height]');
  process.exit(1);
}
const exe = [process.env.FINLLM_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(
  (p) => p && existsSync(p),
);
if (!exe) {
  console.error('no Chromium found: apt-get install -y chromium, or set FINLLM_CHROMIUM');
  process.exit(1);
}
const browser = await chromium.launch({ executablePath: exe, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
try {
  const page = await browser.newPage({ viewport: { width: Number(width), height: Number(height) } });
  await page.goto(pathToFileURL(resolve(html)).href);
  await page.screenshot({ path: out, fullPage: false });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
}
