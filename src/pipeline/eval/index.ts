// Public surface of the evaluation stage.

export { writeFileAtomic } from '../../io/atomic.js';
export {
  type BleuResult,
  type BleuStats,
  bleuFromStats,
  bleuStats,
  corpusBleu,
  sentenceBleu,
  tokenize13a,
} from './bleu.js';
export { chrfFromStats, chrfStats, corpusChrf, sentenceChrf } from './chrf.js';
export {
  type ClassificationReport,
  classificationReport,
  normalizeGeneratedLabel,
  parseGoldLabel,
} from './classification.js';
export {
  type ClassificationComparison,
  type CompareOptions,
  type Comparison,
  compareResults,
  type ExampleDelta,
  type LabelledExample,
  type MetricComparison,
  type OutputSpread,
  type Verdict,
} from './compare.js';
export { exactMatch, normalizeAnswer } from './exact.js';
export { NEGATIVE_TERMS, POSITIVE_TERMS, SENTIMENT_LABELS, type SentimentLabel } from './lexicon.js';
export {
  DEFAULT_GROUPS,
  higherIsBetter,
  METRIC_GROUPS,
  METRICS,
  type MetricGroup,
  type MetricInfo,
  metricInfo,
  parseGroups,
  type ScoreInput,
  type ScoreOptions,
  type ScoreResult,
  scoreExamples,
} from './metrics.js';
export {
  distinctNumbers,
  extractNumbers,
  type NumberKind,
  type NumberLikeJunk,
  type NumberMention,
  numberLikeJunk,
  sameNumber,
} from './numbers.js';
export {
  hallucinatedNumberRate,
  hallucinatedNumbersDetail,
  numericFidelity,
  numericFidelityDetail,
} from './numeric.js';
export { porterStem } from './porter.js';
export {
  finalTrainLoss,
  metricRange,
  REPORT_FORMAT,
  type ReportPaths,
  renderHtml,
  renderMarkdown,
  writeReport,
} from './report.js';
export {
  parseResults,
  RESULTS_FORMAT,
  type ResultExample,
  type Results,
  ResultsSchema,
  readResults,
  readScoreInput,
  readTrainingLog,
  type TrainingLogPoint,
  writeResults,
} from './results.js';
export {
  lcsLength,
  type RougeOptions,
  type RougeResult,
  type RougeScore,
  rouge,
  rougeL,
  rougeN,
  rougeTokenize,
} from './rouge.js';
export { type BertScore, bertScore, cosine, type EmbeddingProvider, embeddingCosine, greedyMatch } from './semantic.js';
export { type LexiconSentiment, lexiconLabelAccuracy, lexiconSentiment, sentimentAgreement } from './sentiment.js';
export * from './stats.js';
export { FINANCIAL_TERMS, financialTermsIn, termCoverage } from './terms.js';
export {
  atFloor,
  decideVerdict,
  type Floor,
  floorOf,
  NEAR_FLOOR,
  PRIMARY_BY_KIND,
  type PrimaryEvidence,
  primaryMetrics,
  type SuiteKind,
  type SuiteVerdict,
  type SuiteVerdictResult,
  suiteKind,
  verdictLine,
} from './verdict.js';
