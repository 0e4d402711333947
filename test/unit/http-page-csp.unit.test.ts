import { promises as fs } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { contentSecurityPolicy } from '../../shared/http/security.js';

/**
 * The page must keep working under the CSP the app sends: no inline script or style, no inline
 * event handlers, no eval, and every URL it fetches or shows is on its own origin.
 */
const web = new URL('../../web/', import.meta.url);

describe('the page under the Content-Security-Policy', () => {
  it('has no inline script, inline style or inline event handler', async () => {
    const html = await fs.readFile(new URL('index.html', web), 'utf8');
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attrs, body] of scripts) {
      expect(attrs).toMatch(/\ssrc="\/[^"]+"/);
      expect(body!.trim()).toBe('');
    }
    expect(html).not.toMatch(/<style\b/i);
    expect(html).not.toMatch(/\sstyle=/i);
    expect(html).not.toMatch(/\son[a-z]+=/i);
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//i);
  });

  it('uses no eval, inline styles or foreign URLs in its script', async () => {
    const js = await fs.readFile(new URL('app.js', web), 'utf8');
    expect(js).not.toMatch(/\beval\(|new Function\(|innerHTML|\.style\.|setAttribute\(['"]style/);
    expect(js).not.toMatch(/https?:\/\//);
  });

  it('allows what the page does (own scripts, styles, thumbnails, fetches) and nothing from elsewhere', () => {
    const d = contentSecurityPolicy();
    expect(d['script-src']).toEqual(["'self'"]);
    expect(d['style-src']).toEqual(["'self'"]);
    expect(d['img-src']).toEqual(["'self'"]);
    expect(d['connect-src']).toEqual(["'self'"]);
    expect(d['frame-ancestors']).toEqual(["'none'"]);
    expect(d['object-src']).toEqual(["'none'"]);
  });
});
