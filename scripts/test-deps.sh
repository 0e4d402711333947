#!/usr/bin/env bash
# The Debian packages the tests need, and the path each provides that the tests read:
#   dataset-fashion-mnist  Fashion-MNIST (model, pipeline and retraining tests)
#   mate-backgrounds       photographs for the near-duplicate, model-parity and int8 tests (abstract/: int8 calibration)
#   chromium               the browser of the page tests (test/e2e/web.e2e.test.ts; CHROMIUM_PATH overrides it)
# Run by `npm test` (pretest) and so by `.ci/run`: installs what is missing when it can (root and
# apt-get), checks that the paths exist afterwards, and otherwise exits non-zero saying exactly
# what to run. Does nothing when everything is there.
#   --check   only report (exit 1 when something is missing), never install
# TEST_DEPS_PREFIX is prepended to every path (for the script's own test).
set -euo pipefail
prefix="${TEST_DEPS_PREFIX:-}"
# package  path the tests read (test/unit/test-deps.unit.test.ts checks that every path the tests
# name is covered by a line here)
deps=(
  "dataset-fashion-mnist /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
  "dataset-fashion-mnist /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
  "mate-backgrounds /usr/share/backgrounds/mate/nature"
  "mate-backgrounds /usr/share/backgrounds/mate/abstract"
  "chromium /usr/bin/chromium"
)

missing() {
  local out=() line pkg file
  for line in "${deps[@]}"; do
    pkg="${line%% *}"
    file="${line#* }"
    [ -e "$prefix$file" ] && continue
    [[ " ${out[*]-} " == *" $pkg "* ]] || out+=("$pkg")
  done
  echo "${out[*]-}"
}

need=($(missing))
[ ${#need[@]} -eq 0 ] && exit 0
how="sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}"
if [ "${1:-}" != "--check" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "$prefix" ]; then
  echo "installing from Debian for the tests: ${need[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
    echo "Could not install the Debian packages the tests need: ${need[*]}" >&2
    echo "Install them by hand with: $how" >&2
    exit 1
  fi
  still=($(missing))
  if [ ${#still[@]} -gt 0 ]; then
    echo "Installed, but the tests still miss files of: ${still[*]} (see the paths in scripts/test-deps.sh)" >&2
    exit 1
  fi
  exit 0
fi
echo "The tests need these Debian packages: ${need[*]}" >&2
echo "Install them with: $how" >&2
exit 1
