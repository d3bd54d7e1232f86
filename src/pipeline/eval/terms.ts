// Financial term coverage: of the financial terms (list below, written for finllm) that occur in
// the reference, the fraction that also occur in the prediction. Terms are matched as stemmed
// rouge-score token sequences, so "margins" matches "margin"; synonyms listed in one group count
// as the same term ("EPS" = "earnings per share"). null when the reference has none.
import { findPhrase, stemPhrase, stemTokens } from './text.js';

export const FINANCIAL_TERMS: readonly (readonly string[])[] = [
  ['revenue', 'revenues', 'net sales', 'top line'],
  ['net income', 'net profit', 'bottom line'],
  ['operating income', 'operating profit'],
  ['operating margin'],
  ['gross margin'],
  ['ebitda', 'adjusted ebitda'],
  ['eps', 'earnings per share'],
  ['free cash flow', 'fcf'],
  ['operating cash flow', 'cash from operations'],
  ['guidance', 'outlook', 'forecast'],
  ['dividend', 'dividends'],
  ['buyback', 'share repurchase', 'repurchase'],
  ['capex', 'capital expenditure', 'capital expenditures'],
  ['debt'],
  ['leverage'],
  ['liquidity'],
  ['balance sheet'],
  ['same store sales', 'comparable sales', 'comps'],
  ['backlog'],
  ['bookings'],
  ['annual recurring revenue', 'arr'],
  ['churn'],
  ['net interest margin', 'nim'],
  ['net interest income'],
  ['provision', 'provisions'],
  ['credit loss', 'credit losses'],
  ['impairment'],
  ['goodwill'],
  ['segment'],
  ['year over year', 'yoy'],
  ['quarter over quarter', 'sequential', 'sequentially'],
  ['fiscal year'],
  ['consensus'],
  ['valuation'],
  ['market share'],
  ['pricing'],
  ['inventory', 'inventories'],
  ['working capital'],
  ['return on equity', 'roe'],
  ['basis points', 'bps'],
  ['headcount'],
  ['restructuring'],
  ['cost of goods sold', 'cogs'],
  ['operating expenses', 'opex'],
  ['tax rate'],
  ['interest expense'],
  ['share count', 'diluted shares'],
  ['cash and equivalents', 'cash position'],
  ['margin'],
];

let groups: string[][][] | undefined;
function termGroups(): string[][][] {
  groups ??= FINANCIAL_TERMS.map((g) => g.map((p) => stemPhrase(p)));
  return groups;
}

/** Indices (into FINANCIAL_TERMS) of the term groups present in `text`. */
export function financialTermsIn(text: string): number[] {
  const tokens = stemTokens(text);
  const out: number[] = [];
  termGroups().forEach((g, i) => {
    if (g.some((p) => findPhrase(tokens, p).length > 0)) out.push(i);
  });
  return out;
}

export function termCoverage(prediction: string, reference: string): number | null {
  const ref = financialTermsIn(reference);
  if (ref.length === 0) return null;
  const pred = new Set(financialTermsIn(prediction));
  return ref.filter((i) => pred.has(i)).length / ref.length;
}
