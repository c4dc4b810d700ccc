export * from './schema';
export { loadConfig, parseConfigText } from './load';
export { configTemplate } from './template';
