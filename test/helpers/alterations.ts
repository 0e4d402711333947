import sharp from 'sharp';

/**
 * The alterations the near-duplicate acceptance test applies to indexed images, deterministic per
 * index i so failures reproduce.
 */
export async function alterPhotograph(input: Buffer, i: number): Promise<Buffer> {
  const meta = await sharp(input).metadata();
  const w = meta.width!;
  const h = meta.height!;
  const cw = Math.round(w * 0.9);
  const ch = Math.round(h * 0.9);
  const factors = [0.5, 0.75, 1.25, 1.6, 2];
  const factor = factors[i % factors.length]!;
  const quality = 70 + ((i * 7) % 21); // 70..90
  return sharp(input)
    .extract({ left: Math.floor((w - cw) / 2), top: Math.floor((h - ch) / 2), width: cw, height: ch })
    .resize(Math.round(cw * factor), Math.round(ch * factor))
    .jpeg({ quality })
    .toBuffer();
}

export async function alterFashionItem(input: Buffer, i: number): Promise<Buffer> {
  const factor = 1.5 + (i % 6) * 0.1; // 1.5 .. 2.0
  const size = Math.round(28 * factor);
  return sharp(input).resize(size, size).jpeg({ quality: 90 }).toBuffer();
}
