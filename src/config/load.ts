// Reading the config file: the one place a config is resolved from a file.
import { promises as fs } from 'node:fs';
import { parseDocument } from 'yaml';
import { errnoCode } from '../errors';
import { ConfigError, validateConfig, type Config } from './schema';

/** Parses YAML text and validates it; `file` names it in messages. */
export function parseConfigText(text: string, file: string): Config {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    const pos = first.linePos?.[0];
    const where = pos ? ` line ${pos.line} column ${pos.col}` : '';
    const what = first.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new ConfigError(`config ${file}${where}: invalid YAML: ${what}`);
  }
  return validateConfig(doc.toJS({ maxAliasCount: 100 }), file);
}

export async function loadConfig(file: string): Promise<Config> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new ConfigError(`config ${file} does not exist: run 'stiefelctl init --config ${file}' to write one`, { cause: err });
    }
    throw new ConfigError(`cannot read config ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseConfigText(text, file);
}
