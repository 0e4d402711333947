/** `text` cut to at most `maxBytes` of UTF-8 (never inside a character), with `...` when cut. */
export function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= maxBytes
    ? text
    : `${bytes
        .subarray(0, maxBytes - 3)
        .toString('utf8')
        .replace(/\uFFFD$/, '')}...`;
}
