// Public API of the data stage.
export { prepareData, createDataLoader, loaderOptions, type PreparedData, type PrepareOptions, type DataStageConfig } from './prepare.js';
export { DataLoader, makeRng, fingerprintExamples, type DataLoaderOptions, type DataLoaderState } from './loader.js';
export { formatReport, saveReport, lengthStats, type DataReport, type SplitStats, type LengthStats } from './stats.js';
export { readRows, readJsonl, readCsv, inferFormat, type DataFormat } from './readers.js';
export { preprocessText, normalizeUnicode, normalizeWhitespace, normalizeSpeakerTurns, type PreprocessOptions } from './preprocess.js';
export { applyTemplate, renderChatFallback, TEMPLATE_DESCRIPTIONS, TemplateProblem, type ConcreteTemplate } from './templates.js';
export { tokenizeExample, type TokenizeOptions } from './tokenize.js';
export { findDuplicates } from './dedup.js';
export * from './types.js';
