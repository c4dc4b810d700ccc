// The commented config that `stiefelctl init` writes, and the JSON Schema
// beside it, both made from the declaration (settings.ts): every key is shown
// with its default, or commented out with an example where it has none.
import { jsonSchemaOf, templateOf, type JsonSchema } from './declare';
import { SETTINGS, templateScalar } from './settings';
import { VERSION } from '../version';

/** The schema's file name, next to the config (editors with a YAML language server read it). */
export const CONFIG_SCHEMA_FILE = 'config.schema.json';

export interface TemplateOptions {
  /** Value written for `secret` (relative paths are relative to the config file). */
  secret: string;
  /** Where the JSON Schema is, relative to the config file; omitted: no schema line. */
  schema?: string;
}

export function configTemplate(options: TemplateOptions): string {
  const header = [
    ...(options.schema ? [`# yaml-language-server: $schema=${options.schema}`] : []),
    "# stiefelsystem configuration (YAML), written by 'stiefelctl init'.",
    "# The same file serves the laptop ('stiefelctl server') and the desktop",
    "# ('stiefelctl client'). Relative paths are relative to this file.",
    '# Every key is optional; the values shown are the defaults.',
    '',
  ];
  return header.join('\n') + '\n' + templateOf(SETTINGS.fields, new Map([['secret', templateScalar(options.secret)]]));
}

export function configJsonSchema(): JsonSchema {
  return jsonSchemaOf(SETTINGS.fields, { title: `stiefelsystem ${VERSION} configuration (config.yaml)` });
}
