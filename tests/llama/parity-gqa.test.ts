// transformers/PEFT parity on the gqa-f32 reference fixture (see parity.ts).
import { parityTests } from './parity.js';

parityTests('gqa-f32', { emulatedMatrixCore: true });
