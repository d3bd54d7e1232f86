// The data and template settings of `eval`, `generate` and `serve`: the same ones `train` reads
// from its config (data.columns, data.template, data.preprocess), taken from a run folder's
// resolved-config.yaml (--run, or the one beside the --model / --adapter folder), then overridden
// by --template and --column (src/pipeline/run-config.ts reads the run's). So the prompt a model was
// trained on is the prompt it is evaluated and served with.
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import {
  type ColumnMapping,
  DEFAULT_COLUMNS,
  RESOLVED_CONFIG_NAME,
  TEMPLATE_NAMES,
  type TemplateName,
} from '../pipeline/config.js';
import type { PreprocessOptions } from '../pipeline/data/preprocess.js';
import { DATA_FORMATS, type DataFormat } from '../pipeline/data/readers.js';
import { runDataSettings } from '../pipeline/run-config.js';
import { collect } from './common.js';

export interface DataCliOptions {
  run?: string;
  template?: string;
  column?: string[];
  format?: string;
}

export interface DataSettings {
  columns: ColumnMapping;
  template: TemplateName;
  preprocess: PreprocessOptions;
  format: DataFormat | null;
  /** The resolved-config.yaml the settings came from, or null (defaults and flags only). */
  from: string | null;
}

export function addDataOptions(cmd: Command, opts: { format?: boolean } = {}): Command {
  cmd
    .option(
      '--run <dir>',
      `use the data settings (data.columns, data.template, data.preprocess) of this run folder's ${RESOLVED_CONFIG_NAME} (default: the one beside the --adapter or --model folder, if any)`,
    )
    .option(
      '--template <name>',
      `the training template: ${TEMPLATE_NAMES.join(', ')} (overrides the run's data.template)`,
    )
    .option(
      '--column <field=column>',
      'read template field FIELD from column COLUMN, as data.columns does (repeatable)',
      collect,
      [],
    );
  if (opts.format)
    cmd.option('--format <format>', `data file format: ${DATA_FORMATS.join(', ')} (default: from the extension)`);
  return cmd;
}

export function dataSettings(o: DataCliOptions, dirs: readonly (string | undefined)[]): DataSettings {
  const run = runDataSettings(o.run, dirs);
  const { from, columns, preprocess } = run;
  let template = run.template;
  if (o.template !== undefined) {
    if (!(TEMPLATE_NAMES as readonly string[]).includes(o.template))
      throw new InputError(`expected one of ${TEMPLATE_NAMES.join(', ')}, got ${JSON.stringify(o.template)}`, {
        flag: 'template',
      });
    template = o.template as TemplateName;
  }
  for (const spec of o.column ?? []) {
    const eq = spec.indexOf('=');
    const field = spec.slice(0, eq).trim();
    const col = spec.slice(eq + 1).trim();
    if (eq <= 0 || col === '')
      throw new InputError(`expected FIELD=COLUMN, got ${JSON.stringify(spec)}`, { flag: 'column' });
    if (!Object.hasOwn(DEFAULT_COLUMNS, field))
      throw new InputError(
        `unknown field ${JSON.stringify(field)}; expected one of ${Object.keys(DEFAULT_COLUMNS).join(', ')}`,
        { flag: 'column' },
      );
    columns[field as keyof ColumnMapping] = col;
  }
  let format: DataFormat | null = null;
  if (o.format !== undefined) {
    if (!(DATA_FORMATS as readonly string[]).includes(o.format))
      throw new InputError(`expected one of ${DATA_FORMATS.join(', ')}, got ${JSON.stringify(o.format)}`, {
        flag: 'format',
      });
    format = o.format as DataFormat;
  }
  return { columns, template, preprocess, format, from };
}

/** The one line saying where the settings came from (printed on stderr), or null when nothing was read. */
export function describeSettings(s: DataSettings): string | null {
  if (s.from === null) return null;
  const mapped = Object.entries(s.columns).filter(([k, v]) => k !== v);
  return `finllm: data settings of ${s.from}: template ${s.template}${mapped.length ? `, columns {${mapped.map(([k, v]) => `${k}: ${v}`).join(', ')}}` : ''}`;
}
