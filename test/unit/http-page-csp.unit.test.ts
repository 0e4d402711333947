import { promises as fs } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { staticFiles } from '../../shared/http/search-app.js';
import { contentSecurityPolicy, helmetOptions } from '../../shared/http/security.js';

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

  it('uses no eval, inline styles or foreign URLs in any of its scripts', async () => {
    const scripts = (await fs.readdir(web)).filter((f) => f.endsWith('.js'));
    expect(scripts).toEqual(expect.arrayContaining(['app.js', 'search.js', 'upload.js', 'map.js', 'pipeline.js', 'models.js', 'charts.js', 'dom.js']));
    for (const file of scripts) {
      const js = await fs.readFile(new URL(file, web), 'utf8');
      expect(js, file).not.toMatch(/\beval\(|new Function\(|innerHTML|outerHTML|insertAdjacentHTML|\.style\.|setAttribute\(['"]style|cssText/);
      // Object URLs and data: URLs would need blob:/data: in img-src: the preview is drawn on a canvas instead.
      expect(js, file).not.toMatch(/createObjectURL|readAsDataURL|new Worker|new SharedWorker/);
      // The one foreign URL allowed is the SVG namespace (an identifier, never fetched).
      expect(js.replaceAll('http://www.w3.org/2000/svg', ''), file).not.toMatch(/https?:\/\//);
    }
  });

  it('serves every module the page imports, and only files of web/', async () => {
    const served = new Set(Object.values(staticFiles).map((f) => f.file));
    const files = (await fs.readdir(web)).filter((f) => /\.(js|css|html)$/.test(f));
    expect(new Set(files)).toEqual(served);
    for (const file of files.filter((f) => f.endsWith('.js'))) {
      const js = await fs.readFile(new URL(file, web), 'utf8');
      for (const [, spec] of js.matchAll(/(?:from|import\()\s*'\.\/([^']+)'/g)) expect(served, `${file} imports ${spec}`).toContain(spec);
    }
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

  it('with signed uploads to a bucket, the page may connect to that bucket only (security review, finding 9: CSP3 path matching)', () => {
    const connect = (o: ReturnType<typeof helmetOptions>) => o.contentSecurityPolicy.directives['connect-src'];
    const cloud = { mode: 'cloud', trustedProxyHops: 1 } as const;
    // https://www.w3.org/TR/CSP3/#match-paths: a source path ending in "/" matches every path under it, and no other.
    expect(connect(helmetOptions(cloud, { signedUploads: { bucket: 'p-iss-images' } }))).toEqual(["'self'", 'https://storage.googleapis.com/p-iss-images/']);
    expect(connect(helmetOptions({ mode: 'local', host: '127.0.0.1' }, { signedUploads: { bucket: 'p-iss-images' } }))).toEqual(["'self'"]);
    const { 'connect-src': _c, ...rest } = helmetOptions(cloud, { signedUploads: { bucket: 'p-iss-images' } }).contentSecurityPolicy.directives;
    const { 'connect-src': _d, ...base } = contentSecurityPolicy();
    expect(rest).toEqual(base);
    // A bucket name is never a way to add CSP syntax (Cloud Storage bucket naming: a-z, 0-9, -, _, .).
    for (const bad of ['p-iss-images; script-src *', 'P-ISS', 'a b', '', 'x'.repeat(223)]) {
      expect(() => contentSecurityPolicy({ signedUploads: { bucket: bad } }), bad).toThrow(/bucket name/);
    }
  });

  it('lets the page send files to Cloud Storage only in cloud mode with signed uploads (exactly https://storage.googleapis.com)', () => {
    const connect = (o: ReturnType<typeof helmetOptions>) => o.contentSecurityPolicy.directives['connect-src'];
    expect(connect(helmetOptions({ mode: 'cloud', trustedProxyHops: 1 }, { signedUploads: true }))).toEqual(["'self'", 'https://storage.googleapis.com']);
    expect(connect(helmetOptions({ mode: 'cloud', trustedProxyHops: 1 }))).toEqual(["'self'"]);
    expect(connect(helmetOptions({ mode: 'local', host: '127.0.0.1' }, { signedUploads: true }))).toEqual(["'self'"]);
    // Nothing else widens: every other directive is the same as without uploads.
    const { 'connect-src': _c, ...rest } = helmetOptions({ mode: 'cloud', trustedProxyHops: 1 }, { signedUploads: true }).contentSecurityPolicy.directives;
    const { 'connect-src': _d, ...base } = contentSecurityPolicy();
    expect(rest).toEqual(base);
  });
});
