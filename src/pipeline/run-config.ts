// Run configs. The config of a verb that writes a run folder (`train`, `data`, `pipeline`):
// --config, else configs/default.yaml in the working directory, else the one shipped with finllm.
// The data settings a run was trained with (`eval`, `generate`, `serve`): its resolved-config.yaml.
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../errors.js';
import {
  type ColumnMapping,
  DEFAULT_COLUMNS,
  DEFAULT_CONFIG_FILE,
  loadConfig,
  RESOLVED_CONFIG_NAME,
  type ResolvedConfig,
  type TemplateName,
} from './config.js';
import { DEFAULT_PREPROCESS, type PreprocessOptions } from './data/preprocess.js';

/** The folder finllm is installed in (dist/src/pipeline/run-config.js → package root). */
const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** configs/default.yaml in the working directory, else the one shipped with finllm (`bundled`). */
export function defaultConfigFile(): { file: string; bundled: boolean } {
  const local = resolve(DEFAULT_CONFIG_FILE);
  if (existsSync(local)) return { file: local, bundled: false };
  return { file: join(PACKAGE_ROOT, DEFAULT_CONFIG_FILE), bundled: true };
}

export interface RunConfigOptions {
  config?: string;
  env?: string;
  set: string[];
}

/**
 * The config of a verb that writes a run folder: --config, else configs/default.yaml here, else
 * the bundled default. The bundled default's output folder lies inside the installation; it is
 * moved to the same relative place under the current directory (runs/default), so finllm never
 * writes into its own package.
 */
export function loadRunConfig(opts: RunConfigOptions): ResolvedConfig {
  const { file, bundled } = opts.config !== undefined ? { file: opts.config, bundled: false } : defaultConfigFile();
  const cfg = loadConfig({ file, ...(opts.env !== undefined ? { env: opts.env } : {}), sets: opts.set });
  if (bundled) {
    const inPackage = relative(resolve(PACKAGE_ROOT), cfg.output.dir);
    if (!inPackage.startsWith('..') && !isAbsolute(inPackage)) cfg.output.dir = resolve(inPackage);
  }
  return cfg;
}

/** The resolved-config.yaml that describes how `dirs` (adapter, model) were trained: `run`'s, else one beside them. */
function findRunConfig(run: string | undefined, dirs: readonly (string | undefined)[]): string | null {
  if (run !== undefined) {
    const file = join(run, RESOLVED_CONFIG_NAME);
    if (!existsSync(file))
      throw new InputError(
        `no ${RESOLVED_CONFIG_NAME} in the run folder (expected the output.dir of a finllm train or pipeline run)`,
        { file: run, flag: 'run' },
      );
    return file;
  }
  for (const d of dirs) {
    if (d === undefined) continue;
    const file = join(dirname(d), RESOLVED_CONFIG_NAME);
    if (existsSync(file)) return file;
  }
  return null;
}

/** The data settings a model was trained with: those of the run folder `run`, else of one beside `dirs`, else the defaults (`from` null). */
export function runDataSettings(
  run: string | undefined,
  dirs: readonly (string | undefined)[],
): { columns: ColumnMapping; template: TemplateName; preprocess: PreprocessOptions; from: string | null } {
  const from = findRunConfig(run, dirs);
  if (from === null) return { columns: { ...DEFAULT_COLUMNS }, template: 'auto', preprocess: DEFAULT_PREPROCESS, from };
  const cfg = loadConfig({ file: from, env: '' });
  return {
    columns: { ...cfg.data.columns },
    template: cfg.data.template,
    preprocess: {
      unicode: cfg.data.preprocess.unicode,
      whitespace: cfg.data.preprocess.whitespace,
      speakerTurns: cfg.data.preprocess.speaker_turns,
    },
    from,
  };
}
