// Importing this module registers every kernel family (and the autograd hooks they provide).
export * from './elementwise.js';
export * from './nf4.js';
