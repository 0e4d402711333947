import path from 'node:path';

/** Extensions and content types we try to decode; anything else is skipped with a logged reason. */
const imageExtensions = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif', '.heic', '.heif', '.bmp', '.svg']);

export function looksLikeImage(name: string, contentType: string): boolean {
  if (contentType.toLowerCase().startsWith('image/')) return true;
  return imageExtensions.has(path.extname(name).toLowerCase());
}

/** Sidecar files carry captions/labels for the image beside them; they are never images. */
export function isSidecar(name: string): boolean {
  const ext = path.extname(name).toLowerCase();
  return ext === '.json' || ext === '.txt';
}
