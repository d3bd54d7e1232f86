// A small finance sentiment lexicon.
//
// Provenance: written by hand for finllm (Apache-2.0, like the rest of the project). The word
// choice follows the idea behind finance-specific lexicons such as Loughran & McDonald (2011) --
// general-purpose sentiment words mislead on financial text ("liability", "tax", "cost" are not
// negative there) -- but no entries were copied from that or any other third-party list. Entries
// are lowercase stems matched against rouge-score tokens after Porter stemming, so "declines",
// "declined" and "declining" all hit "declin". Multi-word entries are matched as token sequences.

export const POSITIVE_TERMS: readonly string[] = [
  'beat', 'beats', 'exceeded', 'exceeds', 'outperform', 'outperformed', 'record', 'strong',
  'stronger', 'strength', 'robust', 'growth', 'grew', 'grow', 'growing', 'increase', 'increased',
  'rise', 'rose', 'gain', 'gains', 'improve', 'improved', 'improvement', 'expand', 'expanded',
  'expansion', 'upgrade', 'upgraded', 'profit', 'profitable', 'profitability', 'surge', 'surged',
  'accelerate', 'accelerated', 'momentum', 'tailwind', 'tailwinds', 'upside', 'raised guidance',
  'raise guidance', 'higher', 'up', 'boost', 'boosted', 'rebound', 'recovered', 'recovery',
  'resilient', 'solid', 'healthy', 'favorable', 'favourable', 'success', 'successful', 'win', 'won',
  'award', 'awarded', 'dividend increase', 'buyback', 'margin expansion', 'ahead of expectations',
  'above expectations', 'above consensus', 'optimistic', 'confident', 'positive', 'best',
  'exceptional', 'efficient', 'efficiency', 'synergies', 'deleveraging', 'upbeat', 'rally',
  'rallied', 'benefit', 'benefited', 'opportunity', 'opportunities', 'attractive',
];

export const NEGATIVE_TERMS: readonly string[] = [
  'miss', 'missed', 'misses', 'below expectations', 'below consensus', 'decline', 'declined',
  'declining', 'decrease', 'decreased', 'drop', 'dropped', 'fall', 'fell', 'falling', 'loss',
  'losses', 'weak', 'weaker', 'weakness', 'impairment', 'impaired', 'writedown', 'write down',
  'downgrade', 'downgraded', 'lawsuit', 'litigation', 'investigation', 'fraud', 'restatement',
  'restructuring', 'layoff', 'layoffs', 'job cuts', 'default', 'defaulted', 'bankruptcy',
  'insolvency', 'shortfall', 'headwind', 'headwinds', 'pressure', 'pressured', 'slowdown', 'slow',
  'slowed', 'contraction', 'contracted', 'down', 'lowered guidance',
  'cut guidance', 'withdrew guidance', 'warning', 'profit warning', 'deteriorate', 'deteriorated',
  'deterioration', 'volatile', 'volatility', 'uncertainty', 'uncertain', 'risk', 'risks',
  'adverse', 'adversely', 'negative', 'worse', 'worst', 'challenging', 'challenges', 'difficult',
  'disappointing', 'disappointed', 'plunge', 'plunged', 'slump', 'slumped', 'tumble', 'tumbled',
  'erosion', 'eroded', 'dilution', 'dilutive', 'delinquency', 'delinquencies', 'charge-off',
  'charge-offs', 'recall', 'delay', 'delayed', 'suspend', 'suspended', 'concern', 'concerns',
  'underperform', 'underperformed', 'breach', 'penalty', 'fine', 'fined', 'sanctions',
];

/** Words that flip the polarity of a lexicon hit within the next three tokens. */
export const NEGATORS: readonly string[] = ['not', 'no', 'never', 'without', 'neither', 'nor', 'didn', 'doesn', 'isn', 'wasn', 'weren', 'fail', 'failed'];

export type SentimentLabel = 'negative' | 'neutral' | 'positive';
export const SENTIMENT_LABELS: readonly SentimentLabel[] = ['negative', 'neutral', 'positive'];
