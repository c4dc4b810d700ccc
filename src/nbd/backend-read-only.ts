// Wraps a backend so that nothing can change it: writes, trims and zeroing
// fail with EPERM ("it SHOULD return NBD_EPERM if it receives a write or
// trim request on a read-only export") and the flags say read-only.
import { BackendError } from './errno';
import type { Backend, BackendCapabilities, BlockExtent } from './backend';
import { NBD_EPERM } from './protocol';

export function readOnlyBackend(inner: Backend): Backend {
  const capabilities: BackendCapabilities = {
    ...inner.capabilities,
    readOnly: true,
    fua: false,
    trim: false,
    zero: false,
    fastZero: false,
  };
  const refuse = async (): Promise<never> => {
    throw new BackendError(NBD_EPERM, 'the export is read-only');
  };
  return {
    size: inner.size,
    capabilities,
    description: `${inner.description}, read-only`,
    pread: (buf: Buffer, offset: number) => inner.pread(buf, offset),
    pwrite: refuse,
    flush: () => inner.flush(),
    trim: refuse,
    writeZeroes: refuse,
    cache: (offset: number, length: number) => inner.cache(offset, length),
    extents: (offset: number, length: number, maxExtents: number): Promise<BlockExtent[]> => inner.extents(offset, length, maxExtents),
    close: () => inner.close(),
  };
}
