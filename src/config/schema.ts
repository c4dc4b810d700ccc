// The configuration: its typed shape, its defaults and its validation, all
// derived from the one declaration in settings.ts.
//
// Pure: takes the parsed YAML value and the file name (for messages) and
// returns a frozen, fully resolved object, or throws a ConfigError that names
// the key, the file and what is allowed. Paths are resolved against the
// directory of the config file.
import { isAbsolute, join, resolve } from 'node:path';
import { readTop, type SectionValue } from './declare';
import { SETTINGS } from './settings';

export { ConfigError } from './declare';
export {
  ATTACH_MODES,
  DEFAULT_DISCOVERY_PORT,
  DEFAULT_NBD_PORT,
  DEFAULT_PAYLOAD_PORT,
  DEFAULT_WIREGUARD_PORT,
  IFNAME_PATTERN,
  INITRAMFS_FAMILIES,
  type AttachMode,
  type InitramfsFamily,
} from './settings';

export const DEFAULT_CONFIG_PATH = '/etc/stiefelsystem/config.yaml';

type Settings = SectionValue<typeof SETTINGS.fields>;

export type Config = Settings & {
  /** The file this came from, or undefined for built-in defaults. */
  readonly file: string | undefined;
};

export type NetworkConfig = Config['network'];
export type DiscoveryConfig = Config['discovery'];
export type ServerConfig = Config['server'];
export type ClientConfig = Config['client'];

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * Validates a parsed config document. `file` is used in messages and to
 * resolve relative paths; pass undefined for the built-in defaults (paths are
 * then relative to `baseDir`).
 */
export function validateConfig(raw: unknown, file: string | undefined, baseDir = '/etc/stiefelsystem'): Config {
  const settings = readTop(SETTINGS.fields, raw, file ?? '(defaults)', file ? resolve(file, '..') : baseDir);
  return deepFreeze({ file, ...settings });
}

/** Where the config lives: --config, else $STIEFEL_CONFIG, else the default. */
export function configPath(flag: string | undefined, env: Readonly<Record<string, string | undefined>>, cwd: string): string {
  const p = flag ?? env.STIEFEL_CONFIG ?? DEFAULT_CONFIG_PATH;
  return isAbsolute(p) ? p : join(cwd, p);
}
