#!/usr/bin/env node
// Generates the bundled sample dataset (data/sample/train.jsonl, data/sample/val.jsonl).
//
// Every company, person, figure and event here is invented for this project; nothing is copied
// from real filings or transcripts. The generator is seeded, so `node data/sample/generate.mjs`
// reproduces the committed files byte-for-byte. Train and val use disjoint companies.
import { writeFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Output folder: this file's folder, or the first argument (used by the reproducibility test).
const OUT = process.argv[2] ?? dirname(fileURLToPath(import.meta.url));
const SEED = 20240917;

// ---------- seeded randomness ----------
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rng = mulberry32(SEED);
const pick = (arr) => arr[Math.floor(rng() * arr.length)];
const between = (lo, hi) => lo + rng() * (hi - lo);
const int = (lo, hi) => Math.floor(between(lo, hi + 1));
const fixed = (x, d = 1) => x.toFixed(d);
const chance = (p) => rng() < p;
function shuffled(arr) {
  const a = [...arr];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

// ---------- invented companies ----------
const PREFIX = ['Northwind', 'Calder', 'Bramwell', 'Ostrava', 'Halden', 'Meridian Vale', 'Quillon', 'Tessaro', 'Lowmoor', 'Arcturus', 'Pellham', 'Sundry Creek', 'Vantor', 'Greyfield', 'Kestrel', 'Orliss', 'Barrow Point', 'Cindral', 'Emberly', 'Fairhaven', 'Juniper Ridge', 'Marlowe', 'Nexfield', 'Ravensworth', 'Solvane', 'Thornbury', 'Wexcombe', 'Yardley', 'Zephyrine', 'Ashgrove', 'Blue Tamarack', 'Corvin'];
const SECTORS = [
  { suffix: 'Semiconductors', sector: 'semiconductors', product: ['data-center accelerators', 'automotive microcontrollers', 'power management chips', 'RF front-end modules'], unit: 'wafer starts', driver: ['AI server demand', 'an inventory correction at automotive customers', 'pricing on mature nodes', 'new design wins in industrial'] },
  { suffix: 'Regional Bancorp', sector: 'banking', product: ['commercial real estate loans', 'small-business lending', 'wealth management', 'treasury services'], unit: 'deposit accounts', driver: ['higher deposit costs', 'loan growth in the Midwest footprint', 'lower mortgage origination volumes', 'fee income from treasury management'] },
  { suffix: 'Logistics', sector: 'transportation', product: ['less-than-truckload freight', 'contract warehousing', 'last-mile delivery', 'cross-border brokerage'], unit: 'shipments per day', driver: ['softer freight volumes', 'yield improvement on renewals', 'fuel surcharge revenue', 'network consolidation savings'] },
  { suffix: 'Grid Holdings', sector: 'utilities', product: ['regulated transmission', 'distributed solar', 'natural gas distribution', 'battery storage'], unit: 'customer accounts', driver: ['a favorable rate case outcome', 'mild weather', 'higher interest expense', 'capital spending on grid hardening'] },
  { suffix: 'Health Systems', sector: 'healthcare', product: ['outpatient surgery centers', 'home infusion', 'diagnostic imaging', 'behavioral health clinics'], unit: 'patient visits', driver: ['higher patient volumes', 'labor cost inflation', 'payer mix shifts', 'reimbursement rate updates'] },
  { suffix: 'Consumer Brands', sector: 'consumer staples', product: ['private-label snacks', 'premium pet food', 'household cleaning products', 'plant-based beverages'], unit: 'retail doors', driver: ['price increases sticking', 'volume declines in the value tier', 'lower freight and packaging costs', 'promotional spending'] },
  { suffix: 'Software', sector: 'software', product: ['cloud accounting', 'procurement analytics', 'security operations', 'payroll compliance'], unit: 'enterprise customers', driver: ['larger multi-year deals', 'elongated sales cycles', 'net revenue retention', 'migration of on-premise customers to the cloud'] },
  { suffix: 'Energy Partners', sector: 'energy', product: ['Permian crude gathering', 'natural gas processing', 'NGL fractionation', 'refined products terminals'], unit: 'barrels per day', driver: ['higher throughput volumes', 'weaker commodity-linked margins', 'new contracted capacity', 'maintenance downtime'] },
  { suffix: 'Industrials', sector: 'industrials', product: ['commercial HVAC systems', 'aerospace fasteners', 'water treatment equipment', 'factory automation'], unit: 'units shipped', driver: ['backlog conversion', 'supply chain constraints easing', 'steel cost inflation', 'aftermarket service growth'] },
  { suffix: 'Insurance Group', sector: 'insurance', product: ['specialty commercial lines', 'personal auto', 'workers compensation', 'reinsurance'], unit: 'policies in force', driver: ['elevated catastrophe losses', 'rate increases above loss trend', 'favorable reserve development', 'higher net investment income'] },
];
const FIRST = ['Dana', 'Marcus', 'Priya', 'Helen', 'Tomas', 'Grace', 'Oliver', 'Amara', 'Jonah', 'Leila', 'Victor', 'Naomi', 'Rafael', 'Ingrid', 'Samuel', 'Keiko', 'Elliot', 'Farah', 'Henrik', 'Lucia'];
const LAST = ['Whitfield', 'Okafor', 'Raman', 'Lindqvist', 'Castellano', 'Brennan', 'Achebe', 'Moreau', 'Takeda', 'Hollis', 'Petrov', 'Asante', 'Delgado', 'Fairchild', 'Kowalski', 'Nakamura', 'Osei', 'Varga', 'Quinlan', 'Sorensen'];
const BANKS = ['Harbor Street Capital', 'Lindell & Co.', 'Crestmoor Securities', 'Alder Partners', 'Fenwick Research', 'Granite Peak Advisors'];

function makeCompany(i, usedTickers) {
  const pre = PREFIX[i % PREFIX.length];
  const sec = SECTORS[Math.floor(i / PREFIX.length + i) % SECTORS.length];
  const name = `${pre} ${sec.suffix}`;
  let ticker = (pre.replace(/[^A-Z]/g, '') + sec.suffix[0] + pre.slice(1, 3).toUpperCase()).slice(0, 4);
  while (usedTickers.has(ticker)) ticker = ticker.slice(0, 3) + String.fromCharCode(65 + int(0, 25));
  usedTickers.add(ticker);
  const person = () => `${pick(FIRST)} ${pick(LAST)}`;
  return { name, short: pre, ticker, ...sec, ceo: person(), cfo: person(), analysts: [person(), person(), person()] };
}

// ---------- money / numbers, formatted the way filings and calls write them ----------
const CURRENCIES = [
  { sym: '$', w: 0.75 },
  { sym: '€', w: 0.15 },
  { sym: '£', w: 0.1 },
];
function currency() {
  let r = rng();
  for (const c of CURRENCIES) if ((r -= c.w) < 0) return c.sym;
  return '$';
}
function money(sym, millions) {
  if (millions >= 1000) return `${sym}${fixed(millions / 1000, 2)} billion`;
  return `${sym}${fixed(millions, 1)} million`;
}
const thousands = (x) => Math.round(x).toLocaleString('en-US');
const pct = (x) => (x < 0 ? `(${fixed(-x)})%` : `${fixed(x)}%`);
const quarter = () => pick(['first', 'second', 'third', 'fourth']);
const fyear = () => int(2021, 2025);

function metrics(c) {
  const sym = currency();
  const rev = between(180, 9500);
  const growth = between(-9, 24);
  const gm = between(22, 71);
  const gmChangeBps = int(-180, 260);
  const eps = between(0.12, 4.8);
  const fcf = rev * between(0.04, 0.19);
  const guideLo = rev * between(1.0, 1.08);
  const guideHi = guideLo * between(1.02, 1.05);
  const buyback = between(25, 900);
  const units = between(1200, 980000);
  const sentiment = growth > 8 && gmChangeBps > -40 ? 'positive' : growth < 0 || gmChangeBps < -120 ? 'negative' : 'neutral';
  return {
    sym, rev, growth, gm, gmChangeBps, eps, fcf, guideLo, guideHi, buyback, units, sentiment,
    q: quarter(), y: fyear(), product: pick(c.product), driver: pick(c.driver), product2: pick(c.product),
  };
}
const direction = (g) => (g >= 0 ? pick(['rose', 'increased', 'grew', 'was up']) : pick(['fell', 'decreased', 'declined', 'was down']));
const bps = (b) => `${Math.abs(b)} bps`;
const marginMove = (b) => (b >= 0 ? `expanded ${bps(b)}` : `contracted ${bps(b)}`);

// ---------- earnings call transcript snippets ----------
function transcript(c) {
  const m = metrics(c);
  const analyst = pick(c.analysts);
  const bank = pick(BANKS);
  const cfoLabel = pick([`${c.cfo} -- Chief Financial Officer`, `${c.cfo} - CFO`, `CFO`, `${c.cfo}, Chief Financial Officer`]);
  const ceoLabel = pick([`${c.ceo} -- Chief Executive Officer`, `CEO`, `${c.ceo} - President and CEO`]);
  const openers = [
    `Thanks, everyone. Revenue for the ${m.q} quarter ${direction(m.growth)} ${pct(Math.abs(m.growth))} year over year to ${money(m.sym, m.rev)}, and gross margin ${marginMove(m.gmChangeBps)} to ${pct(m.gm)}.`,
    `Good morning. We delivered ${money(m.sym, m.rev)} of revenue in Q${['first', 'second', 'third', 'fourth'].indexOf(m.q) + 1}, ${m.growth >= 0 ? 'up' : 'down'} ${pct(Math.abs(m.growth))}, with diluted EPS of ${m.sym}${fixed(m.eps, 2)}.`,
    `Let me start with the numbers. Sales were ${money(m.sym, m.rev)}, a change of ${m.growth >= 0 ? '+' : ''}${fixed(m.growth)}% versus last year, mainly reflecting ${m.driver}.`,
  ];
  const details = [
    `In ${m.product}, the main factor was ${m.driver}. Free cash flow was ${money(m.sym, m.fcf)}.`,
    `Gross margin was ${pct(m.gm)}, ${m.gmChangeBps >= 0 ? 'up' : 'down'} ${bps(m.gmChangeBps)}, and we repurchased ${money(m.sym, m.buyback)} of stock.`,
    `We ended the quarter with ${thousands(m.units)} ${c.unit}, and ${m.product2} remained our fastest-growing line.`,
  ];
  const questions = [
    `Can you unpack the margin bridge? How much of the ${bps(m.gmChangeBps)} move was mix versus pricing?`,
    `How should we think about ${m.product} demand into next year given ${m.driver}?`,
    `Is the buyback pace of ${money(m.sym, m.buyback)} a good run rate, or was this quarter opportunistic?`,
  ];
  const answers = [
    `Roughly two-thirds of it was mix. ${m.driver.charAt(0).toUpperCase() + m.driver.slice(1)} helped, and we expect margin in a ${fixed(m.gm - 1)}% to ${fixed(m.gm + 1)}% range next quarter.`,
    `We are guiding revenue of ${money(m.sym, m.guideLo)} to ${money(m.sym, m.guideHi)} for next quarter, which assumes no change in ${m.product} trends.`,
    `We will stay disciplined. Capital return depends on free cash flow, which was ${money(m.sym, m.fcf)} this quarter.`,
  ];
  const turns = [];
  const long = chance(0.25);
  if (!long && chance(0.5)) turns.push(`Operator: Welcome to the ${c.name} ${m.q} quarter ${m.y} earnings call.`);
  turns.push(`${cfoLabel}: ${pick(openers)}${long ? ' ' + pick(details) : ''}`);
  const qi = int(0, questions.length - 1);
  turns.push(`Operator: Our next question comes from ${analyst} with ${bank.replace(/\.$/, '')}.`);
  turns.push(`${analyst} -- Analyst: ${questions[qi]}`);
  const answer = `${pick([cfoLabel, ceoLabel])}: ${answers[qi]}`;
  const context = turns.join('\n');
  const full = `${context}\n${answer}`;

  const header = { company: c.name, ticker: c.ticker, period: `Q${['first', 'second', 'third', 'fourth'].indexOf(m.q) + 1} ${m.y}` };
  const answerText = answer.slice(answer.indexOf(': ') + 2);
  const qa = [
    {
      question: `What was ${c.short}'s revenue for the quarter?`,
      answer: `Revenue was ${money(m.sym, m.rev)}.`,
      ok: full.includes(money(m.sym, m.rev)),
    },
    { question: `What did the executive say in response to ${analyst}'s question?`, answer: answerText, ok: true },
  ].filter((x) => x.ok);
  const pickedQa = pick(qa);
  const summary =
    `${c.name} ${m.growth >= 0 ? 'grew' : 'saw'} quarterly revenue ${m.growth >= 0 ? 'by' : 'decline'} ${pct(Math.abs(m.growth))} to ${money(m.sym, m.rev)}; ` +
    `management ${qi === 1 ? `guided next-quarter revenue to ${money(m.sym, m.guideLo)}-${money(m.sym, m.guideHi).replace(m.sym, '')}` : `pointed to ${m.driver}`}.`;
  return [
    { task: 'transcript_completion', source: 'earnings_call', ...header, text: context, continuation: answer },
    { task: 'qa', source: 'earnings_call', ...header, text: full, question: pickedQa.question, answer: pickedQa.answer },
    chance(0.5)
      ? { task: 'summarization', source: 'earnings_call', ...header, text: full, summary }
      : { task: 'financial_analysis', source: 'earnings_call', ...header, text: full, sentiment: m.sentiment, analysis: analysis(c, m) },
  ];
}

function analysis(c, m) {
  const tone = { positive: 'Positive', negative: 'Negative', neutral: 'Neutral' }[m.sentiment];
  const reasons = [];
  reasons.push(`revenue ${m.growth >= 0 ? 'up' : 'down'} ${pct(Math.abs(m.growth))} to ${money(m.sym, m.rev)}`);
  reasons.push(`gross margin ${m.gmChangeBps >= 0 ? 'up' : 'down'} ${bps(m.gmChangeBps)} to ${pct(m.gm)}`);
  return `Sentiment: ${tone}. Key figures: ${reasons.join('; ')}. Main driver: ${m.driver}.`;
}

// ---------- 10-K / 10-Q style passages ----------
function filing(c) {
  const m = metrics(c);
  const form = pick(['10-Q', '10-K']);
  const period = form === '10-K' ? `fiscal ${m.y}` : `the ${m.q} quarter of ${m.y}`;
  const opCashDelta = between(-300, 600);
  const debt = between(400, 6000);
  const rate = between(3.1, 8.4);
  const kinds = [
    () =>
      `Net revenue for ${period} was ${money(m.sym, m.rev)} compared with ${money(m.sym, m.rev / (1 + m.growth / 100))} in the prior-year period, a change of ${pct(m.growth)}. ` +
      `The ${m.growth >= 0 ? 'increase' : 'decrease'} was primarily attributable to ${m.driver}, partially offset by ${pick(c.driver.filter((d) => d !== m.driver))}. ` +
      `Gross margin was ${pct(m.gm)} of net revenue, compared with ${pct(m.gm - m.gmChangeBps / 100)} a year earlier.`,
    () =>
      `As of the end of ${period}, the Company had total debt of ${money(m.sym, debt)} with a weighted-average interest rate of ${fixed(rate, 2)}%. ` +
      `Cash provided by operating activities ${opCashDelta >= 0 ? 'increased' : 'decreased'} by ${money(m.sym, Math.abs(opCashDelta))}, reflecting working capital changes in ${m.product}. ` +
      `We believe existing cash and the revolving credit facility are sufficient to fund operations for at least the next 12 months.`,
    () =>
      `Risk factor: our results depend on ${m.product}, which represented approximately ${int(18, 64)}% of net revenue in ${period}. ` +
      `A sustained change in ${m.driver} could adversely affect our margins; a 100 bps increase in input costs would reduce annual operating income by about ${money(m.sym, m.rev * between(0.002, 0.01))}. ` +
      `We have not entered into hedging arrangements for this exposure.`,
  ];
  const k = int(0, kinds.length - 1);
  const text = kinds[k]();
  const header = { company: c.name, ticker: c.ticker, period: form === '10-K' ? `FY${m.y}` : `Q${['first', 'second', 'third', 'fourth'].indexOf(m.q) + 1} ${m.y}`, form };
  const qaByKind = [
    { question: `What was the gross margin for ${period}?`, answer: `Gross margin was ${pct(m.gm)} of net revenue.` },
    { question: `What was the weighted-average interest rate on the Company's debt?`, answer: `${fixed(rate, 2)}%, on total debt of ${money(m.sym, debt)}.` },
    { question: `Which business line is the main concentration risk?`, answer: `${m.product[0].toUpperCase() + m.product.slice(1)}.` },
  ];
  const sumByKind = [
    `Net revenue changed ${pct(m.growth)} to ${money(m.sym, m.rev)}, driven by ${m.driver}; gross margin was ${pct(m.gm)}.`,
    `Debt stood at ${money(m.sym, debt)} at ${fixed(rate, 2)}%, and management considers liquidity sufficient for the next 12 months.`,
    `The Company is concentrated in ${m.product} and exposed to ${m.driver}, with no hedges in place.`,
  ];
  const sentByKind = [m.sentiment, opCashDelta >= 0 ? 'neutral' : 'negative', 'negative'];
  return [
    { task: 'qa', source: 'filing', ...header, text, ...qaByKind[k] },
    { task: 'summarization', source: 'filing', ...header, text, summary: sumByKind[k] },
    ...(chance(0.4) ? [{ task: 'financial_analysis', source: 'filing', ...header, text, sentiment: sentByKind[k] }] : []),
  ];
}

// ---------- financial news ----------
function news(c) {
  const m = metrics(c);
  const move = between(-14, 16);
  const target = between(12, 240);
  const bank = pick(BANKS);
  const stories = [
    () => ({
      text:
        `${c.name} (${c.ticker}) shares ${move >= 0 ? 'rose' : 'fell'} ${fixed(Math.abs(move))}% on ${pick(['Tuesday', 'Wednesday', 'Thursday'])} after the company reported ${m.q}-quarter revenue of ${money(m.sym, m.rev)}, ` +
        `${m.growth >= 0 ? 'up' : 'down'} ${pct(Math.abs(m.growth))} from a year earlier. Adjusted EPS of ${m.sym}${fixed(m.eps, 2)} ${move >= 0 ? 'topped' : 'missed'} the analyst consensus. ` +
        `Executives cited ${m.driver} and said they now expect next-quarter sales of ${money(m.sym, m.guideLo)} to ${money(m.sym, m.guideHi)}.`,
      sentiment: move >= 2 ? 'positive' : move <= -2 ? 'negative' : 'neutral',
      question: `How did ${c.ticker} shares react to the results?`,
      answer: `They ${move >= 0 ? 'rose' : 'fell'} ${fixed(Math.abs(move))}%.`,
      summary: `${c.ticker} ${move >= 0 ? 'gained' : 'lost'} ${fixed(Math.abs(move))}% after revenue of ${money(m.sym, m.rev)} and guidance of ${money(m.sym, m.guideLo)} to ${money(m.sym, m.guideHi)}.`,
    }),
    () => ({
      text:
        `${bank} ${move >= 0 ? 'upgraded' : 'downgraded'} ${c.name} to ${move >= 0 ? 'Buy' : 'Underperform'} and set a ${m.sym === '$' ? '$' : m.sym}${fixed(target, 0)} price target, ` +
        `arguing that ${m.driver} ${move >= 0 ? 'is underappreciated' : 'will weigh on results'}. The analyst ${move >= 0 ? 'raised' : 'cut'} the ${m.y + 1} EPS estimate by ${fixed(Math.abs(move) * 0.7)}% ` +
        `and flagged a potential ${int(20, 150)} bps swing in operating margin.`,
      sentiment: move >= 0 ? 'positive' : 'negative',
      question: `What price target did ${bank} set?`,
      answer: `${m.sym}${fixed(target, 0)}.`,
      summary: `${bank} ${move >= 0 ? 'upgraded' : 'downgraded'} ${c.ticker} with a ${m.sym}${fixed(target, 0)} target, citing ${m.driver}.`,
    }),
    () => ({
      text:
        `${c.name} agreed to acquire a privately held ${c.sector} business for ${money(m.sym, m.rev * between(0.2, 1.4))} in cash, its largest deal since ${m.y - int(2, 9)}. ` +
        `The company expects the purchase to add about ${pct(between(2, 11))} to revenue and to be accretive to EPS within ${int(12, 24)} months. ` +
        `The deal will be financed with cash on hand and a ${money(m.sym, between(200, 1500))} term loan.`,
      sentiment: 'neutral',
      question: `How will ${c.short} finance the acquisition?`,
      answer: 'With cash on hand and a new term loan.',
      summary: `${c.name} is buying a ${c.sector} business for cash, financed partly with a term loan, and expects EPS accretion.`,
    }),
  ];
  const s = pick(stories)();
  const header = { company: c.name, ticker: c.ticker, period: `${m.y}` };
  const out = [
    { task: 'financial_analysis', source: 'news', ...header, text: s.text, sentiment: s.sentiment },
    { task: pick(['qa', 'summarization']), source: 'news', ...header, text: s.text, question: s.question, answer: s.answer, summary: s.summary },
  ];
  // The second record carries both QA and summary fields; keep only what its task uses.
  if (out[1].task === 'qa') delete out[1].summary;
  else {
    delete out[1].question;
    delete out[1].answer;
  }
  if (chance(0.25)) {
    out.push({
      task: 'chat',
      source: 'news',
      ...header,
      messages: [
        { role: 'system', content: 'You are a concise financial analyst. Quote figures exactly.' },
        { role: 'user', content: `${s.text}\n\nIs this news positive, negative or neutral for ${c.ticker}, and why?` },
        { role: 'assistant', content: `${s.sentiment[0].toUpperCase() + s.sentiment.slice(1)}. ${s.summary}` },
      ],
    });
  }
  if (chance(0.15)) out.push({ task: 'completion', source: 'news', ...header, text: s.text });
  return out;
}

// ---------- assemble ----------
// Passages are kept short enough that prompt + response fit max_seq_len 512 with the bundled tiny
// model's small-vocabulary tokenizer (~0.75 tokens per character) and 256 with Llama tokenizers.
const MAX_TEXT_CHARS = 430;
const MAX_RECORD_CHARS = 560;
function recordChars(r) {
  if (r.messages) return r.messages.reduce((a, m) => a + m.content.length, 0);
  return (r.text ?? '').length + (r.question ?? '').length + (r.answer ?? '').length + (r.summary ?? '').length + (r.analysis ?? '').length + (r.continuation ?? '').length;
}
function bounded(gen, c) {
  for (;;) {
    const recs = gen(c);
    if (recs.every((r) => (r.text ?? '').length <= MAX_TEXT_CHARS && recordChars(r) <= MAX_RECORD_CHARS)) return recs;
  }
}

function build(companyIdx, perCompany) {
  const used = new Set();
  const records = [];
  for (const i of companyIdx) {
    const c = makeCompany(i, used);
    for (let k = 0; k < perCompany; k++) {
      const gen = pick([transcript, filing, news]);
      records.push(...bounded(gen, c));
    }
  }
  return shuffled(records);
}

const ids = Array.from({ length: 40 }, (_, i) => i);
const trainIdx = ids.slice(0, 34);
const valIdx = ids.slice(34);
const usedAll = new Set();
for (const i of ids) makeCompany(i, usedAll); // warm the ticker set so both splits are stable
const train = build(trainIdx, 4).map((r, i) => ({ id: `train-${String(i + 1).padStart(4, '0')}`, ...r }));
const val = build(valIdx, 3).map((r, i) => ({ id: `val-${String(i + 1).padStart(4, '0')}`, ...r }));

function writeJsonl(name, rows) {
  const path = join(OUT, name);
  writeFileSync(path + '.tmp', rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  renameSync(path + '.tmp', path);
  console.log(`wrote ${rows.length} records to ${path}`);
}
writeJsonl('train.jsonl', train);
writeJsonl('val.jsonl', val);
