/**
 * The one formatter of URLs and free text for error messages and log lines: credentials never
 * reach either. A URL keeps what locates the server (scheme, host, port, path) and loses its
 * `user:password@` and the values of password-ish query parameters; free text (a driver's or the
 * network stack's message) is scrubbed of such URLs, `Authorization` values, `password=…`
 * pairs and every secret a client registered with {@link registerSecret}.
 */

/** Query parameters and `key=value` pairs whose values are credentials. */
const SECRET_PARAM = /^(?:.*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|credential|signature|auth)|key|sig|x-amz-credential|x-goog-credential)$/i;
const SECRET_PAIR = /\b((?:[\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|credential|signature))|key|sig)(["']?\s*[=:]\s*["']?)([^\s&"',;]+)/gi;
const SCHEME = /^([a-z][a-z0-9+.-]*:\/\/)/i;
/** A URL (scheme://…) inside free text, up to the next white space or quote. */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi;
/** `user:password@host` without a scheme, at the start of a value or after a space/quote/equals. */
const BARE_USERINFO = /(^|[\s"'=(])[^\s"'=(/@:]+:(?!\/\/)[^\s"'@]+@(?=[^\s@]+)/g;
const AUTHORIZATION = /(authorization["']?\s*[:=]\s*["']?)(basic|bearer)\s+[A-Za-z0-9+/=._~-]+/gi;

const secrets = new Set<string>();

/** A value (e.g. an OpenSearch password read from its own variable) that must be scrubbed from every message. */
export function registerSecret(value: string | undefined): void {
  if (value && value.length >= 3) secrets.add(value);
}

/** The URL for a message: `https://***@host:9200/path?password=***` (never its credentials). */
export function redactUrl(url: string): string {
  let parsed: URL | undefined;
  try {
    parsed = SCHEME.test(url) ? new URL(url) : undefined;
  } catch {
    parsed = undefined;
  }
  if (parsed && parsed.host) {
    if (parsed.username || parsed.password) {
      parsed.username = '***';
      parsed.password = '';
    }
    let out = `${parsed.protocol}//${parsed.username ? '***@' : ''}${parsed.host}${parsed.pathname}`;
    // `https://host:9200` stays without the slash the parser adds.
    if (parsed.pathname === '/' && !url.split(/[?#]/)[0]!.endsWith('/')) out = out.slice(0, -1);
    const query = [...parsed.searchParams].map(([k, v]) => `${encodeURIComponent(k)}=${SECRET_PARAM.test(k) ? '***' : encodeURIComponent(v)}`).join('&');
    return `${out}${query ? `?${query}` : ''}${parsed.hash}`;
  }
  // Not a URL the WHATWG parser accepts: a userinfo may then hold any character, so everything
  // between the scheme (if any) and the last '@' goes.
  const scheme = SCHEME.exec(url)?.[1] ?? '';
  const at = url.lastIndexOf('@');
  const rest = at >= 0 ? `${scheme}***${url.slice(at)}` : url;
  return rest.replace(SECRET_PAIR, (_m, name: string, sep: string) => `${name}${sep}***`);
}

/** Free text with every credential scrubbed: URLs (as {@link redactUrl}), Authorization values, `password=…`, registered secrets. */
export function redactSecrets(text: string): string {
  let out = text.replace(AUTHORIZATION, '$1$2 ***');
  out = out.replace(URL_IN_TEXT, (u) => redactUrl(u));
  out = out.replace(BARE_USERINFO, '$1***@');
  out = out.replace(SECRET_PAIR, (_m, name: string, sep: string) => `${name}${sep}***`);
  for (const secret of secrets) {
    out = out.split(secret).join('***');
    out = out.split(encodeURIComponent(secret)).join('***');
  }
  return out;
}
