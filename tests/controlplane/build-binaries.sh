#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver and etcd) from their Go modules and caches the
# binaries. Idempotent: a second run with the same pinned versions is a no-op.
#
# Why from Go modules: this machine (and users' CI) has no container engine and no download site
# for release tarballs, but the Go module proxy serves the sources. The versions below go together
# (Kubernetes 1.35 is tested upstream against etcd 3.6).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
# CONTACT_TESTBIN_DIR is the folder *of the binaries* (what this script prints and the tests read):
# when it already holds them, there is nothing to build. The cache root is CONTACT_TESTBIN_CACHE, as
# for install-helm.sh. (Reading CONTACT_TESTBIN_DIR as the root made `make test` under .ci/run build
# a second copy nested inside the first.)
if [[ -n "${CONTACT_TESTBIN_DIR:-}" && -x "$CONTACT_TESTBIN_DIR/kube-apiserver" && -x "$CONTACT_TESTBIN_DIR/etcd" ]]; then
  echo "$CONTACT_TESTBIN_DIR"
  exit 0
fi
CACHE="${CONTACT_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/contact-testbin}"
# The folder name carries a build revision: bump it when this script changes what it builds.
OUT="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-r2"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi

# Several test processes may ask at once: one builds, the others wait for it.
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null || { echo "build-binaries.sh: Go is required to build kube-apiserver and etcd" >&2; exit 1; }

mkdir -p "$OUT/src/apiserver" "$OUT/src/etcd"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0

# kube-apiserver: k8s.io/kubernetes refers to its staging modules through `replace => ./staging/...`
# which a dependent module cannot use, so we replace each with its published v0.X.Y twin.
(
  cd "$OUT/src/apiserver"
  staging_minor="v0.${K8S_VERSION#v1.}"
  cat > go.mod <<MOD
module contact.dev/testbin/apiserver

go 1.24
MOD
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
      | awk -v v="$staging_minor" '{print "replace " $1 " => " $1 " " v}'
  } >> go.mod
  cat > main.go <<'GO'
// Command kube-apiserver is the upstream API server, built from its Go module for tests.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
GO
  go mod tidy >/dev/null
  # Stamp the version the way the upstream build does, so /version and the apiserver's
  # compatibility (emulation) version say 1.X rather than v0.0.0-master.
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  go build -trimpath -ldflags="$ldflags" -o "$OUT/kube-apiserver.tmp" . && mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
)

# etcd: a one-line main over etcdmain, the same entry point the upstream binary uses.
(
  cd "$OUT/src/etcd"
  cat > go.mod <<MOD
module contact.dev/testbin/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat > main.go <<'GO'
// Command etcd is the upstream etcd server, built from its Go module for tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go mod tidy >/dev/null
  go build -trimpath -ldflags='-s -w' -o "$OUT/etcd.tmp" . && mv "$OUT/etcd.tmp" "$OUT/etcd"
)

echo "$OUT"
