// Reading a whole small HTTP body (a manifest, an answer, an error) with a
// cap: either side may be hostile, so neither buffers more than it expects.

/** The body's bytes; `tooLarge()` is thrown as soon as more than `limit` bytes arrived. */
export async function readCappedBody(stream: AsyncIterable<Buffer>, limit: number, tooLarge: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += chunk.length;
    if (n > limit) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
