// Importing this module registers every kernel family (and the autograd hooks they provide).
export * from './elementwise.js';
export * from './rmsnorm.js';
export * from './rope.js';
export * from './swiglu.js';
export * from './crossentropy.js';
export * from './linear-crossentropy.js';
export * from './matmul.js';
export { gemm, noteWeightRange, fitsF16, type GemmArgs, type GemmOperand } from './gemm.js';
export { saveActivation } from './activations.js';
export * from './reduce.js';
export * from './embedding.js';
export * from './nf4.js';
export * from './lora.js';
export * from './optim.js';
export * from './attention.js';
export * from './sampling.js';
export * from './decode.js';
