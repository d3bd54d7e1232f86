// Public API of the data stage.

export { findDuplicates } from './dedup.js';
export {
  DataLoader,
  type DataLoaderOptions,
  type DataLoaderState,
  fingerprintExamples,
  makeRng,
  wholeRowsBatch,
} from './loader.js';
export {
  createDataLoader,
  type DataStageConfig,
  loaderOptions,
  type PreparedData,
  type PrepareOptions,
  prepareData,
} from './prepare.js';
export {
  normalizeSpeakerTurns,
  normalizeUnicode,
  normalizeWhitespace,
  type PreprocessOptions,
  preprocessText,
} from './preprocess.js';
export { type DataFormat, inferFormat, readCsv, readJsonl, readRows } from './readers.js';
export { type DataReport, formatReport, type LengthStats, lengthStats, type SplitStats, saveReport } from './stats.js';
export {
  applyTemplate,
  type ConcreteTemplate,
  renderChatFallback,
  TEMPLATE_DESCRIPTIONS,
  TemplateProblem,
} from './templates.js';
export { type TokenizeOptions, tokenizeExample } from './tokenize.js';
export * from './types.js';
