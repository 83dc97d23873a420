#!/usr/bin/env bash
# checkov (PyPI, pinned) over what reaches a cluster: the chart rendered by helm in both RBAC modes,
# and every object the operator builds for the example tenants (operator/examples/children.rs).
# Checks we do not follow are skipped in .ci/checkov-skip.txt, each with its reason; any other
# failed check fails the run.
#   CONTACT_HELM=... .ci/checkov.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
VENV="${HOME}/.cache/contact-checkov/venv-${CHECKOV_VERSION}"
if [[ ! -x "$VENV/bin/checkov" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "checkov==${CHECKOV_VERSION}"
fi
HELM="${CONTACT_HELM:-$(bash tests/tools/install-helm.sh)}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/chart-cluster" "$work/chart-namespaced" "$work/children"
"$HELM" template contact charts/contact-operator --namespace contact-system \
  --output-dir "$work/chart-cluster" >/dev/null
"$HELM" template contact charts/contact-operator --namespace contact-system \
  --set 'watchNamespaces={tenant-a,tenant-b}' --output-dir "$work/chart-namespaced" >/dev/null
cargo run -q --locked -p contact-operator --example children -- "$work/children" examples/*.yaml

# The skip list: one check id a line, then its reason after '#'.
skips="$(grep -Eo '^CKV[A-Z0-9_]+' .ci/checkov-skip.txt | paste -sd, -)"
"$VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
  --skip-check "$skips" -d "$work"
