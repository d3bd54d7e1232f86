// A synthetic financial corpus, generated on the fly from a seed (nothing here is committed data):
// invented companies reporting invented quarters, written up as earnings-call turns, analyst
// questions, filing (MD&A) passages, news articles and guidance statements.
//
// Every document is rendered from one fact sheet (a company-quarter: revenue and its growth,
// operating margin and its change, EPS against consensus, net income, free cash flow, dividend,
// guidance), so its numbers agree with each other wherever they are repeated: revenue is prior
// revenue × (1 + growth), a headline restates the body's figures, an answer quotes the figure the
// passage gives. Each fact sheet has a tone (positive, negative, mixed) that its figures and its
// wording follow.
//
// Two outputs:
//   corpus  raw documents {"text", "kind"} for pretraining (template completion, loss on every token)
//   tasks   instruction records for fine-tuning and evaluation, in the data stage's field names:
//           sentiment {task: financial_analysis, text, sentiment}, figure extraction {task: qa,
//           text, question, answer}, one-line summary {task: summarization, text, summary}.
//           The eval layout (data/eval/README.md) is the same record with `context`/`source`/`label`.
//           Four more kinds cover the other templates (data/sample/ uses all seven): worded
//           analysis {task: financial_analysis, source, text, sentiment, analysis}, transcript
//           turns {task: transcript_completion, source, text, continuation}, chat {task: chat,
//           source, messages} and raw documents {task: completion, source, text}.
//
// Every committed data file (data/finetune, data/eval, data/sample) is written by this generator;
// data/README.md lists the commands and seeds.
//
// Company names come from syllables, so train, validation and evaluation sets can use disjoint
// companies (`split`): a model that learns the tasks must read the passage, not remember names.
import { existsSync, statfsSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { formatBytes } from '../../engine/device-memory.js';
import { Rng } from '../../engine/random.js';
import { InputError } from '../../errors.js';
import { JSONL_EXTENSIONS } from './readers.js';

export type DocumentKind = 'earnings_call' | 'analyst_qa' | 'filing' | 'news' | 'guidance';
export const DOCUMENT_KINDS: readonly DocumentKind[] = ['earnings_call', 'analyst_qa', 'filing', 'news', 'guidance'];
export type TaskKind = 'sentiment' | 'figures' | 'summary' | 'analysis' | 'transcript' | 'chat' | 'completion';
/** The fine-tuning tasks of the default config, and the default of `--tasks`. */
export const TASK_KINDS: readonly TaskKind[] = ['sentiment', 'figures', 'summary'];
/** Every task kind: one per training template (data/sample/). */
export const ALL_TASK_KINDS: readonly TaskKind[] = [...TASK_KINDS, 'analysis', 'transcript', 'chat', 'completion'];
/** The kinds that have an evaluation layout (`--eval`). */
export const EVAL_TASK_KINDS: readonly TaskKind[] = TASK_KINDS;
export type Tone = 'positive' | 'negative' | 'neutral';

/** Disjoint name spaces: a company of one split never appears in another. */
export type Split = 'train' | 'val' | 'eval';

// ---------------------------------------------------------------------------------------------
// Random helpers over the engine's seeded generator

class Draw {
  constructor(readonly rng: Rng) {}
  pick<T>(items: readonly T[]): T {
    return items[this.rng.int(items.length)]!;
  }
  between(lo: number, hi: number): number {
    return lo + this.rng.uniform() * (hi - lo);
  }
  int(lo: number, hi: number): number {
    return lo + this.rng.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.rng.uniform() < p;
  }
  shuffle<T>(items: readonly T[]): T[] {
    const a = [...items];
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
}

// ---------------------------------------------------------------------------------------------
// Companies

const SYLLABLES: Record<Split, readonly string[]> = {
  train: [
    'bar',
    'cal',
    'dor',
    'fen',
    'gal',
    'hal',
    'kor',
    'lan',
    'mer',
    'nor',
    'pel',
    'quin',
    'ros',
    'sal',
    'tor',
    'val',
    'wex',
    'zan',
    'bri',
    'cas',
    'del',
    'mar',
    'ven',
    'ly',
  ],
  val: ['ash', 'bel', 'cor', 'dun', 'el', 'far', 'gro', 'hes'],
  eval: ['ab', 'ced', 'io', 'jar', 'kel', 'lom', 'mu', 'ox', 'pra', 'sor', 'tal', 'ur'],
};

interface Sector {
  suffix: readonly string[];
  segments: readonly string[];
  drivers: { up: readonly string[]; down: readonly string[] };
}

const SECTORS: readonly Sector[] = [
  {
    suffix: ['Semiconductor', 'Microsystems', 'Silicon'],
    segments: ['data center', 'automotive', 'industrial', 'consumer devices'],
    drivers: {
      up: ['strong demand for accelerators', 'new design wins', 'higher average selling prices'],
      down: ['an inventory correction at customers', 'weak consumer demand', 'pricing pressure on mature products'],
    },
  },
  {
    suffix: ['Bancorp', 'Financial', 'Bank'],
    segments: ['commercial lending', 'consumer banking', 'wealth management', 'treasury services'],
    drivers: {
      up: ['loan growth', 'higher fee income', 'lower credit costs'],
      down: ['higher deposit costs', 'a larger credit loss provision', 'lower mortgage volumes'],
    },
  },
  {
    suffix: ['Logistics', 'Freight', 'Transport'],
    segments: ['truckload', 'contract warehousing', 'last-mile delivery', 'brokerage'],
    drivers: {
      up: ['higher shipment volumes', 'better pricing on renewals', 'network efficiency'],
      down: ['softer freight volumes', 'higher fuel costs', 'lower spot rates'],
    },
  },
  {
    suffix: ['Energy', 'Power', 'Utilities'],
    segments: ['transmission', 'renewables', 'gas distribution', 'storage'],
    drivers: {
      up: ['a favorable rate decision', 'higher throughput', 'new contracted capacity'],
      down: ['mild weather', 'higher interest expense', 'maintenance downtime'],
    },
  },
  {
    suffix: ['Health', 'Medical', 'Therapeutics'],
    segments: ['outpatient care', 'diagnostics', 'home infusion', 'medical devices'],
    drivers: {
      up: ['higher patient volumes', 'new product launches', 'better payer mix'],
      down: ['labor cost inflation', 'lower reimbursement rates', 'a product recall'],
    },
  },
  {
    suffix: ['Brands', 'Foods', 'Retail'],
    segments: ['snacks', 'beverages', 'household products', 'e-commerce'],
    drivers: {
      up: ['price increases', 'higher store traffic', 'lower freight costs'],
      down: ['volume declines', 'heavy promotional spending', 'higher input costs'],
    },
  },
  {
    suffix: ['Software', 'Systems', 'Cloud'],
    segments: ['subscriptions', 'professional services', 'payments', 'security'],
    drivers: {
      up: ['larger multi-year deals', 'strong renewals', 'cloud migrations'],
      down: ['longer sales cycles', 'customer churn', 'delayed deals'],
    },
  },
  {
    suffix: ['Industrials', 'Machinery', 'Aerospace'],
    segments: ['equipment', 'aftermarket services', 'components', 'automation'],
    drivers: {
      up: ['backlog conversion', 'aftermarket growth', 'easing supply constraints'],
      down: ['steel cost inflation', 'supply chain delays', 'lower orders'],
    },
  },
  {
    suffix: ['Insurance', 'Assurance', 'Re'],
    segments: ['commercial lines', 'personal auto', 'life and annuities', 'reinsurance'],
    drivers: {
      up: ['rate increases', 'favorable reserve development', 'higher investment income'],
      down: ['catastrophe losses', 'adverse reserve development', 'higher claims costs'],
    },
  },
];

const FIRST = [
  'Dana',
  'Marcus',
  'Priya',
  'Helen',
  'Tomas',
  'Grace',
  'Oliver',
  'Amara',
  'Jonah',
  'Leila',
  'Victor',
  'Naomi',
  'Rafael',
  'Ingrid',
  'Samuel',
  'Keiko',
  'Elliot',
  'Farah',
  'Henrik',
  'Lucia',
  'Omar',
  'Mei',
  'Carlos',
  'Ruth',
];
const LAST = [
  'Whitfield',
  'Okafor',
  'Raman',
  'Lindqvist',
  'Castellano',
  'Brennan',
  'Achebe',
  'Moreau',
  'Takeda',
  'Hollis',
  'Petrov',
  'Asante',
  'Delgado',
  'Fairchild',
  'Kowalski',
  'Nakamura',
  'Osei',
  'Varga',
  'Quinlan',
  'Sorensen',
  'Ibarra',
  'Chen',
  'Novak',
  'Adeyemi',
];
const BANKS = [
  'Harbor Street Capital',
  'Lindell & Co.',
  'Crestmoor Securities',
  'Alder Partners',
  'Fenwick Research',
  'Granite Peak Advisors',
  'Bluewater Markets',
  'Stanhope Brothers',
];

interface Company {
  name: string;
  ticker: string;
  sector: Sector;
  ceo: string;
  cfo: string;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function makeCompany(d: Draw, split: Split): Company {
  const syl = SYLLABLES[split];
  const stem = capitalize(d.pick(syl) + d.pick(syl) + (d.chance(0.4) ? d.pick(syl) : ''));
  const sector = d.pick(SECTORS);
  const name = `${stem} ${d.pick(sector.suffix)}`;
  const ticker = (stem.replace(/[aeiou]/g, '').toUpperCase() + stem.toUpperCase()).slice(0, d.int(3, 4));
  const person = () => `${d.pick(FIRST)} ${d.pick(LAST)}`;
  return { name, ticker, sector, ceo: person(), cfo: person() };
}

// ---------------------------------------------------------------------------------------------
// Fact sheets: one company-quarter with consistent figures

const QUARTER_WORDS = ['first', 'second', 'third', 'fourth'];

interface Money {
  /** Value in millions. */
  millions: number;
  text: string;
}

/** $6.53 billion, $946 million, $88.4 million: three significant digits, as releases write them. */
export function formatMoney(millions: number): string {
  const neg = millions < 0;
  const m = Math.abs(millions);
  let text: string;
  if (m >= 1000) text = `$${(m / 1000).toFixed(2)} billion`;
  else if (m >= 100) text = `$${m.toFixed(0)} million`;
  else text = `$${m.toFixed(1)} million`;
  return neg ? `-${text}` : text;
}

function money(millions: number): Money {
  // Round to the precision shown, so derived figures are computed from what the text says.
  const text = formatMoney(millions);
  const m = Math.abs(millions);
  const shown = m >= 1000 ? Math.round(m / 10) * 10 : m >= 100 ? Math.round(m) : Math.round(m * 10) / 10;
  return { millions: Math.sign(millions) * shown, text };
}

export interface FactSheet {
  company: Company;
  quarter: number;
  year: number;
  tone: Tone;
  revenue: Money;
  priorRevenue: Money;
  /** Revenue growth in percent, rounded to an integer (what the text states). */
  growth: number;
  margin: number;
  marginBps: number;
  eps: number;
  consensus: number;
  netIncome: Money;
  fcf: Money;
  dividend: number;
  guidance: 'raised' | 'reaffirmed' | 'lowered';
  guidanceLow: Money;
  guidanceHigh: Money;
  driver: string;
  segment: string;
  segmentGrowth: number;
  reportDay: string;
}

const MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
];

function makeFacts(d: Draw, company: Company, tone: Tone): FactSheet {
  const quarter = d.int(1, 4);
  const year = d.int(2019, 2026);
  const scale = d.pick([40, 150, 600, 2500, 9000]);
  const priorRevenue = money(scale * d.between(0.6, 1.6));
  // Mixed quarters are flat: no growth, no margin change, EPS at consensus, guidance reaffirmed.
  const growth = tone === 'positive' ? d.int(4, 28) : tone === 'negative' ? -d.int(3, 22) : 0;
  const revenue = money(priorRevenue.millions * (1 + growth / 100));
  const marginBps = (tone === 'positive' ? d.int(2, 30) : tone === 'negative' ? -d.int(2, 35) : 0) * 10;
  const margin = Math.round(d.between(6, 32) * 10) / 10;
  const consensus = Math.round(d.between(0.2, 4.5) * 100) / 100;
  const epsDelta = tone === 'positive' ? d.between(0.03, 0.25) : tone === 'negative' ? -d.between(0.04, 0.3) : 0;
  const cents = (x: number) => Math.round(x * 100) / 100;
  // A beat or a miss by at least a cent, whatever the rounding.
  let eps = cents(consensus * (1 + epsDelta));
  if (tone === 'positive' && eps <= consensus) eps = cents(consensus + 0.01);
  if (tone === 'negative' && eps >= consensus) eps = cents(consensus - 0.01);
  const netIncome = money(((revenue.millions * margin) / 100) * d.between(0.55, 0.8));
  const fcf = money(revenue.millions * d.between(0.04, 0.2));
  const dividend = Math.round(d.between(0.05, 1.2) * 100) / 100;
  const guidance = tone === 'positive' ? 'raised' : tone === 'negative' ? 'lowered' : 'reaffirmed';
  const annual = revenue.millions * 4 * d.between(0.95, 1.08);
  const guidanceLow = money(annual * 0.98);
  const guidanceHigh = money(annual * 1.02);
  const driver = d.pick(tone === 'negative' ? company.sector.drivers.down : company.sector.drivers.up);
  const segmentGrowth = growth + (tone === 'negative' ? -d.int(1, 8) : d.int(1, 9));
  const month = MONTHS[(quarter * 3 + d.int(0, 1)) % 12]!;
  return {
    company,
    quarter,
    year,
    tone,
    revenue,
    priorRevenue,
    growth,
    margin,
    marginBps,
    eps,
    consensus,
    netIncome,
    fcf,
    dividend,
    guidance,
    guidanceLow,
    guidanceHigh,
    driver,
    segment: d.pick(company.sector.segments),
    segmentGrowth,
    reportDay: `${month} ${d.int(2, 28)}`,
  };
}

// ---------------------------------------------------------------------------------------------
// Phrases (several wordings of each fact, chosen at random)

const quarterName = (f: FactSheet) => `${QUARTER_WORDS[f.quarter - 1]} quarter`;
const periodLong = (f: FactSheet) => `the ${quarterName(f)} of ${f.year}`;
const periodShort = (f: FactSheet) => `Q${f.quarter} ${f.year}`;
const pct = (x: number) => `${Math.abs(x)}%`;
const usd = (x: number) => `$${x.toFixed(2)}`;

/** Who a sentence is about: a possessive ("Our", "The company's", "Kelmu Re's") and a subject ("we", "the company", "Kelmu Re"). */
interface Subject {
  poss: string;
  nom: string;
}
const WE: Subject = { poss: 'Our', nom: 'we' };
const THE_COMPANY: Subject = { poss: "The company's", nom: 'the company' };
const possessive = (name: string) => (name.endsWith('s') ? `${name}'` : `${name}'s`);
const named = (c: Company): Subject => ({ poss: possessive(c.name), nom: c.name });

function revenueSentence(d: Draw, f: FactSheet, who: Subject): string {
  const p = d.chance(0.5) ? periodLong(f) : `the ${quarterName(f)}`;
  if (f.growth === 0) return `${who.poss} revenue for ${p} was ${f.revenue.text}, unchanged from a year earlier.`;
  const up = f.growth > 0;
  const verb = d.pick(up ? ['rose', 'increased', 'grew', 'climbed'] : ['fell', 'declined', 'decreased', 'dropped']);
  return d.pick([
    `${who.poss} revenue for ${p} ${verb} ${pct(f.growth)} to ${f.revenue.text} from ${f.priorRevenue.text} a year earlier.`,
    `${who.poss} revenue was ${f.revenue.text} in ${p}, ${up ? 'up' : 'down'} ${pct(f.growth)} from ${f.priorRevenue.text} a year ago.`,
    `In ${p}, ${who.nom} reported revenue of ${f.revenue.text}, which ${verb} ${pct(f.growth)} year over year.`,
  ]);
}

function marginSentence(d: Draw, f: FactSheet): string {
  if (f.marginBps === 0) return `Operating margin was ${f.margin}%, flat compared with last year.`;
  const up = f.marginBps > 0;
  return d.pick([
    `Operating margin ${up ? 'expanded' : 'contracted'} ${Math.abs(f.marginBps)} basis points to ${f.margin}%.`,
    `Operating margin was ${f.margin}%, ${up ? 'an improvement' : 'a decline'} of ${Math.abs(f.marginBps)} basis points from last year.`,
  ]);
}

/** `worded`: always say how EPS compares (beat / miss), not only the two numbers. */
function epsSentence(d: Draw, f: FactSheet, worded = false): string {
  const rel =
    f.eps > f.consensus
      ? d.pick(['ahead of', 'above', 'beating'])
      : f.eps < f.consensus
        ? d.pick(['below', 'short of', 'missing'])
        : 'in line with';
  const said = `Diluted earnings per share were ${usd(f.eps)}, ${rel} the ${usd(f.consensus)} consensus estimate.`;
  return worded
    ? said
    : d.pick([said, `Diluted EPS came in at ${usd(f.eps)} against a consensus of ${usd(f.consensus)}.`]);
}

function cashSentence(d: Draw, f: FactSheet): string {
  return d.pick([
    `Free cash flow was ${f.fcf.text}, and net income was ${f.netIncome.text}.`,
    `The company generated free cash flow of ${f.fcf.text} and net income of ${f.netIncome.text}.`,
  ]);
}

function guidanceSentence(d: Draw, f: FactSheet, speaker: 'we' | 'company'): string {
  const range = `${f.guidanceLow.text} to ${f.guidanceHigh.text}`;
  const verb = {
    raised: ['raised', 'increased'],
    reaffirmed: ['reaffirmed', 'maintained'],
    lowered: ['lowered', 'cut'],
  }[f.guidance];
  if (speaker === 'we') {
    const v = d.pick(verb);
    return `We are ${v === 'cut' ? 'cutting' : v.replace(/e?d$/, 'ing')} our outlook and now expect full-year revenue of ${range}.`;
  }
  return d.pick([
    `The company ${d.pick(verb)} its full-year outlook and now expects revenue of ${range}.`,
    `Management ${d.pick(verb)} full-year guidance, with revenue expected between ${f.guidanceLow.text} and ${f.guidanceHigh.text}.`,
  ]);
}

function driverSentence(d: Draw, f: FactSheet): string {
  const up = f.tone !== 'negative';
  return d.pick([
    `Results reflected ${f.driver}.`,
    `${capitalize(f.segment)} revenue ${up ? 'grew' : 'fell'} ${pct(f.segmentGrowth)}, driven by ${f.driver}.`,
    `Management pointed to ${f.driver} as the main factor in the quarter.`,
  ]);
}

// ---------------------------------------------------------------------------------------------
// Documents

function earningsCall(d: Draw, f: FactSheet): string {
  const c = f.company;
  const analyst = `${d.pick(FIRST)} ${d.pick(LAST)}`;
  const bank = d.pick(BANKS);
  const turns = [
    `Operator: Good day, and welcome to the ${c.name} ${quarterName(f)} ${f.year} earnings conference call.`,
    `${c.ceo}, Chief Executive Officer: Thank you. ${revenueSentence(d, f, WE)} ${driverSentence(d, f)}`,
    `${c.cfo}, Chief Financial Officer: ${marginSentence(d, f)} ${epsSentence(d, f)} ${cashSentence(d, f)} ${guidanceSentence(d, f, 'we')}`,
  ];
  if (d.chance(0.7)) turns.push(...analystExchange(d, f, analyst, bank));
  return turns.join('\n');
}

function analystExchange(d: Draw, f: FactSheet, analyst: string, bank: string): string[] {
  const c = f.company;
  const ask = d.pick(ASKS)(f, d);
  return [
    `Operator: Our next question comes from ${analyst} with ${bank}.`,
    `${analyst}, ${bank}: Thanks for taking my question. ${ask.q}`,
    `${d.chance(0.5) ? c.cfo : c.ceo}: Sure. ${ask.a}`,
  ];
}

const ASKS: readonly ((f: FactSheet, d: Draw) => { q: string; a: string })[] = [
  (f) => ({ q: 'What was free cash flow in the quarter?', a: `Free cash flow was ${f.fcf.text}.` }),
  (f) => ({
    q: `How much did ${f.segment} grow?`,
    a: `${capitalize(f.segment)} revenue ${f.tone === 'negative' ? 'fell' : 'grew'} ${pct(f.segmentGrowth)} in the quarter.`,
  }),
  (f) => ({
    q: 'What does the new outlook assume for revenue?',
    a: `We now expect full-year revenue of ${f.guidanceLow.text} to ${f.guidanceHigh.text}.`,
  }),
  (f, d) => ({ q: 'Can you walk us through the margin change?', a: marginSentence(d, f) }),
  (f) => ({
    q: 'What was revenue a year ago?',
    a: `Revenue in the same quarter last year was ${f.priorRevenue.text}.`,
  }),
  (f) => ({ q: 'What was net income?', a: `Net income was ${f.netIncome.text}.` }),
];

function analystQa(d: Draw, f: FactSheet): string {
  const analyst = `${d.pick(FIRST)} ${d.pick(LAST)}`;
  const bank = d.pick(BANKS);
  const lines = [
    `${f.company.name} ${periodShort(f)} earnings call, question-and-answer session.`,
    ...analystExchange(d, f, analyst, bank),
  ];
  if (d.chance(0.6)) lines.push(...analystExchange(d, f, `${d.pick(FIRST)} ${d.pick(LAST)}`, d.pick(BANKS)));
  return lines.join('\n');
}

function filing(d: Draw, f: FactSheet): string {
  const c = f.company;
  const form = f.quarter === 4 ? '10-K' : '10-Q';
  const parts = [
    `${c.name} (${c.ticker}) Form ${form}, Management's Discussion and Analysis.`,
    revenueSentence(d, f, named(c)),
    driverSentence(d, f),
    marginSentence(d, f),
    cashSentence(d, f),
  ];
  if (d.chance(0.5)) parts.push(`The board declared a quarterly dividend of ${usd(f.dividend)} per share.`);
  return parts.join(' ');
}

function news(d: Draw, f: FactSheet): string {
  const c = f.company;
  const head =
    f.tone === 'positive'
      ? `${c.name} revenue rises ${pct(f.growth)}, outlook raised`
      : f.tone === 'negative'
        ? `${c.name} revenue falls ${pct(f.growth)}, outlook cut`
        : `${c.name} results in line, outlook maintained`;
  const body = [
    `${c.name} (${c.ticker}) reported ${quarterName(f)} results on ${f.reportDay}.`,
    revenueSentence(d, f, THE_COMPANY),
    epsSentence(d, f),
    guidanceSentence(d, f, 'company'),
  ];
  if (d.chance(0.5)) body.push(driverSentence(d, f));
  return `${head}\n${d.shuffle(body.slice(1)).reduce((acc, s) => `${acc} ${s}`, body[0]!)}`;
}

function guidanceDoc(d: Draw, f: FactSheet): string {
  const c = f.company;
  return [
    `${c.name} ${f.guidance === 'raised' ? 'raises' : f.guidance === 'lowered' ? 'lowers' : 'reaffirms'} full-year ${f.year} outlook.`,
    guidanceSentence(d, f, 'company'),
    `The outlook reflects ${f.driver}.`,
    `${c.ceo}, chief executive officer, said: "${f.tone === 'negative' ? 'We are taking action to restore growth.' : f.tone === 'positive' ? 'Demand remains strong across our business.' : 'Our plan for the year is unchanged.'}"`,
  ].join(' ');
}

const RENDER: Record<DocumentKind, (d: Draw, f: FactSheet) => string> = {
  earnings_call: earningsCall,
  analyst_qa: analystQa,
  filing,
  news,
  guidance: guidanceDoc,
};

// ---------------------------------------------------------------------------------------------
// Tasks

export interface SentimentRecord {
  task: 'financial_analysis';
  kind: 'sentiment';
  text: string;
  sentiment: Tone;
}

export interface FigureRecord {
  task: 'qa';
  kind: 'figures';
  text: string;
  question: string;
  answer: string;
}

export interface SummaryRecord {
  task: 'summarization';
  kind: 'summary';
  source: 'news' | 'earnings_call' | 'filing';
  text: string;
  summary: string;
}

export interface AnalysisRecord {
  task: 'financial_analysis';
  kind: 'analysis';
  source: 'filing';
  text: string;
  sentiment: Tone;
  analysis: string;
}

export interface TranscriptRecord {
  task: 'transcript_completion';
  kind: 'transcript';
  source: 'earnings_call';
  text: string;
  continuation: string;
}

export interface ChatRecord {
  task: 'chat';
  kind: 'chat';
  source: 'news';
  messages: { role: 'system' | 'user' | 'assistant'; content: string }[];
}

export interface CompletionRecord {
  task: 'completion';
  kind: 'completion';
  source: DocumentKind;
  text: string;
}

export type TaskRecord =
  | SentimentRecord
  | FigureRecord
  | SummaryRecord
  | AnalysisRecord
  | TranscriptRecord
  | ChatRecord
  | CompletionRecord;

/** A short passage whose wording carries the tone: news lines, guidance, or (neutral) housekeeping. */
function sentimentTask(d: Draw, f: FactSheet): SentimentRecord {
  const c = f.company;
  let text: string;
  if (f.tone === 'neutral' && d.chance(0.5)) {
    text = d.pick([
      `${c.name} will report ${quarterName(f)} results on ${f.reportDay} after the market closes.`,
      `${c.name} appointed ${d.pick(FIRST)} ${d.pick(LAST)} as chief operating officer, effective ${f.reportDay}.`,
      `${c.name} will hold its annual shareholder meeting on ${f.reportDay}.`,
      `${c.name} said ${c.cfo} will present at an industry conference on ${f.reportDay}.`,
    ]);
  } else {
    // The wording carries the tone (a reader should not have to compare EPS with consensus).
    const parts = d.shuffle([
      revenueSentence(d, f, named(c)),
      d.chance(0.5) ? guidanceSentence(d, f, 'company') : epsSentence(d, f, true),
    ]);
    text = parts.slice(0, d.int(1, 2)).join(' ');
  }
  return { task: 'financial_analysis', kind: 'sentiment', text, sentiment: f.tone };
}

function figureTask(d: Draw, f: FactSheet): FigureRecord {
  const c = f.company;
  const text = filing(d, f).replace(/^.*?Analysis\. /, '') + ` ${epsSentence(d, f)}`;
  const asks: { q: string; a: string }[] = [
    {
      q: d.pick([`What was ${c.name}'s revenue in ${periodLong(f)}?`, `How much revenue did ${c.name} report?`]),
      a: f.revenue.text,
    },
    { q: d.pick(['What was free cash flow?', `How much free cash flow did ${c.name} generate?`]), a: f.fcf.text },
    { q: d.pick(['What was net income?', `How much did ${c.name} earn in net income?`]), a: f.netIncome.text },
    { q: d.pick(['What were diluted earnings per share?', 'What was diluted EPS?']), a: usd(f.eps) },
    { q: d.pick(['What was the operating margin?', `What operating margin did ${c.name} report?`]), a: `${f.margin}%` },
  ];
  const ask = d.pick(asks);
  return { task: 'qa', kind: 'figures', text, question: ask.q, answer: ask.a };
}

export function summaryLine(f: FactSheet): string {
  const c = f.company;
  const move = f.growth > 0 ? `rose ${pct(f.growth)} to` : f.growth < 0 ? `fell ${pct(f.growth)} to` : 'was flat at';
  const eps = f.eps > f.consensus ? 'beat' : f.eps < f.consensus ? 'missed' : 'matched';
  return `${possessive(c.name)} ${quarterName(f)} revenue ${move} ${f.revenue.text}; EPS of ${usd(f.eps)} ${eps} estimates and guidance was ${f.guidance}.`;
}

function summaryTask(d: Draw, f: FactSheet): SummaryRecord {
  const source = d.pick(['news', 'earnings_call'] as const);
  let text: string;
  if (source === 'news') {
    const c = f.company;
    text = [
      `${c.name} (${c.ticker}) reported ${quarterName(f)} results on ${f.reportDay}.`,
      revenueSentence(d, f, THE_COMPANY),
      epsSentence(d, f),
      guidanceSentence(d, f, 'company'),
    ].join(' ');
  } else {
    const c = f.company;
    text = [
      `Operator: Welcome to the ${c.name} ${quarterName(f)} ${f.year} earnings call.`,
      `${c.ceo}, Chief Executive Officer: ${revenueSentence(d, f, WE)} ${driverSentence(d, f)}`,
      `${c.cfo}, Chief Financial Officer: ${epsSentence(d, f)} ${guidanceSentence(d, f, 'we')}`,
    ].join('\n');
  }
  return { task: 'summarization', kind: 'summary', source, text, summary: summaryLine(f) };
}

/** A passage with margin and EPS, and a worded analysis: tone, the key figures, the driver. */
function analysisTask(d: Draw, f: FactSheet): AnalysisRecord {
  const c = f.company;
  const text = [
    revenueSentence(d, f, named(c)),
    marginSentence(d, f),
    epsSentence(d, f, true),
    `Results reflected ${f.driver}.`,
  ].join(' ');
  const revenue =
    f.growth === 0
      ? `revenue flat at ${f.revenue.text}`
      : `revenue ${f.growth > 0 ? 'up' : 'down'} ${pct(f.growth)} to ${f.revenue.text}`;
  const margin =
    f.marginBps === 0
      ? `operating margin flat at ${f.margin}%`
      : `operating margin ${f.marginBps > 0 ? 'up' : 'down'} ${Math.abs(f.marginBps)} basis points to ${f.margin}%`;
  const eps = `diluted EPS of ${usd(f.eps)} against ${usd(f.consensus)} expected`;
  const analysis = `Sentiment: ${capitalize(f.tone)}. Key figures: ${revenue}; ${margin}; ${eps}. Main driver: ${f.driver}.`;
  return { task: 'financial_analysis', kind: 'analysis', source: 'filing', text, sentiment: f.tone, analysis };
}

/** The opening turns of a call and an analyst's question; the continuation is the answer. */
function transcriptTask(d: Draw, f: FactSheet): TranscriptRecord {
  const c = f.company;
  const analyst = `${d.pick(FIRST)} ${d.pick(LAST)}`;
  const bank = d.pick(BANKS);
  const ask = d.pick(ASKS)(f, d);
  const turns = [
    `Operator: Welcome to the ${c.name} ${quarterName(f)} ${f.year} earnings call.`,
    `${c.ceo}, Chief Executive Officer: ${revenueSentence(d, f, WE)}`,
    `Operator: Our next question comes from ${analyst} with ${bank}.`,
    `${analyst}, ${bank}: ${ask.q}`,
  ];
  return {
    task: 'transcript_completion',
    kind: 'transcript',
    source: 'earnings_call',
    text: turns.join('\n'),
    continuation: `${d.chance(0.5) ? c.cfo : c.ceo}: ${ask.a}`,
  };
}

/** A news item and the question whether it is good news; the answer gives the tone and the summary line (its figures are the item's). */
function chatTask(d: Draw, f: FactSheet): ChatRecord {
  const c = f.company;
  const text = [
    `${c.name} (${c.ticker}) reported ${quarterName(f)} results on ${f.reportDay}.`,
    revenueSentence(d, f, THE_COMPANY),
    epsSentence(d, f, true),
    guidanceSentence(d, f, 'company'),
  ].join(' ');
  return {
    task: 'chat',
    kind: 'chat',
    source: 'news',
    messages: [
      { role: 'system', content: 'You are a concise financial analyst. Quote figures exactly.' },
      { role: 'user', content: `${text}\n\nIs this news positive, negative or neutral for ${c.ticker}, and why?` },
      { role: 'assistant', content: `${capitalize(f.tone)}. ${summaryLine(f)}` },
    ],
  };
}

/** A short raw document (news or guidance), for the completion template. */
function completionTask(d: Draw, f: FactSheet): CompletionRecord {
  const source = d.pick(['news', 'guidance'] as const);
  return { task: 'completion', kind: 'completion', source, text: RENDER[source](d, f) };
}

const TASKS: Record<TaskKind, (d: Draw, f: FactSheet) => TaskRecord> = {
  sentiment: sentimentTask,
  figures: figureTask,
  summary: summaryTask,
  analysis: analysisTask,
  transcript: transcriptTask,
  chat: chatTask,
  completion: completionTask,
};

// ---------------------------------------------------------------------------------------------
// Generators

export interface CorpusOptions {
  seed: number;
  documents: number;
  split?: Split;
  /** Document kinds to draw from (default: all, equally often). */
  kinds?: readonly DocumentKind[];
}

export interface CorpusDocument {
  kind: DocumentKind;
  text: string;
}

const TONES: readonly Tone[] = ['positive', 'negative', 'neutral'];

/** Companies of a split, drawn once per generator so a company reports several quarters. */
function companyPool(d: Draw, split: Split, n: number): Company[] {
  const seen = new Set<string>();
  const out: Company[] = [];
  for (let tries = 0; out.length < n && tries < n * 20; tries++) {
    const c = makeCompany(d, split);
    if (seen.has(c.name)) continue;
    seen.add(c.name);
    out.push(c);
  }
  return out;
}

/** Raw documents for pretraining. The same seed gives the same documents. */
export function* generateCorpus(opts: CorpusOptions): Generator<CorpusDocument> {
  const d = new Draw(new Rng(opts.seed));
  const split = opts.split ?? 'train';
  const kinds = opts.kinds ?? DOCUMENT_KINDS;
  const companies = companyPool(d, split, Math.max(8, Math.min(2000, Math.ceil(opts.documents / 6))));
  for (let i = 0; i < opts.documents; i++) {
    const f = makeFacts(d, d.pick(companies), d.pick(TONES));
    const kind = d.pick(kinds);
    yield { kind, text: RENDER[kind](d, f) };
  }
}

export interface TaskOptions {
  seed: number;
  /** Records per task kind. */
  perTask: number;
  split?: Split;
  tasks?: readonly TaskKind[];
}

/** Instruction records, task kinds interleaved (sentiment, figures, summary, sentiment, ...). */
export function* generateTasks(opts: TaskOptions): Generator<TaskRecord> {
  const d = new Draw(new Rng(opts.seed));
  const split = opts.split ?? 'train';
  const tasks = opts.tasks ?? TASK_KINDS;
  const companies = companyPool(d, split, Math.max(8, Math.min(2000, opts.perTask)));
  for (let i = 0; i < opts.perTask; i++) {
    for (const t of tasks) {
      // Sentiment labels (of sentiment and analysis records) are balanced by cycling the tone; the other tasks draw it.
      const tone = t === 'sentiment' || t === 'analysis' ? TONES[i % 3]! : d.pick(TONES);
      yield TASKS[t](d, makeFacts(d, d.pick(companies), tone));
    }
  }
}

/** The evaluation layout of a task record (data/eval/README.md): context/source/label fields and an id. */
export function evalRecord(r: TaskRecord, id: string): Record<string, string> {
  switch (r.kind) {
    case 'sentiment':
      return { id, text: r.text, label: r.sentiment };
    case 'figures':
      return { id, context: r.text, question: r.question, answer: r.answer };
    case 'summary':
      return { id, source: r.text, summary: r.summary, source_kind: r.source };
    default:
      throw new InputError(`the evaluation layout exists for ${EVAL_TASK_KINDS.join(', ')}, not ${r.kind}`, {
        flag: 'tasks',
      });
  }
}

// ---------------------------------------------------------------------------------------------
// Writing JSONL

export interface GenerateFileOptions {
  kind: 'corpus' | 'tasks';
  seed: number;
  /** Documents (corpus) or records per task kind (tasks). */
  count: number;
  split?: Split;
  tasks?: readonly TaskKind[];
  /** tasks only: the evaluation layout ({id, text, label} / {id, context, question, answer} / {id, source, summary}). */
  evalLayout?: boolean;
  /** Record ids: `<idPrefix>-00001`, ... (default: the split). */
  idPrefix?: string;
}

/** The records of a generated file as JSON objects, in order. */
export function* syntheticRecords(o: GenerateFileOptions): Generator<Record<string, unknown>> {
  const prefix = o.idPrefix ?? o.split ?? 'train';
  let i = 0;
  const id = () => `${prefix}-${String(++i).padStart(5, '0')}`;
  if (o.kind === 'corpus') {
    for (const doc of generateCorpus({ seed: o.seed, documents: o.count, ...(o.split ? { split: o.split } : {}) }))
      yield { id: id(), task: 'completion', source: doc.kind, text: doc.text };
    return;
  }
  for (const r of generateTasks({
    seed: o.seed,
    perTask: o.count,
    ...(o.split ? { split: o.split } : {}),
    ...(o.tasks ? { tasks: o.tasks } : {}),
  })) {
    if (o.evalLayout) {
      yield evalRecord(r, id());
    } else {
      const { kind: _kind, ...fields } = r;
      yield { id: id(), ...fields };
    }
  }
}

/** The most records one generated file may hold (about 5 GB of JSONL). */
export const MAX_GENERATED_RECORDS = 10_000_000;

/**
 * Refuses, before anything is written, what would give a wrong or unreasonable file: a name the
 * data stage would not read as JSON Lines (x.csv would hold JSONL), more than
 * MAX_GENERATED_RECORDS records, or more bytes than the destination's file system has free
 * (estimated from the first records).
 */
export function checkGenerateDestination(path: string, o: GenerateFileOptions): void {
  const ext = extname(path).toLowerCase();
  if (!JSONL_EXTENSIONS.includes(ext)) {
    throw new InputError(
      `data generate writes JSON Lines: expected a .jsonl file name (or ${JSONL_EXTENSIONS.slice(1).join(', ')}), got ${ext ? `a ${ext} file` : 'no extension'}`,
      { file: path },
    );
  }
  const noEval =
    o.kind === 'tasks' && o.evalLayout ? (o.tasks ?? TASK_KINDS).filter((t) => !EVAL_TASK_KINDS.includes(t)) : [];
  if (noEval.length)
    throw new InputError(
      `--eval writes the evaluation layout of ${EVAL_TASK_KINDS.join(', ')}; ${noEval.join(', ')} has none`,
      { flag: 'tasks' },
    );
  const tasks = o.tasks?.length ?? TASK_KINDS.length;
  const records = o.kind === 'corpus' ? o.count : o.count * tasks;
  if (records > MAX_GENERATED_RECORDS) {
    throw new InputError(
      `expected at most ${MAX_GENERATED_RECORDS} records, got ${records}${o.kind === 'tasks' ? ` (${o.count} × ${tasks} tasks)` : ''}`,
      { key: 'count' },
    );
  }
  const sample = Math.min(records, 64);
  let bytes = 0;
  let i = 0;
  for (const rec of syntheticRecords({ ...o, count: o.kind === 'corpus' ? sample : Math.ceil(sample / tasks) })) {
    bytes += Buffer.byteLength(JSON.stringify(rec)) + 1;
    if (++i >= sample) break;
  }
  const estimate = Math.ceil((bytes / Math.max(1, i)) * records);
  let free: number | null = null;
  try {
    const st = statfsSync(nearestFolder(dirname(path)));
    free = st.bavail * st.bsize;
  } catch {
    // No file system figures (an exotic mount): the write itself reports a full disk.
  }
  if (free !== null && estimate > free) {
    throw new InputError(
      `${records} records need about ${formatBytes(estimate)}, but its file system has ${formatBytes(free)} free; lower -n/--count or write elsewhere`,
      { file: path },
    );
  }
}

/** `dir` or its nearest existing ancestor (the folder a write would be created under). */
function nearestFolder(dir: string): string {
  let p = resolve(dir);
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

/** Writes a generated JSONL file atomically (temp file, then rename); returns the record count. */
export async function writeSyntheticJsonl(path: string, o: GenerateFileOptions): Promise<number> {
  const { writeFileAtomicStreaming } = await import('../../io/atomic.js');
  checkGenerateDestination(path, o);
  let n = 0;
  await writeFileAtomicStreaming(path, async (sink) => {
    const enc = new TextEncoder();
    let buf = '';
    for (const rec of syntheticRecords(o)) {
      buf += JSON.stringify(rec) + '\n';
      n++;
      if (buf.length > 1 << 20) {
        await sink.write(enc.encode(buf));
        buf = '';
      }
    }
    if (buf) await sink.write(enc.encode(buf));
  });
  return n;
}
