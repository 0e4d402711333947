import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseEnv } from '../../shared/config.js';
import { ConfigError } from '../../shared/errors.js';
import { parseCloudConfig } from '../../shared/wiring/cloud-config.js';
import { redactSecrets, redactUrl } from '../../shared/redact.js';

/**
 * Issue 11 point 7: credentials inside a URL (user:password@, password-ish query parameters) never
 * reach an error message or a log line. One URL formatter (shared/redact.ts) is used by every
 * place that prints a URL.
 */
const SECRET = 'S3cr3t!';

/** Everything a user or a log could see of an error: message, cause chain, meta, util.inspect. */
function everythingShown(err: unknown): string {
  return `${String(err)}\n${inspect(err, { depth: 10 })}\n${JSON.stringify(err)}`;
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}

describe('configuration errors never echo URL credentials', () => {
  it.each([
    ['an invalid port', `https://admin:${SECRET}@host:notaport`],
    ['a space in the host', `https://admin:${SECRET}@my host:9200`],
    ['no scheme', `admin:${SECRET}@host:9200`],
    ['a password holding a slash', `https://admin:${SECRET}/x@host:9200`],
  ])('local OPENSEARCH_URL with %s: names the variable, hides the password', (_what, url) => {
    const err = thrown(() => parseEnv({ IMGSEARCH_INDEX: 'opensearch', OPENSEARCH_URL: url }));
    expect(err).toBeInstanceOf(ConfigError);
    const shown = everythingShown(err);
    expect(shown).toContain('OPENSEARCH_URL');
    expect(shown).not.toContain('S3cr3t');
  });

  it('local: a bad variable beside a good URL with credentials shows neither the password nor the URL credentials', () => {
    const err = thrown(() => parseEnv({ IMGSEARCH_INDEX: 'opensearch', OPENSEARCH_URL: `https://admin:${SECRET}@host:9200`, IMGSEARCH_PORT: 'x' }));
    expect(everythingShown(err)).not.toContain('S3cr3t');
  });

  it.each([
    ['a scheme that is not http(s)', `ftp://admin:${SECRET}@host:9200`],
    ['an invalid port', `https://admin:${SECRET}@host:notaport`],
    ['a password query parameter', `ftp://host:9200/?password=${SECRET}`],
  ])('parseCloudConfig OPENSEARCH_URL with %s: names the variable, hides the password', (_what, url) => {
    const err = thrown(() =>
      parseCloudConfig('search', { OPENSEARCH_URL: url, MODELS_BUCKET: 'm-bucket', FEATURES_BUCKET: 'f-bucket', IMAGES_BUCKET: 'i-bucket' }),
    );
    expect(err).toBeInstanceOf(ConfigError);
    const shown = everythingShown(err);
    expect(shown).toContain('OPENSEARCH_URL');
    expect(shown).toContain('host');
    expect(shown).not.toContain('S3cr3t');
  });
});

describe('redactUrl / redactSecrets (the one URL formatter)', () => {
  it('replaces user:password@ and keeps what locates the server', () => {
    expect(redactUrl(`https://admin:${SECRET}@host:9200`)).toBe('https://***@host:9200');
    expect(redactUrl(`https://admin:${SECRET}@host:9200/path/x`)).toBe('https://***@host:9200/path/x');
    expect(redactUrl('https://host:9200/a?b=1')).toBe('https://host:9200/a?b=1');
  });

  it('replaces password-ish query parameters, keeps the others', () => {
    const out = redactUrl(`https://host/x?size=3&password=${SECRET}&access_token=abc123&X-Amz-Signature=deadbeef&api_key=k1`);
    expect(out).toBe('https://host/x?size=3&password=***&access_token=***&X-Amz-Signature=***&api_key=***');
  });

  it('hides the userinfo of a URL it cannot parse', () => {
    expect(redactUrl(`https://admin:${SECRET}@host:notaport`)).toBe('https://***@host:notaport');
    expect(redactUrl(`admin:${SECRET}@host:9200`)).toBe('***@host:9200');
    expect(redactUrl(`https://admin:${SECRET}/x@host:9200`)).not.toContain('S3cr3t');
  });

  it('scrubs URLs, Authorization values and key=value secrets inside free text', () => {
    const text = `GET https://bob:${SECRET}@h:1/x?token=tok123 failed; authorization: Basic Ym9iOnB3MTIz; password=${SECRET}`;
    const out = redactSecrets(text);
    expect(out).not.toContain('S3cr3t');
    expect(out).not.toContain('tok123');
    expect(out).not.toContain('Ym9iOnB3MTIz');
    expect(out).toContain('https://***@h:1/x?token=***');
  });
});
