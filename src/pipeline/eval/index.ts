// Public surface of the evaluation stage.
export { rouge, rougeTokenize, rougeN, rougeL, lcsLength, type RougeResult, type RougeScore, type RougeOptions } from './rouge.js';
export { porterStem } from './porter.js';
export { tokenize13a, corpusBleu, sentenceBleu, bleuStats, bleuFromStats, type BleuResult, type BleuStats } from './bleu.js';
export { corpusChrf, sentenceChrf, chrfStats, chrfFromStats } from './chrf.js';
export { exactMatch, normalizeAnswer } from './exact.js';
export { extractNumbers, sameNumber, distinctNumbers, type NumberMention, type NumberKind } from './numbers.js';
export { numericFidelity, numericFidelityDetail, hallucinatedNumberRate, hallucinatedNumbersDetail } from './numeric.js';
export { lexiconSentiment, sentimentAgreement, lexiconLabelAccuracy, type LexiconSentiment } from './sentiment.js';
export { POSITIVE_TERMS, NEGATIVE_TERMS, SENTIMENT_LABELS, type SentimentLabel } from './lexicon.js';
export { termCoverage, financialTermsIn, FINANCIAL_TERMS } from './terms.js';
export { classificationReport, normalizeGeneratedLabel, parseGoldLabel, type ClassificationReport } from './classification.js';
export { cosine, embeddingCosine, bertScore, greedyMatch, type EmbeddingProvider, type BertScore } from './semantic.js';
export * from './stats.js';
export { scoreExamples, parseGroups, METRICS, METRIC_GROUPS, DEFAULT_GROUPS, higherIsBetter, metricInfo, type MetricGroup, type MetricInfo, type ScoreInput, type ScoreResult, type ScoreOptions } from './metrics.js';
export { ResultsSchema, RESULTS_FORMAT, parseResults, readResults, writeResults, readScoreInput, readTrainingLog, type Results, type ResultExample, type TrainingLogPoint } from './results.js';
export { compareResults, type Comparison, type CompareOptions, type MetricComparison, type ExampleDelta, type Verdict } from './compare.js';
export { writeReport, renderHtml, renderMarkdown, type ReportPaths } from './report.js';
export { writeFileAtomic } from './fsutil.js';
