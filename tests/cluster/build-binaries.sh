#!/usr/bin/env bash
# Builds what a real single-node cluster needs beyond the test control plane, from Go modules and
# Debian's C compiler, and caches it beside kube-apiserver and etcd. Prints the folder.
# Idempotent: a second run with the same pinned versions is a no-op.
#
#   kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl  k8s.io/kubernetes (one
#       `go build` for the five, so the packages they share compile once; the Go build cache also
#       shares the packages already compiled for kube-apiserver by the control-plane script)
#   pause                                   the module's build/pause/linux/pause.c, static
#   coredns                                 github.com/coredns/coredns (cluster DNS)
#   traefik                                 github.com/traefik/traefik/v3 (the ingress controller; v3.7
#                                           needs module versions the Go proxy does not serve)
#
# The Kubernetes version is the control plane's (tests/controlplane/build-binaries.sh), so the node
# and the apiserver always agree.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.6.12}"
CACHE="${CONTACT_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/contact-testbin}"
# The folder name carries a build revision: bump it when this script changes what it builds.
OUT="$CACHE/node-k8s-$K8S_VERSION-coredns-$COREDNS_VERSION-traefik-$TRAEFIK_VERSION-r1"
BINS=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl pause coredns traefik)

complete() {
  local b
  for b in "${BINS[@]}"; do [[ -x "$OUT/$b" ]] || return 1; done
}
if complete; then echo "$OUT"; exit 0; fi

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
if complete; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "cluster/build-binaries.sh: Go is required" >&2; exit 1; }
command -v gcc >/dev/null || { echo "cluster/build-binaries.sh: gcc is required for the pause binary (apt-get install gcc libc6-dev)" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0

# Kubernetes components: a wrapper module with one main package per binary and the same `replace`
# lines as kube-apiserver's (k8s.io/kubernetes points its staging modules at ./staging/..., which a
# dependent module cannot use; each is replaced by its published v0.X.Y twin).
if [[ ! -x "$OUT/kubectl" || ! -x "$OUT/kubelet" || ! -x "$OUT/kube-proxy" || ! -x "$OUT/kube-scheduler" || ! -x "$OUT/kube-controller-manager" ]]; then
  src="$OUT/src/kubernetes"
  mkdir -p "$src"
  cd "$src"
  staging_minor="v0.${K8S_VERSION#v1.}"
  printf 'module contact.dev/testbin/node\n\ngo 1.24\n' > go.mod
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
      | awk -v v="$staging_minor" '{print "replace " $1 " => " $1 " " v}'
  } >> go.mod
  main() { # main DIR IMPORT EXPR: a main package that runs one upstream command through cli.Run
    mkdir -p "$1"
    cat > "$1/main.go" <<GO
// Command $1 is the upstream component, built from its Go module for tests.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	app "$2"
)

var _ = context.Background

func main() { os.Exit(cli.Run($3)) }
GO
  }
  main kubelet k8s.io/kubernetes/cmd/kubelet/app 'app.NewKubeletCommand(context.Background())'
  main kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager/app 'app.NewControllerManagerCommand()'
  main kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler/app 'app.NewSchedulerCommand()'
  main kube-proxy k8s.io/kubernetes/cmd/kube-proxy/app 'app.NewProxyCommand()'
  mkdir -p kubectl
  cat > kubectl/main.go <<'GO'
// Command kubectl is the upstream CLI, built from its Go module for tests.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
GO
  go mod tidy >/dev/null
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  mkdir -p bin
  go build -trimpath -ldflags="$ldflags" -o bin/ ./kubelet ./kube-controller-manager ./kube-scheduler ./kube-proxy ./kubectl
  for b in kubelet kube-controller-manager kube-scheduler kube-proxy kubectl; do mv "bin/$b" "$OUT/$b"; done
  cd - >/dev/null
fi

# The pause (sandbox) container's binary, from the same module's C source.
if [[ ! -x "$OUT/pause" ]]; then
  dir="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  gcc -Os -static -DVERSION=contact-"$K8S_VERSION" -o "$OUT/pause.tmp" "$dir/build/pause/linux/pause.c"
  strip "$OUT/pause.tmp" && mv "$OUT/pause.tmp" "$OUT/pause"
fi

# CoreDNS and Traefik: both modules carry `replace` lines of their own, so build inside a writable
# copy of each module, where its go.mod applies as written.
build_in_module() { # build_in_module MODULE VERSION PACKAGE BINARY
  local dir copy="$OUT/src/$4"
  dir="$(go mod download -json "$1@$2" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  rm -rf "$copy"
  mkdir -p "$OUT/src"
  cp -r "$dir" "$copy"
  chmod -R u+w "$copy"
  (cd "$copy" && go build -trimpath -ldflags='-s -w' -o "$OUT/$4.tmp" "$3")
  mv "$OUT/$4.tmp" "$OUT/$4"
  rm -rf "$copy"
}
[[ -x "$OUT/coredns" ]] || build_in_module github.com/coredns/coredns "$COREDNS_VERSION" . coredns
[[ -x "$OUT/traefik" ]] || build_in_module github.com/traefik/traefik/v3 "$TRAEFIK_VERSION" ./cmd/traefik traefik

echo "$OUT"
