#!/usr/bin/env node
// finllm command line: each verb lives in its own file under src/cli/ and exports
// `register(program)`; this file only wires them together. Verbs parse arguments and call the
// library modules; they hold no logic of their own.
import { Command } from 'commander';
import { runCli } from './common.js';
import { filterDawnNotices } from '../engine/device.js';

filterDawnNotices(true);

const program = new Command();
program
  .name('finllm')
  .description('Fine-tune Llama-family models on financial text with QLoRA on a WebGPU engine')
  .version('0.1.0');

// Verb registrations (one line each).
import { register as registerData } from './data.js'; registerData(program);
import { register as registerScore } from './score.js'; registerScore(program);
import { register as registerCompare } from './compare.js'; registerCompare(program);
import { register as registerTrain } from './train.js'; registerTrain(program);
import { register as registerEval } from './eval.js'; registerEval(program);
import { register as registerGenerate } from './generate.js'; registerGenerate(program);
import { register as registerExport } from './export.js'; registerExport(program);
import { register as registerInitModel } from './init-model.js'; registerInitModel(program);
import { register as registerPipeline } from './pipeline.js'; registerPipeline(program);

await runCli(program, process.argv);
