#!/usr/bin/env bash
# The Debian packages the tests need (Fashion-MNIST, photographs for the near-duplicate tests,
# Chromium for the page tests). Run by `npm test` (pretest) and `.ci/run`: installs what is missing
# when it can (root, apt-get), otherwise says exactly what to run. Does nothing when all are there.
set -euo pipefail
need=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ -d /usr/share/backgrounds/mate/nature ] || need+=(mate-backgrounds)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing from Debian for the tests: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "The tests need these Debian packages: ${need[*]}" >&2
  echo "Install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
  exit 1
fi
