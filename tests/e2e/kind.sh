#!/usr/bin/env bash
# End to end on kind, for users' CI (needs docker, kind, kubectl, helm, curl, openssl, python3):
#   create a cluster → build the operator and runtime images from their Dockerfiles and load them →
#   install Traefik → run tests/e2e/scenario.sh: the chart, a tenant with the Conversation API
#   simulator as a pod, a conversation through the tenant's Ingress over HTTPS, backups, leader
#   failover, `kubectl get contacttenants`. The project's own CI runs the same scenario.sh on a
#   single-node cluster it builds on the machine (tests/tests/cluster.rs).
#
#   tests/e2e/kind.sh            # run it (KEEP_CLUSTER=1 keeps the cluster afterwards)
#   tests/e2e/kind.sh diagnose   # print what a failed run left behind
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER="${CLUSTER:-contact-e2e}"
TRAEFIK_CHART_VERSION="${TRAEFIK_CHART_VERSION:-}" # empty: the chart repository's newest
log() { printf '\n=== %s\n' "$*"; }

if [[ "${1:-}" == diagnose ]]; then
  kubectl get pods -A -o wide || true
  kubectl get contacttenants,jobs,pvc -A -o wide || true
  kubectl describe contacttenant -n tenant-e2e e2e || true
  kubectl get events -A --sort-by=.lastTimestamp | tail -60 || true
  for pod in $(kubectl get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{" "}{end}'); do
    echo "--- logs of $pod"
    kubectl logs -n "${pod%/*}" "${pod#*/}" --all-containers --tail=40 || true
  done
  exit 0
fi

if [[ "${1:-}" == kill ]]; then # kill CONTAINER_ID: SIGKILL a container on the kind node
  docker exec "$CLUSTER-control-plane" sh -c "kill -9 \$(crictl inspect --output go-template --template '{{.info.pid}}' $2)"
  exit 0
fi

for tool in docker kind kubectl helm curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "kind.sh needs $tool" >&2; exit 1; }
done

log "cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config tests/e2e/kind-config.yaml --wait 120s
[[ -n "${KEEP_CLUSTER:-}" ]] || trap 'kind delete cluster --name "$CLUSTER"' EXIT

log "images, from the Dockerfiles"
docker build -f operator/Dockerfile -t contact-operator:e2e .
docker build -f tenant-runtime/Dockerfile -t contact-runtime:e2e .
kind load docker-image --name "$CLUSTER" contact-operator:e2e contact-runtime:e2e

log "Traefik (IngressClass traefik, HTTPS on the host's 8443)"
helm repo add traefik https://traefik.github.io/charts >/dev/null
helm upgrade --install traefik traefik/traefik ${TRAEFIK_CHART_VERSION:+--version "$TRAEFIK_CHART_VERSION"} \
  --namespace traefik --create-namespace --wait \
  --set service.type=NodePort --set ports.websecure.nodePort=30443 \
  --set ingressClass.enabled=true --set ingressClass.name=traefik

log "a certificate for the tenant's host"
tls="$(mktemp -d)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=contact-e2e-ca \
  -addext basicConstraints=critical,CA:TRUE -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=e2e.contact.test -keyout "$tls/tls.key" -out "$tls/tls.csr" 2>/dev/null
openssl x509 -req -in "$tls/tls.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
  -extfile <(printf 'subjectAltName=DNS:e2e.contact.test') -out "$tls/tls.crt" 2>/dev/null

log "the scenario"
OPERATOR_IMAGE=docker.io/library/contact-operator:e2e RUNTIME_IMAGE=docker.io/library/contact-runtime:e2e \
  IMAGE_PULL_POLICY=Never INGRESS_CLASS=traefik INGRESS_NAMESPACE=traefik INGRESS_HTTPS=127.0.0.1:8443 \
  TLS_CERT="$tls/tls.crt" TLS_KEY="$tls/tls.key" TLS_CA="$tls/ca.crt" \
  KILL_CONTAINER="$PWD/tests/e2e/kind.sh kill" \
  tests/e2e/scenario.sh
log "ok"
