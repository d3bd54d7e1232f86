#!/usr/bin/env node
// finllm command line: each verb lives in its own file under src/cli/ and exports
// `register(program)`; this file only wires them together. Verbs parse arguments and call the
// library modules; they hold no logic of their own.
import { followRelayParent, relayStderr, stderrNeedsRelay } from './stderr-relay.js';

// Dawn's two harmless limit notices are dropped from stderr: in this process where stderr can be
// reopened, else by relaying stderr through a parent process (src/cli/stderr-relay.ts). Decided
// first, so a relaying parent loads nothing else; the verbs are imported below.
if (stderrNeedsRelay()) await relayStderr();
followRelayParent();
const { Command } = await import('commander');
const { runCli } = await import('./common.js');
(await import('../engine/device.js')).filterDawnNotices(true);

const program = new Command();
program
  .name('finllm')
  .description('Fine-tune Llama-family models on financial text with QLoRA on a WebGPU engine')
  .version('0.1.0');

// Verb registrations (one line each).
(await import('./data.js')).register(program);
(await import('./score.js')).register(program);
(await import('./compare.js')).register(program);
(await import('./train.js')).register(program);
(await import('./eval.js')).register(program);
(await import('./generate.js')).register(program);
(await import('./export.js')).register(program);
(await import('./init-model.js')).register(program);
(await import('./pipeline.js')).register(program);
(await import('./serve.js')).register(program);
(await import('./tokenizer.js')).register(program);

await runCli(program, process.argv);
