// The NBD server's public interface: what commands and other subsystems
// (the `server` command's disk service) use. Everything else in src/nbd is
// internal to the server; tests reach into it directly.
export type { Backend, BackendCapabilities, BlockExtent, WriteOptions, ZeroOptions } from './backend';
export { FileBackend, type FileBackendOptions } from './backend-file';
export { MemoryBackend, type MemoryBackendOptions } from './backend-memory';
export { readOnlyBackend } from './backend-read-only';
export { BackendError } from './errno';
export { parseListenAddress, formatListenAddress, nbdUri, ListenAddressError, type ListenAddress } from './listen';
export { NBD_DEFAULT_PORT } from './protocol';
export { CLIENT_DISCONNECTED } from './session';
export {
  startNbdServer,
  DEFAULT_BLOCK_SIZE,
  type NbdServerOptions,
  type NbdServerHandle,
  type NbdConnectionInfo,
  type NbdPeer,
  type NbdAdmission,
  type NbdExport,
  type SessionStats,
} from './server';
