import os from 'node:os';
import type { FastifyRequest } from 'fastify';
import { describe, expect, it, vi } from 'vitest';
import {
  checkHost,
  checkSameOrigin,
  contentSecurityPolicy,
  CrossSiteRequestError,
  exposureWarning,
  helmetOptions,
  hostAllowed,
  hostnameOf,
  isLoopbackAddress,
  MisdirectedRequestError,
} from '../../shared/http/security.js';

/**
 * The request checks of the search app, one rule at a time (README, "Web page and HTTP API",
 * Protections): which Host names a local server answers for (DNS rebinding → 421), which POSTs
 * are cross-site (CSRF → 403), the headers' policy, and the exposure warning.
 */
function req(method: string, headers: Record<string, string | undefined>): FastifyRequest {
  return { method, headers } as unknown as FastifyRequest;
}

function thrown(fn: () => void): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('hostnameOf: the host name of a Host header', () => {
  it('drops the port and lower-cases', () => {
    expect(hostnameOf('Example.ORG:8080')).toBe('example.org');
    expect(hostnameOf('example.org')).toBe('example.org');
    expect(hostnameOf('  LocalHost:3000 ')).toBe('localhost');
  });

  it('unwraps a bracketed IPv6 literal, with or without port, and keeps a bare IPv6 literal whole', () => {
    expect(hostnameOf('[::1]:80')).toBe('::1');
    expect(hostnameOf('[::1]')).toBe('::1');
    expect(hostnameOf('[fe80::1')).toBe('fe80::1');
    expect(hostnameOf('::1')).toBe('::1');
    expect(hostnameOf('fe80::1:2')).toBe('fe80::1:2');
  });
});

describe('isLoopbackAddress', () => {
  it('is true for IPv6 and IPv4 loopback (also IPv4-mapped) and localhost', () => {
    for (const a of ['::1', '127.0.0.1', '127.9.8.7', '::ffff:127.0.0.1', 'localhost']) expect(isLoopbackAddress(a), a).toBe(true);
  });

  it('is false for every other address, including the wildcard ones', () => {
    for (const a of [
      '0.0.0.0',
      '::',
      '10.0.0.127',
      '192.168.1.5',
      '::ffff:10.0.0.1',
      '128.0.0.1',
      'fe80::1',
      '127.example.org',
      'x::ffff:127.0.0.1',
      '1::ffff:27.0.0.1',
    ]) {
      expect(isLoopbackAddress(a), a).toBe(false);
    }
  });
});

describe('hostAllowed: the names a local server answers for', () => {
  it('answers any IP literal, localhost and *.localhost', () => {
    for (const h of ['127.0.0.1', '10.1.2.3', '::1', 'fe80::1', 'localhost', 'app.localhost', 'a.b.localhost'])
      expect(hostAllowed(h, '127.0.0.1'), h).toBe(true);
  });

  it('refuses other names, also names that merely end in "localhost"', () => {
    for (const h of ['attacker.example', 'evillocalhost', 'localhost.attacker.example', 'my-box.lan']) expect(hostAllowed(h, '127.0.0.1'), h).toBe(false);
  });

  it('answers the configured host, compared without case', () => {
    expect(hostAllowed('my-box.lan', 'My-Box.LAN')).toBe(true);
    expect(hostAllowed('other.lan', 'My-Box.LAN')).toBe(false);
  });

  it("answers this machine's name (and <name>.local), without case, only when bound to every interface", () => {
    const hostname = vi.spyOn(os, 'hostname').mockReturnValue('My-Laptop');
    try {
      for (const wildcard of ['0.0.0.0', '::']) {
        expect(hostAllowed('my-laptop', wildcard), wildcard).toBe(true);
        expect(hostAllowed('my-laptop.local', wildcard), wildcard).toBe(true);
        expect(hostAllowed('my-laptop.example', wildcard), wildcard).toBe(false);
        expect(hostAllowed('other.local', wildcard), wildcard).toBe(false);
      }
      expect(hostAllowed('my-laptop', '127.0.0.1')).toBe(false);
      expect(hostAllowed('my-laptop.local', '127.0.0.1')).toBe(false);
      expect(hostAllowed('my-laptop', 'my-box.lan')).toBe(false);
    } finally {
      hostname.mockRestore();
    }
  });
});

describe('checkHost', () => {
  const local = { mode: 'local', host: '127.0.0.1' } as const;

  it('passes allowed hosts, whatever the port', () => {
    for (const host of ['127.0.0.1:8080', 'localhost', '[::1]:3000', 'app.localhost:1'])
      expect(() => checkHost(req('GET', { host }), local), host).not.toThrow();
  });

  it('refuses a foreign host with 421, naming the host and how to open the page', () => {
    const err = thrown(() => checkHost(req('GET', { host: 'attacker.example:8080' }), local));
    expect(err).toBeInstanceOf(MisdirectedRequestError);
    expect((err as MisdirectedRequestError).statusCode).toBe(421);
    expect((err as MisdirectedRequestError).code).toBe('HOST_NOT_ALLOWED');
    expect((err as Error).message).toBe(
      'this server does not answer for host "attacker.example:8080" (DNS-rebinding protection): open it as http://127.0.0.1 or http://localhost, or the host given to --host',
    );
  });

  it('refuses a request without a Host header, or with an empty one', () => {
    const missing = thrown(() => checkHost(req('GET', {}), local));
    expect(missing).toBeInstanceOf(MisdirectedRequestError);
    expect((missing as Error).message).toMatch(/^this server does not answer for host "" /);
    expect(thrown(() => checkHost(req('GET', { host: '' }), local))).toBeInstanceOf(MisdirectedRequestError);
    expect(thrown(() => checkHost(req('GET', { host: ':80' }), local))).toBeInstanceOf(MisdirectedRequestError);
  });

  it('checks nothing in cloud mode (the platform routes by host)', () => {
    expect(() => checkHost(req('GET', { host: 'attacker.example' }), { mode: 'cloud', trustedProxyHops: 1 })).not.toThrow();
    expect(() => checkHost(req('GET', {}), { mode: 'cloud', trustedProxyHops: 1 })).not.toThrow();
  });
});

describe('checkSameOrigin', () => {
  it('lets GET, HEAD and OPTIONS through whatever their headers say', () => {
    for (const method of ['GET', 'HEAD', 'OPTIONS']) {
      expect(() => checkSameOrigin(req(method, { host: 'a:1', 'sec-fetch-site': 'cross-site', origin: 'https://attacker.example' })), method).not.toThrow();
    }
  });

  it('refuses a POST, PUT or DELETE whose Sec-Fetch-Site is not same-origin or none, with 403 naming it', () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      for (const site of ['cross-site', 'same-site']) {
        const err = thrown(() => checkSameOrigin(req(method, { host: 'a:1', 'sec-fetch-site': site })));
        expect(err, `${method} ${site}`).toBeInstanceOf(CrossSiteRequestError);
        expect((err as CrossSiteRequestError).statusCode).toBe(403);
        expect((err as CrossSiteRequestError).code).toBe('CROSS_SITE_REQUEST');
        expect((err as Error).message).toBe(`cross-site ${method} refused (Sec-Fetch-Site: ${site}): use the page served by this server`);
      }
    }
  });

  it('accepts Sec-Fetch-Site same-origin and none (typed address), and requests with neither header (curl, scripts)', () => {
    expect(() => checkSameOrigin(req('POST', { host: 'a:1', 'sec-fetch-site': 'same-origin' }))).not.toThrow();
    expect(() => checkSameOrigin(req('POST', { host: 'a:1', 'sec-fetch-site': 'none' }))).not.toThrow();
    expect(() => checkSameOrigin(req('POST', { host: 'a:1' }))).not.toThrow();
    expect(() => checkSameOrigin(req('POST', {}))).not.toThrow();
  });

  it('lets Sec-Fetch-Site decide when present: a same-origin request through a proxy that rewrites Host passes', () => {
    // `gcloud run services proxy` on localhost:8080 forwards the page's POST with the run.app Host.
    const proxied = { host: 'search-abc.a.run.app', origin: 'http://localhost:8080' };
    expect(() => checkSameOrigin(req('POST', { ...proxied, 'sec-fetch-site': 'same-origin' }))).not.toThrow();
    expect(() => checkSameOrigin(req('POST', { ...proxied, 'sec-fetch-site': 'none' }))).not.toThrow();
    expect(thrown(() => checkSameOrigin(req('POST', proxied)))).toBeInstanceOf(CrossSiteRequestError);
    expect(thrown(() => checkSameOrigin(req('POST', { ...proxied, 'sec-fetch-site': 'same-site' })))).toBeInstanceOf(CrossSiteRequestError);
  });

  it('accepts an Origin whose host:port is the Host header, compared without case', () => {
    expect(() => checkSameOrigin(req('POST', { host: '127.0.0.1:8080', origin: 'http://127.0.0.1:8080' }))).not.toThrow();
    expect(() => checkSameOrigin(req('POST', { host: 'My-Box.lan:8080', origin: 'http://my-box.LAN:8080' }))).not.toThrow();
    expect(() => checkSameOrigin(req('POST', { host: 'box', origin: 'https://box', 'sec-fetch-site': 'same-origin' }))).not.toThrow();
  });

  it('refuses an Origin of another host or port, "null", a malformed one, or any Origin without a Host header', () => {
    const cases: [Record<string, string>, string][] = [
      [{ host: '127.0.0.1:8080', origin: 'https://attacker.example' }, 'https://attacker.example'],
      [{ host: '127.0.0.1:8080', origin: 'http://127.0.0.1:9090' }, 'http://127.0.0.1:9090'],
      [{ host: '127.0.0.1:8080', origin: 'http://127.0.0.1' }, 'http://127.0.0.1'],
      [{ host: '127.0.0.1:8080', origin: 'null' }, 'null'],
      [{ host: '127.0.0.1:8080', origin: 'not a url' }, 'not a url'],
      [{ origin: 'http://127.0.0.1:8080' }, 'http://127.0.0.1:8080'],
    ];
    for (const [headers, origin] of cases) {
      const err = thrown(() => checkSameOrigin(req('POST', headers)));
      expect(err, origin).toBeInstanceOf(CrossSiteRequestError);
      expect((err as Error).message).toBe(`cross-origin POST from ${JSON.stringify(origin)} refused: use the page served by this server`);
    }
  });
});

describe('headers policy', () => {
  it('the CSP allows only this origin, no plugins, no framing, and nothing else', () => {
    expect(contentSecurityPolicy()).toEqual({
      'default-src': ["'self'"],
      'script-src': ["'self'"],
      'style-src': ["'self'"],
      'img-src': ["'self'"],
      'connect-src': ["'self'"],
      'font-src': ["'self'"],
      'object-src': ["'none'"],
      'base-uri': ["'self'"],
      'form-action': ["'self'"],
      'frame-ancestors': ["'none'"],
    });
  });

  it('helmet: every route, only the CSP above (no defaults such as upgrade-insecure-requests), DENY framing, no referrer; HSTS only in the cloud', () => {
    const expected = {
      global: true,
      contentSecurityPolicy: { useDefaults: false, directives: contentSecurityPolicy() },
      frameguard: { action: 'deny' },
      referrerPolicy: { policy: 'no-referrer' },
    };
    expect(helmetOptions({ mode: 'local', host: '127.0.0.1' })).toEqual({ ...expected, hsts: false });
    expect(helmetOptions({ mode: 'cloud', trustedProxyHops: 1 })).toEqual({ ...expected, hsts: true });
  });
});

describe('exposureWarning', () => {
  it('says nothing on loopback', () => {
    expect(exposureWarning('127.0.0.1', 8080)).toBeNull();
    expect(exposureWarning('::1', 8080)).toBeNull();
  });

  it('names the address and port and what anyone on the network can do', () => {
    const w = exposureWarning('0.0.0.0', 8080);
    expect(w).toBe(
      'the search page and API listen on 0.0.0.0:8080, reachable from other machines, with no authentication: ' +
        'anyone who can reach this port can search, list every indexed image with its name and thumbnail, read /api/status ' +
        '(file paths, rejected files) and post feedback. Use --host 127.0.0.1 (the default) unless this network is trusted.',
    );
    expect(exposureWarning('192.168.1.5', 3000)).toMatch(/^the search page and API listen on 192\.168\.1\.5:3000, /);
  });
});
