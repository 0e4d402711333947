/**
 * Boot script of the OpenSearch VM (Container-Optimized OS). It mounts the persistent data disk
 * (formatting it only the first time), opens 9200 in COS's host firewall (which drops inbound
 * traffic by default; the VPC firewall still admits only the connector range), reads the admin
 * password from Secret Manager with the VM's own identity (so it never sits in instance
 * metadata), and runs the OpenSearch container pulled through the Artifact Registry proxy
 * (the VM has no public IP and no NAT; Private Google Access reaches Google APIs).
 */
export interface OpenSearchStartupArgs {
  project: string;
  /** Secret Manager secret id holding the admin password. */
  passwordSecretId: string;
  /** Full image reference through the Artifact Registry Docker Hub proxy. */
  image: string;
  /** Registry host for docker-credential-gcr, e.g. us-central1-docker.pkg.dev. */
  registryHost: string;
  heap: string;
  /** Device name of the attached data disk (/dev/disk/by-id/google-<name>). */
  dataDeviceName: string;
}

export function opensearchStartupScript(a: OpenSearchStartupArgs): string {
  return `#!/bin/bash
set -euo pipefail
DEV=/dev/disk/by-id/google-${a.dataDeviceName}
MNT=/mnt/disks/opensearch
if ! blkid "$DEV" >/dev/null 2>&1; then
  mkfs.ext4 -m 0 -E lazy_itable_init=0,lazy_journal_init=0,discard "$DEV"
fi
mkdir -p "$MNT"
mountpoint -q "$MNT" || mount -o discard,defaults "$DEV" "$MNT"
chown 1000:1000 "$MNT"

sysctl -w vm.max_map_count=262144
iptables -C INPUT -p tcp --dport 9200 -j ACCEPT 2>/dev/null || iptables -A INPUT -p tcp --dport 9200 -j ACCEPT

MD=http://metadata.google.internal/computeMetadata/v1
TOKEN=$(curl -sf -H 'Metadata-Flavor: Google' "$MD/instance/service-accounts/default/token" | sed -E 's/.*"access_token":"([^"]+)".*/\\1/')
umask 077
curl -sf -H "Authorization: Bearer $TOKEN" \\
  "https://secretmanager.googleapis.com/v1/projects/${a.project}/secrets/${a.passwordSecretId}/versions/latest:access" \\
  | grep '"data"' | sed -E 's/.*"data": *"([^"]+)".*/\\1/' | base64 -d > /run/opensearch-password
printf 'OPENSEARCH_INITIAL_ADMIN_PASSWORD=%s\\n' "$(cat /run/opensearch-password)" > /run/opensearch.env
rm -f /run/opensearch-password

export HOME=/var/lib/opensearch-boot
mkdir -p "$HOME"
docker-credential-gcr configure-docker --registries ${a.registryHost}
docker rm -f opensearch >/dev/null 2>&1 || true
# Plain HTTP inside the VPC with the security plugin (users, passwords) still on; reachable only
# from the Serverless VPC Access connector range.
docker run -d --name opensearch --restart always \\
  -p 9200:9200 \\
  --ulimit nofile=65536:65536 --ulimit memlock=-1:-1 \\
  -v "$MNT":/usr/share/opensearch/data \\
  --env-file /run/opensearch.env \\
  -e discovery.type=single-node \\
  -e bootstrap.memory_lock=true \\
  -e plugins.security.ssl.http.enabled=false \\
  -e "OPENSEARCH_JAVA_OPTS=-Xms${a.heap} -Xmx${a.heap}" \\
  ${a.image}
`;
}
