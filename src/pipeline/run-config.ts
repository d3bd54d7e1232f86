// The config of a verb that writes a run folder (`train`, `data`, `pipeline`): --config, else
// configs/default.yaml in the working directory, else the one shipped with finllm.
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, DEFAULT_CONFIG_FILE, type ResolvedConfig } from './config.js';

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
