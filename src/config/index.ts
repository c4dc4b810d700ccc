export * from './schema';
export { loadConfig, parseConfigText } from './load';
export { configJsonSchema, configTemplate, CONFIG_SCHEMA_FILE } from './template';
