// transformers/PEFT parity on the mqa-bf16-tied-llama3rope reference fixture (see parity.ts).
import { parityTests } from './parity.js';

parityTests('mqa-bf16-tied-llama3rope');
