// Each kernel family's benchmark cases (one import line per family).
import './elementwise.js';
import './norm.js';
import './rope.js';
import './swiglu.js';
import './crossentropy.js';
import './matmul.js';
import './reduce.js';
import './optim.js';
import './nf4.js';
import './lora.js';
import './attention.js';
import './decode.js';
import './sgmatrix.js';
