/**
 * Boot script of the OpenSearch VM (Container-Optimized OS). It mounts the persistent data disk
 * (formatting it only the first time), opens 9200 in COS's host firewall (which drops inbound
 * traffic by default; the VPC firewall still admits only the connector range), reads the admin
 * password from Secret Manager with the VM's own identity (so it never sits in instance
 * metadata), and runs the OpenSearch container pulled through the Artifact Registry proxy
 * (the VM has no public IP and no NAT; Private Google Access reaches Google APIs).
 *
 * The script runs at every boot, right after the stack grants the VM's account its roles, and
 * IAM grants take up to minutes to apply: a fresh VM may get 403 from Secret Manager or the
 * registry for a while. So every network step (metadata token, Secret Manager, registry
 * credentials, docker pull/run) is retried with exponential backoff for a bounded time, each
 * failure is logged with its HTTP status (the script's output goes to the serial console and to
 * the journal / Cloud Logging through google_metadata_script_runner), and the script exits
 * non-zero with a message saying what to fix when a step still fails. The password and the
 * access token are never printed and never appear on a command line.
 *
 * With `tls` (what the stack always passes), it also reads the node's key, certificate and CA from
 * Secret Manager into a tmpfs folder (the key never touches a disk) and serves HTTPS with them
 * (the security plugin's `plugins.security.ssl.http.*` settings), so clients that pin the CA reach
 * it over TLS inside the VPC.
 *
 * Every step is idempotent, so a reboot (or `sudo google_metadata_script_runner startup`) runs it
 * again safely: the disk is formatted only if it has no filesystem, mounted only if it is not,
 * the firewall rule added only if missing, and the container replaced by one with fresh settings.
 */
export interface OpenSearchStartupArgs {
  project: string;
  /** Secret Manager secret id holding the admin password. */
  passwordSecretId: string;
  /** Secret ids of the node's PKCS#8 key, its certificate and the CA that signed it: HTTPS on 9200. Without it, plain HTTP. */
  tls?: { keySecretId: string; certSecretId: string; caSecretId: string };
  /** Full image reference through the Artifact Registry Docker Hub proxy. */
  image: string;
  /** Registry host for docker-credential-gcr, e.g. us-central1-docker.pkg.dev. */
  registryHost: string;
  heap: string;
  /** Device name of the attached data disk (/dev/disk/by-id/google-<name>). */
  dataDeviceName: string;
  /** Data disk device path. Default: `/dev/disk/by-id/google-<dataDeviceName>`. */
  dataDevicePath?: string;
  /** Where the data disk is mounted. Default: `/mnt/disks/opensearch`. */
  mountPoint?: string;
  /** tmpfs directory for the env file and scratch files (cleared at reboot). Default: `/run`. */
  runDir?: string;
  /** Writable HOME for docker-credential-gcr's Docker config. Default: `/var/lib/opensearch-boot`. */
  bootHome?: string;
  /** Metadata server base URL. Default: `http://metadata.google.internal/computeMetadata/v1`. */
  metadataUrl?: string;
  /** Secret Manager API base URL. Default: `https://secretmanager.googleapis.com/v1`. */
  secretManagerUrl?: string;
  /** How long each network step is retried before the script gives up. Default: 600 s. */
  retryTimeoutSeconds?: number;
  /** First backoff delay, doubled after each failure. Default: 2000 ms. */
  initialBackoffMs?: number;
  /** Longest backoff delay. Default: 60000 ms. */
  maxBackoffMs?: number;
}

/** A value as one single-quoted shell word. */
function shq(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value <= 0) throw new Error(`opensearchStartupScript: ${name} must be a positive integer, got ${value}`);
  return value;
}

export function opensearchStartupScript(a: OpenSearchStartupArgs): string {
  const retryTimeoutMs = positiveInt('retryTimeoutSeconds', a.retryTimeoutSeconds ?? 600) * 1000;
  const initialBackoffMs = positiveInt('initialBackoffMs', a.initialBackoffMs ?? 2000);
  const maxBackoffMs = positiveInt('maxBackoffMs', a.maxBackoffMs ?? 60_000);
  const secretUrlOf = (id: string) =>
    `${a.secretManagerUrl ?? 'https://secretmanager.googleapis.com/v1'}` +
    `/projects/${encodeURIComponent(a.project)}/secrets/${encodeURIComponent(id)}/versions/latest:access`;
  const secretUrl = secretUrlOf(a.passwordSecretId);
  const tlsVars = a.tls
    ? `TLS_DIR="$RUN_DIR/opensearch-tls"
TLS_KEY_URL=${shq(secretUrlOf(a.tls.keySecretId))}
TLS_CERT_URL=${shq(secretUrlOf(a.tls.certSecretId))}
TLS_CA_URL=${shq(secretUrlOf(a.tls.caSecretId))}
`
    : '';
  // HTTPS with the stack's certificate, mounted read-only where the security plugin resolves relative paths.
  const tlsRunFlags = a.tls
    ? `-v "$TLS_DIR":/usr/share/opensearch/config/iss-tls:ro \\
    -e plugins.security.ssl.http.enabled=true \\
    -e plugins.security.ssl.http.pemcert_filepath=iss-tls/node.pem \\
    -e plugins.security.ssl.http.pemkey_filepath=iss-tls/node-key.pem \\
    -e plugins.security.ssl.http.pemtrustedcas_filepath=iss-tls/root-ca.pem \\`
    : `-e plugins.security.ssl.http.enabled=false \\`;
  return `#!/bin/bash
# OpenSearch VM boot script (generated by infra/opensearch-startup.ts). Safe to run again.
set -euo pipefail

DEV=${shq(a.dataDevicePath ?? `/dev/disk/by-id/google-${a.dataDeviceName}`)}
MNT=${shq(a.mountPoint ?? '/mnt/disks/opensearch')}
RUN_DIR=${shq(a.runDir ?? '/run')}
ENV_FILE="$RUN_DIR/opensearch.env"
BOOT_HOME=${shq(a.bootHome ?? '/var/lib/opensearch-boot')}
TOKEN_URL=${shq(`${a.metadataUrl ?? 'http://metadata.google.internal/computeMetadata/v1'}/instance/service-accounts/default/token`)}
SECRET_URL=${shq(secretUrl)}
SECRET_ID=${shq(a.passwordSecretId)}
REGISTRY=${shq(a.registryHost)}
IMAGE=${shq(a.image)}
HEAP=${shq(a.heap)}
RETRY_TIMEOUT_MS=${retryTimeoutMs}
INITIAL_BACKOFF_MS=${initialBackoffMs}
MAX_BACKOFF_MS=${maxBackoffMs}
${tlsVars}
log() { printf '%s opensearch-startup: %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
fail() {
  log "FATAL: $*"
  log "FATAL: the OpenSearch container was not (re)started. This script runs again at the next boot; to retry now: sudo google_metadata_script_runner startup"
  exit 1
}
trap 'rc=$?; log "FATAL: command at line $LINENO failed (exit $rc); the OpenSearch container was not (re)started"' ERR

now_ms() { local ns; ns=$(date +%s%N); echo $(( ns / 1000000 )); }
secs() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }

# retry WHAT FUNCTION: calls FUNCTION until it succeeds, with exponential backoff, for at most
# RETRY_TIMEOUT_MS; FUNCTION explains a failure in LAST_ERROR (a status, never a secret).
LAST_ERROR=''
retry() {
  local what=$1 fn=$2 attempt=1 delay=$INITIAL_BACKOFF_MS deadline now wait
  deadline=$(( $(now_ms) + RETRY_TIMEOUT_MS ))
  while true; do
    LAST_ERROR=''
    if "$fn"; then
      if [ "$attempt" -gt 1 ]; then log "$what: ok after $attempt attempts"; fi
      return 0
    fi
    now=$(now_ms)
    if [ "$now" -ge "$deadline" ]; then
      fail "$what: still failing after $attempt attempts in $(( RETRY_TIMEOUT_MS / 1000 ))s (last: \${LAST_ERROR:-unknown error}). $(hint "$what")"
    fi
    wait=$delay
    if [ $(( now + wait )) -gt "$deadline" ]; then wait=$(( deadline - now )); fi
    log "$what: attempt $attempt failed (\${LAST_ERROR:-unknown error}); retrying in $(secs "$wait")s"
    sleep "$(secs "$wait")"
    delay=$(( delay * 2 ))
    if [ "$delay" -gt "$MAX_BACKOFF_MS" ]; then delay=$MAX_BACKOFF_MS; fi
    attempt=$(( attempt + 1 ))
  done
}

hint() {
  case "$1" in
    'metadata token') echo 'Check that the VM has a service account with the cloud-platform scope.' ;;
    'TLS certificates') echo "Check that the VM's service account has roles/secretmanager.secretAccessor on the opensearch-tls-key, opensearch-tls-cert and opensearch-ca secrets (pulumi up creates them)." ;;
    'Secret Manager') echo "Check that the VM's service account has roles/secretmanager.secretAccessor on secret $SECRET_ID and that the secret has an enabled version (pulumi up creates both)." ;;
    'registry login'|'docker pull') echo "Check that the VM's service account has roles/artifactregistry.reader on the Docker Hub proxy repository, that Private Google Access is on for the subnet, and that $IMAGE exists." ;;
    *) echo 'See the lines above.' ;;
  esac
}

# http_get URL OUT HEADER_FILE: prints "HTTP <status>" (or why there was no answer); returns 0
# only on 200. The header file keeps the token off the command line; the body goes to OUT.
http_get() {
  local status rc=0
  status=$(curl -sS --connect-timeout 10 --max-time 60 -H @"$3" -o "$2" -w '%{http_code}' "$1" 2>/dev/null) || rc=$?
  if [ "$rc" -ne 0 ]; then printf 'no answer: curl exit %s, HTTP %s' "$rc" "\${status:-000}"; return 1; fi
  printf 'HTTP %s' "$status"
  [ "$status" = 200 ]
}

fetch_token() {
  local result token
  if ! result=$(http_get "$TOKEN_URL" "$WORK/token.json" "$WORK/metadata.hdr"); then
    LAST_ERROR="metadata server: $result"
    return 1
  fi
  token=$(tr -d '\\n' < "$WORK/token.json" | sed -n 's/.*"access_token" *: *"\\([^"]*\\)".*/\\1/p')
  rm -f "$WORK/token.json"
  if [ -z "$token" ]; then LAST_ERROR='metadata server: HTTP 200 without an access_token'; return 1; fi
  printf 'Authorization: Bearer %s\\n' "$token" > "$WORK/auth.hdr"
}

read_password() {
  local result data
  if ! result=$(http_get "$SECRET_URL" "$WORK/secret.json" "$WORK/auth.hdr"); then
    rm -f "$WORK/secret.json"
    LAST_ERROR="Secret Manager: $result"
    # An expired token: fetch a fresh one for the next attempt.
    if [ "$result" = 'HTTP 401' ]; then fetch_token || true; fi
    return 1
  fi
  data=$(tr -d '\\n' < "$WORK/secret.json" | sed -n 's/.*"data" *: *"\\([^"]*\\)".*/\\1/p')
  rm -f "$WORK/secret.json"
  if [ -z "$data" ]; then LAST_ERROR='Secret Manager: HTTP 200 without payload.data'; return 1; fi
  if ! { printf 'OPENSEARCH_INITIAL_ADMIN_PASSWORD='; printf '%s' "$data" | base64 -d; printf '\\n'; } > "$WORK/opensearch.env" 2>/dev/null; then
    LAST_ERROR='Secret Manager: payload.data is not base64'
    return 1
  fi
  if [ "$(wc -l < "$WORK/opensearch.env")" -ne 1 ] || [ "$(wc -c < "$WORK/opensearch.env")" -le 35 ]; then
    rm -f "$WORK/opensearch.env"
    LAST_ERROR='Secret Manager: the password is empty or spans several lines'
    return 1
  fi
  mv -f "$WORK/opensearch.env" "$ENV_FILE"
}

# fetch_secret_file URL OUT: one secret's payload into OUT (written beside, then renamed).
fetch_secret_file() {
  local result data
  if ! result=$(http_get "$1" "$WORK/secret.json" "$WORK/auth.hdr"); then
    rm -f "$WORK/secret.json"
    LAST_ERROR="Secret Manager: $result"
    if [ "$result" = 'HTTP 401' ]; then fetch_token || true; fi
    return 1
  fi
  data=$(tr -d '\\n' < "$WORK/secret.json" | sed -n 's/.*"data" *: *"\\([^"]*\\)".*/\\1/p')
  rm -f "$WORK/secret.json"
  if [ -z "$data" ]; then LAST_ERROR='Secret Manager: HTTP 200 without payload.data'; return 1; fi
  if ! printf '%s' "$data" | base64 -d > "$2.tmp" 2>/dev/null; then rm -f "$2.tmp"; LAST_ERROR='Secret Manager: payload.data is not base64'; return 1; fi
  mv -f "$2.tmp" "$2"
}

read_tls() {
  mkdir -p "$TLS_DIR"
  fetch_secret_file "$TLS_KEY_URL" "$TLS_DIR/node-key.pem" || return 1
  fetch_secret_file "$TLS_CERT_URL" "$TLS_DIR/node.pem" || return 1
  fetch_secret_file "$TLS_CA_URL" "$TLS_DIR/root-ca.pem" || return 1
  # The container runs as uid 1000; nobody else may read the key.
  chown -R 1000:1000 "$TLS_DIR"
  chmod 0400 "$TLS_DIR"/*.pem
}

registry_login() {
  local rc=0
  docker-credential-gcr configure-docker --registries "$REGISTRY" >/dev/null 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then LAST_ERROR="docker-credential-gcr exit $rc"; return 1; fi
}

pull_image() {
  local out
  if ! out=$(docker pull "$IMAGE" 2>&1); then
    LAST_ERROR="docker pull: $(printf '%s' "$out" | tail -n 1)"
    return 1
  fi
}

start_container() {
  local out
  docker rm -f opensearch >/dev/null 2>&1 || true
  # The security plugin (users, passwords) on, HTTPS with the stack's certificate when configured;
  # reachable only from the Serverless VPC Access connector range.
  if ! out=$(docker run -d --name opensearch --restart always \\
    -p 9200:9200 \\
    --ulimit nofile=65536:65536 --ulimit memlock=-1:-1 \\
    -v "$MNT":/usr/share/opensearch/data \\
    --env-file "$ENV_FILE" \\
    -e discovery.type=single-node \\
    -e bootstrap.memory_lock=true \\
    ${tlsRunFlags}
    -e "OPENSEARCH_JAVA_OPTS=-Xms$HEAP -Xmx$HEAP" \\
    "$IMAGE" 2>&1); then
    LAST_ERROR="docker run: $(printf '%s' "$out" | tail -n 1)"
    return 1
  fi
}

log "starting (every network step is retried for up to $(( RETRY_TIMEOUT_MS / 1000 ))s)"

if ! blkid "$DEV" >/dev/null 2>&1; then
  log "formatting the new data disk $DEV"
  mkfs.ext4 -m 0 -E lazy_itable_init=0,lazy_journal_init=0,discard "$DEV"
fi
mkdir -p "$MNT"
mountpoint -q "$MNT" || mount -o discard,defaults "$DEV" "$MNT"
chown 1000:1000 "$MNT"

sysctl -w vm.max_map_count=262144 >/dev/null
iptables -C INPUT -p tcp --dport 9200 -j ACCEPT 2>/dev/null || iptables -A INPUT -p tcp --dport 9200 -j ACCEPT

umask 077
mkdir -p "$RUN_DIR"
WORK=$(mktemp -d "$RUN_DIR/opensearch-boot.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
printf 'Metadata-Flavor: Google\\n' > "$WORK/metadata.hdr"

retry 'metadata token' fetch_token
retry 'Secret Manager' read_password
log "admin password read from Secret Manager secret $SECRET_ID"
${
  a.tls
    ? `retry 'TLS certificates' read_tls
log "TLS key and certificates read from Secret Manager"
`
    : ''
}
export HOME="$BOOT_HOME"
mkdir -p "$HOME"
retry 'registry login' registry_login
retry 'docker pull' pull_image
retry 'docker run' start_container
log "OpenSearch container started from $IMAGE"
`;
}
