// The NBD server's public interface, for commands and other subsystems.
export type { Backend, BackendCapabilities, BlockExtent, WriteOptions, ZeroOptions } from './backend';
export { FileBackend, type FileBackendOptions } from './backend-file';
export { MemoryBackend } from './backend-memory';
export { readOnlyBackend } from './backend-read-only';
export { BackendError, nbdErrorOf } from './errno';
export { parseListenAddress, formatListenAddress, nbdUri, ListenAddressError, type ListenAddress } from './listen';
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
export { NbdSession, type SessionOptions, type ExportTable } from './session';
export { streamTransport, type NbdTransport, type TransportHandlers } from './transport';
