import { constants, promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseCommandArgs, type Command } from '../cli/command';
import { configJsonSchema, configPath, configTemplate, loadConfig, parseConfigText, CONFIG_SCHEMA_FILE, DEFAULT_CONFIG_PATH } from '../config';
import { generateSecret, writeSecretFile } from '../crypto/secret-file';
import { StiefelError, errnoCode } from '../errors';
import { makeDirectory } from '../make-dir';

export const initCommand: Command = {
  name: 'init',
  summary: 'write a commented config and a new shared secret',
  help: `Usage: stiefelctl init [--config PATH] [--force]

Writes a commented YAML config (unless one exists at PATH), its JSON Schema
(config.schema.json, for editors with a YAML language server) and a new shared
secret: 32 random bytes, mode 0600, at the path the config names (by default
'secret' next to the config). The laptop and the desktop's stiefelOS image
must hold the same secret.

Options:
  --config PATH   config file (default $STIEFEL_CONFIG, else ${DEFAULT_CONFIG_PATH})
  --force         replace an existing secret (every desktop image then needs the new one)

Examples:
  stiefelctl init
  stiefelctl init --config ./stiefel.yaml
`,
  async run(argv, ctx) {
    const { values } = parseCommandArgs('init', argv, { config: { type: 'string' }, force: { type: 'boolean' } }, { min: 0, max: 0, names: '' });
    const file = configPath(values.config, ctx.env, ctx.cwd);
    let existing = true;
    try {
      await fs.lstat(file);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new StiefelError('E_CONFIG', `cannot check ${file}: ${(err as Error).message}`, { cause: err });
      existing = false;
    }
    let wroteConfig = false;
    if (!existing) {
      // Refuse before writing anything if the default secret is already there.
      const text = configTemplate({ secret: 'secret', schema: CONFIG_SCHEMA_FILE });
      await makeDirectory(dirname(file), { what: "the config's directory" });
      const planned = parseConfigText(text, file);
      if (!values.force) await refuseExistingSecret(planned.secret);
      try {
        const handle = await fs.open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
        try {
          await handle.writeFile(text);
        } finally {
          await handle.close();
        }
      } catch (err) {
        throw new StiefelError('E_CONFIG', `cannot write the config ${file}: ${(err as Error).message}`, { cause: err });
      }
      wroteConfig = true;
      // For editors with a YAML language server: completion and checks as you type.
      await fs.writeFile(join(dirname(file), CONFIG_SCHEMA_FILE), `${JSON.stringify(configJsonSchema(), null, 2)}\n`, { mode: 0o644 }).catch((err: unknown) => {
        ctx.log.warn(`could not write ${CONFIG_SCHEMA_FILE} next to the config (editor completion only): ${(err as Error).message}`);
      });
    }
    const config = await loadConfig(file);
    try {
      await writeSecretFile(config.secret, generateSecret(), { force: values.force ?? false });
    } catch (err) {
      if (wroteConfig) await fs.rm(file, { force: true });
      throw err;
    }
    ctx.log.info(wroteConfig ? `wrote the config ${file}` : `kept the existing config ${file}`);
    ctx.log.info(`wrote a new shared secret to ${config.secret} (mode 0600); copy it to the desktop's stiefelOS image`);
  },
};

async function refuseExistingSecret(path: string): Promise<void> {
  try {
    await fs.lstat(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw new StiefelError('E_SECRET_WRITE', `cannot check ${path}: ${(err as Error).message}`, { cause: err });
  }
  throw new StiefelError('E_SECRET_EXISTS', `the secret file ${path} already exists; keep it, or pass --force to replace it (then copy it to every client again)`);
}
