import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { opensearchStartupScript, type OpenSearchStartupArgs } from '../../infra/opensearch-startup.js';

/**
 * The VM's boot script, run for real by bash: every external command it uses (curl, docker,
 * docker-credential-gcr, blkid, mkfs.ext4, mount, mountpoint, chown, sysctl, iptables) is a stub
 * on PATH that records its call and answers from a script of failures, and every path (device,
 * mount point, /run, HOME) and URL points into a temp dir, so nothing on this machine is touched.
 */

const PASSWORD = 'k7#Vq9!xLm2$Rt';
const TOKEN = 'ya29.STUB-ACCESS-TOKEN';
const root = mkdtempSync(join(tmpdir(), 'os-startup-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Counter helper shared by the stubs: prints how many times NAME has been called (1-based). */
const COUNT = `count() { local f="$STUB_STATE/count-$1" n; n=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$f"; echo "$n"; }`;
/** Word N (1-based) of a space-separated answer script, empty when past its end. */
const NTH = `nth() { local n=$1; shift; set -- $1; if [ "$n" -le $# ]; then eval "echo \\\${$n}"; fi; }`;

const STUBS: Record<string, string> = {
  curl: `
out=''; url=''; hdr=''
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    -H) hdr=$2; shift 2 ;;
    -w|--connect-timeout|--max-time) shift 2 ;;
    -*) shift ;;
    *) url=$1; shift ;;
  esac
done
case "$url" in
  */token)
    answer=$(nth "$(count token)" "\${STUB_TOKEN_SCRIPT:-}")
    case "$answer" in
      curl7) echo 'curl: (7) Failed to connect' >&2; printf '000'; exit 7 ;;
      '') printf '{"access_token":"%s","expires_in":3599,"token_type":"Bearer"}' "$STUB_TOKEN" > "$out"; printf 200 ;;
      *) printf 'unavailable' > "$out"; printf '%s' "$answer" ;;
    esac ;;
  *:access)
    answer=$(nth "$(count secret)" "\${STUB_SECRET_SCRIPT:-}")
    if [ -z "$answer" ] && ! grep -q "^Authorization: Bearer $STUB_TOKEN$" "\${hdr#@}"; then answer=401; fi
    if [ -z "$answer" ]; then
      printf '{\\n  "name": "projects/123/secrets/s/versions/1",\\n  "payload": {\\n    "data": "%s",\\n    "dataCrc32c": "1234"\\n  }\\n}\\n' "$STUB_SECRET_B64" > "$out"
      printf 200
    else
      printf '{"error":{"code":%s,"message":"Permission denied on resource","status":"PERMISSION_DENIED"}}' "$answer" > "$out"
      printf '%s' "$answer"
    fi ;;
  *) printf 'no route' > "$out"; printf 404 ;;
esac`,
  docker: `
case "$1" in
  rm) rm -f "$STUB_STATE/container-opensearch"; exit 0 ;;
  pull)
    if [ "$(count pull)" -le "\${STUB_PULL_FAILS:-0}" ]; then echo 'Error response from daemon: Head "https://registry/v2/": denied: Permission "artifactregistry.repositories.downloadArtifacts" denied' >&2; exit 1; fi
    echo "Status: Downloaded newer image" ;;
  run)
    if [ -e "$STUB_STATE/container-opensearch" ]; then echo 'docker: Error response from daemon: Conflict. The container name "/opensearch" is already in use.' >&2; exit 125; fi
    touch "$STUB_STATE/container-opensearch"; echo 0123456789abcdef ;;
esac`,
  'docker-credential-gcr': `[ "$(count cred)" -gt "\${STUB_CRED_FAILS:-0}" ]`,
  blkid: `[ -e "$STUB_STATE/formatted" ] || exit 2`,
  'mkfs.ext4': `touch "$STUB_STATE/formatted"`,
  mountpoint: `[ -e "$STUB_STATE/mounted" ]`,
  mount: `touch "$STUB_STATE/mounted"`,
  chown: `:`,
  sysctl: `:`,
  iptables: `
case "$1" in
  -C) [ -e "$STUB_STATE/iptables-9200" ] ;;
  -A) touch "$STUB_STATE/iptables-9200" ;;
esac`,
};

/** A fresh VM: its own temp dir with stubs, state, device, mount point and /run. */
function makeVm(name: string) {
  const dir = join(root, name);
  const bin = join(dir, 'bin');
  const state = join(dir, 'state');
  mkdirSync(bin, { recursive: true });
  mkdirSync(state, { recursive: true });
  for (const [cmd, body] of Object.entries(STUBS)) {
    const file = join(bin, cmd);
    writeFileSync(file, `#!/bin/bash\nprintf '%s\\n' "${cmd} $*" >> "$STUB_LOG"\n${COUNT}\n${NTH}\n${body}\n`);
    chmodSync(file, 0o755);
  }
  return {
    dir,
    bin,
    state,
    callLog: join(dir, 'calls.log'),
    runDir: join(dir, 'run'),
    mountPoint: join(dir, 'mnt/disks/opensearch'),
  };
}
type Vm = ReturnType<typeof makeVm>;

function script(vm: Vm, overrides: Partial<OpenSearchStartupArgs> = {}): string {
  const file = join(vm.dir, 'startup.sh');
  const text = opensearchStartupScript({
    project: 'iss-test-project',
    passwordSecretId: 'iss-opensearch-password',
    image: 'us-central1-docker.pkg.dev/iss-test-project/iss-docker-hub/opensearchproject/opensearch:2.19.1',
    registryHost: 'us-central1-docker.pkg.dev',
    heap: '8g',
    dataDeviceName: 'opensearch-data',
    dataDevicePath: join(vm.dir, 'dev/google-opensearch-data'),
    mountPoint: vm.mountPoint,
    runDir: vm.runDir,
    bootHome: join(vm.dir, 'boot-home'),
    metadataUrl: 'http://metadata.test/computeMetadata/v1',
    secretManagerUrl: 'https://secretmanager.test/v1',
    retryTimeoutSeconds: 5,
    initialBackoffMs: 20,
    maxBackoffMs: 200,
    ...overrides,
  });
  // Never run a script that would touch this machine's /run, /mnt or /var.
  for (const path of [vm.runDir, vm.mountPoint, join(vm.dir, 'dev'), join(vm.dir, 'boot-home')]) {
    if (!text.includes(path)) throw new Error(`the generated script does not use ${path}: refusing to run it`);
  }
  writeFileSync(file, text);
  return file;
}

/** Boots the VM: runs the script with bash, stubs first on PATH. */
function boot(vm: Vm, file: string, answers: Record<string, string> = {}) {
  const started = Date.now();
  const run = spawnSync('bash', [file], {
    encoding: 'utf8',
    timeout: 60_000,
    env: {
      PATH: `${vm.bin}:${process.env.PATH}`,
      STUB_LOG: vm.callLog,
      STUB_STATE: vm.state,
      STUB_TOKEN: TOKEN,
      STUB_SECRET_B64: Buffer.from(PASSWORD).toString('base64'),
      ...answers,
    },
  });
  const calls = existsSync(vm.callLog) ? readFileSync(vm.callLog, 'utf8').trim().split('\n') : [];
  return { status: run.status, output: `${run.stdout}${run.stderr}`, seconds: (Date.now() - started) / 1000, calls };
}
const count = (calls: string[], prefix: string) => calls.filter((c) => c.startsWith(prefix)).length;

describe('OpenSearch VM boot script', () => {
  test("is valid bash and keeps today's defaults for paths and endpoints", () => {
    const text = opensearchStartupScript({
      project: 'p',
      passwordSecretId: 's',
      image: 'img',
      registryHost: 'r',
      heap: '1g',
      dataDeviceName: 'opensearch-data',
    });
    expect(spawnSync('bash', ['-n'], { input: text }).status).toBe(0);
    expect(text).toContain("DEV='/dev/disk/by-id/google-opensearch-data'");
    expect(text).toContain("MNT='/mnt/disks/opensearch'");
    expect(text).toContain("RUN_DIR='/run'");
    expect(text).toContain("'http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token'");
    expect(text).toContain("'https://secretmanager.googleapis.com/v1/projects/p/secrets/s/versions/latest:access'");
    expect(text).toContain('RETRY_TIMEOUT_MS=600000');
  });

  const vm = makeVm('transient');
  const file = script(vm);

  test('rides out a slow metadata server, IAM propagation (Secret Manager 403 three times) and registry hiccups', () => {
    const first = boot(vm, file, { STUB_TOKEN_SCRIPT: 'curl7 503', STUB_SECRET_SCRIPT: '403 403 403', STUB_PULL_FAILS: '2', STUB_CRED_FAILS: '1' });
    expect(first.output).not.toMatch(/FATAL/);
    expect(first.status).toBe(0);

    // Each failure is logged with its status, then retried.
    expect(first.output).toContain('metadata token: attempt 1 failed (metadata server: no answer: curl exit 7, HTTP 000)');
    expect(first.output).toContain('metadata token: attempt 2 failed (metadata server: HTTP 503)');
    for (const n of [1, 2, 3]) expect(first.output).toContain(`Secret Manager: attempt ${n} failed (Secret Manager: HTTP 403)`);
    expect(first.output).toContain('Secret Manager: ok after 4 attempts');
    expect(first.output).toContain('registry login: attempt 1 failed (docker-credential-gcr exit 1)');
    expect(first.output).toMatch(/docker pull: attempt 2 failed \(docker pull: Error response from daemon: .*denied/);
    expect(first.output).toContain('OpenSearch container started');

    // The container is started once, with the password in its env file and nowhere else.
    expect(count(first.calls, 'docker run')).toBe(1);
    expect(first.calls.find((c) => c.startsWith('docker run'))).toContain(`--env-file ${vm.runDir}/opensearch.env`);
    const envFile = join(vm.runDir, 'opensearch.env');
    expect(readFileSync(envFile, 'utf8')).toBe(`OPENSEARCH_INITIAL_ADMIN_PASSWORD=${PASSWORD}\n`);
    expect(statSync(envFile).mode & 0o077).toBe(0);
    for (const secret of [PASSWORD, Buffer.from(PASSWORD).toString('base64'), TOKEN]) {
      expect(first.output).not.toContain(secret);
      // Not on any command line either (the token goes to curl in a header file).
      expect(first.calls.join('\n')).not.toContain(secret);
    }
    // Scratch files (token, Secret Manager answer) are gone.
    expect(readdirSync(vm.runDir)).toEqual(['opensearch.env']);

    expect(count(first.calls, 'mkfs.ext4')).toBe(1);
    expect(count(first.calls, 'mount ')).toBe(1);
    expect(count(first.calls, 'iptables -A')).toBe(1);
  });

  test('with tls: reads key, certificate and CA from Secret Manager into tmpfs and serves HTTPS with them (issue 11, point 9)', () => {
    const vm = makeVm('tls');
    const tls = { keySecretId: 'iss-opensearch-tls-key', certSecretId: 'iss-opensearch-tls-cert', caSecretId: 'iss-opensearch-ca' };
    const run = boot(vm, script(vm, { tls }));
    expect(run.status, run.output).toBe(0);
    for (const id of Object.values(tls)) expect(run.calls.some((c) => c.startsWith('curl') && c.includes(`/secrets/${id}/versions/latest:access`))).toBe(true);
    const tlsDir = join(vm.runDir, 'opensearch-tls');
    for (const file of ['node-key.pem', 'node.pem', 'root-ca.pem']) {
      expect(readFileSync(join(tlsDir, file), 'utf8')).toBe(PASSWORD);
      expect(statSync(join(tlsDir, file)).mode & 0o777).toBe(0o400);
    }
    const dockerRun = run.calls.find((c) => c.startsWith('docker run'))!;
    expect(dockerRun).toContain(`-v ${tlsDir}:/usr/share/opensearch/config/iss-tls:ro`);
    expect(dockerRun).toContain('-e plugins.security.ssl.http.enabled=true');
    expect(dockerRun).toContain('plugins.security.ssl.http.pemkey_filepath=iss-tls/node-key.pem');
    expect(dockerRun).not.toContain('plugins.security.ssl.http.enabled=false');
  });

  test('an expired token (401) is refreshed before the next attempt', () => {
    const other = makeVm('expired-token');
    const run = boot(other, script(other), { STUB_SECRET_SCRIPT: '401' });
    expect(run.status).toBe(0);
    expect(run.output).toContain('Secret Manager: attempt 1 failed (Secret Manager: HTTP 401)');
    expect(count(run.calls, 'curl')).toBe(4); // token, 401, fresh token, 200
  });

  test('runs again on reboot without formatting or mounting twice, and leaves one container', () => {
    const rebooted = makeVm('reboot');
    const startup = script(rebooted);
    expect(boot(rebooted, startup).status).toBe(0);
    const again = boot(rebooted, startup);
    expect(again.status).toBe(0);
    expect(count(again.calls, 'mkfs.ext4')).toBe(1);
    expect(count(again.calls, 'mount ')).toBe(1);
    expect(count(again.calls, 'iptables -A')).toBe(1);
    expect(count(again.calls, 'docker run')).toBe(2);
    // The old container is removed first: the stub refuses a second one with the same name.
    const lines = again.calls.filter((c) => c.startsWith('docker rm') || c.startsWith('docker run'));
    expect(lines.slice(-2)).toEqual([expect.stringMatching(/^docker rm -f opensearch/), expect.stringMatching(/^docker run /)]);
    expect(existsSync(join(rebooted.state, 'container-opensearch'))).toBe(true);
    expect(readFileSync(join(rebooted.runDir, 'opensearch.env'), 'utf8')).toBe(`OPENSEARCH_INITIAL_ADMIN_PASSWORD=${PASSWORD}\n`);
  });

  test('a permanent 403 ends with a non-zero exit and a clear message within the bounded time', () => {
    const denied = makeVm('denied');
    const run = boot(denied, script(denied, { retryTimeoutSeconds: 2 }), { STUB_SECRET_SCRIPT: Array(1000).fill('403').join(' ') });
    expect(run.status).not.toBe(0);
    expect(run.seconds).toBeLessThan(10);
    expect(run.output).toMatch(/FATAL: Secret Manager: still failing after \d+ attempts in 2s \(last: Secret Manager: HTTP 403\)/);
    expect(run.output).toContain('roles/secretmanager.secretAccessor on secret iss-opensearch-password');
    expect(run.output).toContain('the OpenSearch container was not (re)started');
    expect(count(run.calls, 'docker run')).toBe(0);
    expect(existsSync(join(denied.runDir, 'opensearch.env'))).toBe(false);
    expect(readdirSync(denied.runDir)).toEqual([]);
    expect(run.output).not.toContain(TOKEN);
  });

  test('a registry that never lets the image through fails the same way', () => {
    const blocked = makeVm('blocked');
    const run = boot(blocked, script(blocked, { retryTimeoutSeconds: 1 }), { STUB_PULL_FAILS: '100000' });
    expect(run.status).not.toBe(0);
    expect(run.output).toMatch(/FATAL: docker pull: still failing after \d+ attempts in 1s \(last: docker pull: Error response from daemon/);
    expect(run.output).toContain('roles/artifactregistry.reader');
    expect(count(run.calls, 'docker run')).toBe(0);
    expect(run.output).not.toContain(PASSWORD);
  });
});
