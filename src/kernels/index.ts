// Importing this module registers every kernel family (and the autograd hooks they provide).

export { saveActivation } from './activations.js';
export * from './attention.js';
export * from './crossentropy.js';
export * from './decode.js';
export * from './elementwise.js';
export * from './embedding.js';
export * from './finite.js';
export { fitsF16, type GemmArgs, type GemmOperand, gemm, noteWeightRange } from './gemm.js';
export { type GemvOptions, gemv } from './gemv.js';
export * from './linear-crossentropy.js';
export * from './lora.js';
export * from './matmul.js';
export * from './nf4.js';
export * from './optim.js';
export * from './reduce.js';
export * from './rmsnorm.js';
export * from './rope.js';
export * from './sampling.js';
export * from './swiglu.js';
export { type WeightFormat, weightBindingCount, weightFormatOf } from './weight-formats.js';
