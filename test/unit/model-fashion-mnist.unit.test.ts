import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { FASHION_MNIST_CLASSES, fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';

describe('Fashion-MNIST reader', () => {
  it('reads images and labels with offset and limit', async () => {
    const all = await readFashionMnist({ split: 'test', limit: 6 });
    const part = await readFashionMnist({ split: 'test', offset: 2, limit: 3 });
    expect(all.images).toHaveLength(6);
    expect(all.images[0]).toHaveLength(28 * 28);
    expect(part.labels).toEqual(all.labels.slice(2, 5));
    expect(part.images[0]).toEqual(all.images[2]);
    expect(all.labels.every((l) => l >= 0 && l < 10)).toBe(true);
    // The first test image of Fashion-MNIST is an ankle boot.
    expect(all.classNames[all.labels[0]!]).toBe('Ankle boot');
    expect(all.classNames).toEqual([...FASHION_MNIST_CLASSES]);
    // Real pictures: a black background with a brighter object.
    expect(Math.max(...all.images[0]!)).toBeGreaterThan(200);
    expect(all.images[0]![0]).toBe(0);
  });

  it('writes a 28×28 grey PNG that decodes back to the same pixels', async () => {
    const { images } = await readFashionMnist({ split: 'test', limit: 1 });
    const png = await fashionMnistPng(images[0]!);
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 28, 28, 1]);
    const { data } = await sharp(png).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
    expect(new Uint8Array(data)).toEqual(images[0]);
  });

  it('rejects a bad offset and a wrongly sized image', async () => {
    await expect(readFashionMnist({ split: 'test', offset: 10_001 })).rejects.toThrow(/offset 10001 is outside 0..10000/);
    await expect(fashionMnistPng(new Uint8Array(10))).rejects.toThrow(/expected 784 pixels, got 10/);
  });
});
