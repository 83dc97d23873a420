#!/usr/bin/env bash
# Browser tests of the Contact web UI: builds the runtime, installs playwright-core (no browser
# download: Debian's /usr/bin/chromium is used), runs node's test runner over tests/.
#   tests/browser/run.sh            # all tests
#   tests/browser/run.sh --bench    # also the page-weight / live-latency benchmark
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
cargo build -p contact-runtime
export CONTACT_RUNTIME_BIN="${CONTACT_RUNTIME_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/contact-runtime}"
if [ ! -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ]; then
  echo "Chromium not found: apt-get install -y chromium (or set CHROMIUM_BIN)" >&2
  exit 1
fi
cd "$here"
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
node --test --test-concurrency=1 tests/
if [ "${1:-}" = "--bench" ]; then
  node bench.mjs
fi
