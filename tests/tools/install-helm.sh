#!/usr/bin/env bash
# Builds the helm CLI from its Go module (the Go module proxy is reachable where release downloads
# are not) and caches it. Prints the path of the binary.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
CACHE="${CONTACT_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/contact-testbin}"
OUT="$CACHE/helm-$HELM_VERSION"
if [[ -x "$OUT/helm" ]]; then echo "$OUT/helm"; exit 0; fi
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
if [[ -x "$OUT/helm" ]]; then echo "$OUT/helm"; exit 0; fi
command -v go >/dev/null || { echo "install-helm.sh: Go is required to build helm" >&2; exit 1; }
GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$OUT" go install -trimpath -ldflags='-s -w' "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
echo "$OUT/helm"
