// Reading the config file: the one place a config is resolved from a file.
import { promises as fs } from 'node:fs';
import { parseDocument } from 'yaml';
import { describeErrno, errnoCode, isErrnoException } from '../errors';
import { ConfigError, validateConfig, type Config } from './schema';

const MAX_ALIASES = 100;

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
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (err) {
    // The yaml package refuses documents whose aliases expand beyond the limit (a "billion laughs").
    throw new ConfigError(`config ${file}: its YAML aliases expand too far (more than ${MAX_ALIASES} alias uses): write the values out instead of *aliases`, { cause: err });
  }
  return validateConfig(raw, file);
}

export async function loadConfig(file: string): Promise<Config> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new ConfigError(`config ${file} does not exist: run 'stiefelctl init --config ${file}' to write one`, { cause: err });
    }
    if (errnoCode(err) === 'EISDIR') throw new ConfigError(`config ${file} is a directory: pass the config file itself (e.g. --config ${file.replace(/\/+$/, '')}/config.yaml)`, { cause: err });
    throw new ConfigError(`cannot read config ${file}: ${isErrnoException(err) ? describeErrno(err) : String(err)}`, { cause: err });
  }
  return parseConfigText(text, file);
}
