// Each kernel family's benchmark cases (one import line per family).
import './elementwise.js';
