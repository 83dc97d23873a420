#!/usr/bin/env bash
# The production path on a real cluster, step by step. Shared by tests/e2e/kind.sh (users' CI, a
# kind cluster) and the project's own CI (tests/tests/cluster.rs, a single-node cluster built on
# the machine): the same manifests, the same checks.
#
#   1. helm install the chart as the README says: two operator replicas, one leader on the Lease
#   2. a tenant (SQLite on a PersistentVolume, channels pointing at the Conversation API simulator
#      running as a pod) becomes Ready because its runtime pod is Ready, under the hardened
#      securityContext; its log lines are JSON
#   3. a conversation through the tenant's Ingress over HTTPS (drive.sh): the session cookie is
#      Secure; customer → simulator → runtime → agent → reply → simulator
#   4. a backup Job from the CronJob sets status.lastBackup from its termination message; a failing
#      one sets BackupsHealthy=False with its message
#   5. the leader killed: the other replica takes the Lease within the lease duration and
#      reconciles a change made meanwhile; a leader deleted (SIGTERM) releases the Lease at once
#   6. `kubectl get contacttenants` shows Ready, URL, Last Backup, Next Maintenance
#
# Environment (defaults in brackets):
#   KUBECTL [kubectl]  HELM [helm]
#   OPERATOR_IMAGE, RUNTIME_IMAGE   repository:tag of the images, present on the node
#   IMAGE_PULL_POLICY [Never]
#   INGRESS_CLASS [traefik]  INGRESS_NAMESPACE [traefik]  (the chart's ingressControllerNamespace)
#   INGRESS_HTTPS   host:port where the ingress controller serves HTTPS, as seen from here
#   TLS_CERT, TLS_KEY  certificate and key for e2e.contact.test (the test makes them)
#   TLS_CA          the CA that signed TLS_CERT (curl verifies the ingress with it)
#   KILL_CONTAINER  a command that SIGKILLs the container whose runtime id it is given
set -euo pipefail
cd "$(dirname "$0")/../.."
KUBECTL="${KUBECTL:-kubectl}" HELM="${HELM:-helm}"
PULL="${IMAGE_PULL_POLICY:-Never}"
INGRESS_CLASS="${INGRESS_CLASS:-traefik}" INGRESS_NAMESPACE="${INGRESS_NAMESPACE:-traefik}"
: "${OPERATOR_IMAGE:?}" "${RUNTIME_IMAGE:?}" "${KILL_CONTAINER:?}" "${INGRESS_HTTPS:?}" "${TLS_CERT:?}" "${TLS_KEY:?}" "${TLS_CA:?}"
OPS=contact-system NS=tenant-e2e HOST=e2e.contact.test RELEASE=contact
DEPLOY=contact-contact-operator LEASE=contact-operator
k() { "$KUBECTL" "$@"; }
log() { printf '\n=== scenario: %s\n' "$*" >&2; }
fail() { echo "scenario: FAILED: $*" >&2; exit 1; }
until_true() { # until_true SECONDS what command...: polls every second
  local limit="$1" what="$2"; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do ((SECONDS < end)) || fail "$what (not within ${limit}s)"; sleep 1; done
}
holder() { k get lease -n "$OPS" "$LEASE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true; }
jsonpath() { k get "$@" 2>/dev/null || true; }

log "1. helm install (two replicas, leader election, PDB, metrics Service)"
"$HELM" upgrade --install "$RELEASE" charts/contact-operator --namespace "$OPS" --create-namespace \
  --wait --timeout 5m \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" --set image.pullPolicy="$PULL" \
  --set runtimeImage.repository="${RUNTIME_IMAGE%:*}" --set runtimeImage.tag="${RUNTIME_IMAGE##*:}" \
  --set ingressControllerNamespace="$INGRESS_NAMESPACE" \
  --set 'conversationApiHosts={contact-simulator.tenant-e2e.svc:9090}'
k rollout status -n "$OPS" "deploy/$DEPLOY" --timeout=180s
ready="$(jsonpath deploy -n "$OPS" "$DEPLOY" -o jsonpath='{.status.readyReplicas}')"
[[ "$ready" == 2 ]] || fail "want 2 Ready operator pods, have ${ready:-0}"
k get pdb -n "$OPS" "$DEPLOY" >/dev/null || fail "the chart's PodDisruptionBudget is missing"
k get svc -n "$OPS" "$DEPLOY-metrics" >/dev/null || fail "the chart's metrics Service is missing"
pods() { k get pods -n "$OPS" -l app.kubernetes.io/name=contact-operator --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}'; }
leads() { local h; h="$(holder)"; [[ -n "$h" && " $(pods) " == *" $h "* ]]; }
until_true 60 "one of the operator pods holds the Lease" leads
leader="$(holder)"
echo "leader: $leader of $(pods)" >&2

log "2. a tenant on SQLite with the simulator as a pod"
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
k create secret tls e2e-tls -n "$NS" --cert="$TLS_CERT" --key="$TLS_KEY" --dry-run=client -o yaml | k apply -f - >/dev/null
sed "s/className: .*/className: $INGRESS_CLASS/" tests/e2e/tenant.yaml | k apply -n "$NS" -f -
k wait -n "$NS" configmap/e2e-config --for=create --timeout=120s
sed "s|image: contact-runtime:e2e|image: $RUNTIME_IMAGE|; s|imagePullPolicy: Never|imagePullPolicy: $PULL|" tests/e2e/simulator.yaml \
  | k apply -n "$NS" -f -
k rollout status -n "$NS" deploy/contact-simulator --timeout=180s
k wait -n "$NS" contacttenant/e2e --for=condition=Ready --timeout=300s
runtime_pod=e2e-0 # the StatefulSet's pod
[[ "$(k get pod -n "$NS" "$runtime_pod" -o jsonpath='{.status.containerStatuses[0].ready}')" == true ]] || fail "the runtime pod is not Ready"
sc="$(k get pod -n "$NS" "$runtime_pod" -o jsonpath='{.spec.securityContext.runAsNonRoot}/{.spec.containers[0].securityContext.readOnlyRootFilesystem}')"
[[ "$sc" == true/true ]] || fail "the runtime pod is not hardened (runAsNonRoot/readOnlyRootFilesystem = $sc)"
first_line="$(k logs -n "$NS" "$runtime_pod" | sed -n 1p)"
python3 -c 'import json,sys; json.loads(sys.argv[1])' "$first_line" 2>/dev/null \
  || fail "the runtime's log lines are not JSON: $first_line"

log "3. a conversation through the Ingress over HTTPS ($INGRESS_HTTPS, class $INGRESS_CLASS)"
port="${INGRESS_HTTPS##*:}" addr="${INGRESS_HTTPS%:*}"
export CURL_EXTRA="--resolve $HOST:$port:$addr --cacert $TLS_CA"
https="https://$HOST:$port"
until_true 60 "the Ingress serves the tenant over HTTPS" \
  curl -sSf -o /dev/null $CURL_EXTRA "$https/readyz"
k port-forward -n "$NS" svc/contact-simulator 19090:9090 >/dev/null 2>&1 &
pf=$!
trap 'kill $pf 2>/dev/null || true' EXIT
until_true 30 "port-forward to the simulator" curl -sf -o /dev/null http://127.0.0.1:19090/_sim/healthz
password="$(k get secret -n "$NS" e2e-keys -o jsonpath='{.data.admin-password}' | base64 -d)"
cookie="$(curl -sS -D - -o /dev/null $CURL_EXTRA -H 'Content-Type: application/json' \
  -d "{\"email\":\"admin@contact.local\",\"password\":\"$password\"}" "$https/auth/login" | grep -i '^set-cookie:' || true)"
[[ "$cookie" == *contact_session=*"; Secure"* ]] || fail "the session cookie over HTTPS is not Secure: $cookie"
tests/e2e/drive.sh "$https" http://127.0.0.1:19090 admin@contact.local "$password"

log "4. backups: a Job from the CronJob, and one that fails"
k create job -n "$NS" --from=cronjob/e2e-backup e2e-backup-now
k wait -n "$NS" job/e2e-backup-now --for=condition=Complete --timeout=180s
last_backup() { [[ -n "$(jsonpath contacttenant -n "$NS" e2e -o jsonpath='{.status.lastBackup.name}')" ]]; }
until_true 60 "status.lastBackup from the Job's termination message" last_backup
backup="$(jsonpath contacttenant -n "$NS" e2e -o jsonpath='{.status.lastBackup}')"
msg="$(k get pods -n "$NS" -l job-name=e2e-backup-now -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.message}')"
name="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["name"])' "$backup")"
[[ "$msg" == *"$name"* ]] || fail "status.lastBackup ($backup) is not the pod's termination message ($msg)"
echo "lastBackup: $backup" >&2
# The same Job with a key that is not one: it fails, and its error becomes the condition's message.
k create job -n "$NS" --from=cronjob/e2e-backup e2e-backup-bad --dry-run=client -o json | python3 -c '
import json, sys
job = json.load(sys.stdin)
job["spec"]["backoffLimit"] = 0
pod = job["spec"]["template"]["spec"]
pod["restartPolicy"] = "Never"
for c in pod["containers"]:
    c["env"] = [e for e in c.get("env", []) if e["name"] != "CONTACT_BACKUP_KEY"] + [{"name": "CONTACT_BACKUP_KEY", "value": "not-a-key"}]
print(json.dumps(job))' | k apply -f -
k wait -n "$NS" job/e2e-backup-bad --for=condition=Failed --timeout=180s
unhealthy() {
  [[ "$(jsonpath contacttenant -n "$NS" e2e -o jsonpath='{.status.conditions[?(@.type=="BackupsHealthy")].status}')" == False ]]
}
until_true 60 "BackupsHealthy=False after the failed Job" unhealthy
why="$(jsonpath contacttenant -n "$NS" e2e -o jsonpath='{.status.conditions[?(@.type=="BackupsHealthy")].message}')"
[[ "$why" == *e2e-backup-bad* && "$why" == *CONTACT_BACKUP_KEY* ]] || fail "BackupsHealthy's message does not carry the Job's error: $why"
echo "BackupsHealthy=False: $why" >&2

log "5. the leader dies; the other replica takes over and reconciles"
lease_seconds="$(jsonpath lease -n "$OPS" "$LEASE" -o jsonpath='{.spec.leaseDurationSeconds}')"
leader="$(holder)"
# Killed outright (SIGKILL, no chance to release the Lease), then its pod removed so it does not
# come back under the same identity.
container="$(k get pod -n "$OPS" "$leader" -o jsonpath='{.status.containerStatuses[0].containerID}')"
$KILL_CONTAINER "${container#*://}"
k delete pod -n "$OPS" "$leader" --grace-period=0 --force --wait=false >/dev/null 2>&1
start=$SECONDS
k patch contacttenant -n "$NS" e2e --type=merge -p '{"spec":{"displayName":"E2E Tenant (after failover)"}}'
new_leader() { local h; h="$(holder)"; [[ -n "$h" && "$h" != "$leader" ]]; }
until_true $((lease_seconds + 30)) "another replica takes the Lease after $leader was killed" new_leader
took=$((SECONDS - start))
((took <= lease_seconds + 10)) || fail "takeover took ${took}s, the lease duration is ${lease_seconds}s"
echo "killed $leader; $(holder) took the Lease after ${took}s (lease duration ${lease_seconds}s)" >&2
reconciled() { k get configmap -n "$NS" e2e-config -o yaml | grep -q 'after failover'; }
until_true 60 "the new leader reconciles the change made meanwhile" reconciled
k rollout status -n "$OPS" "deploy/$DEPLOY" --timeout=180s
leader="$(holder)"
start=$SECONDS
k delete pod -n "$OPS" "$leader" --wait=false >/dev/null
until_true 30 "a deleted leader (SIGTERM) releases the Lease" new_leader
took=$((SECONDS - start))
((took < lease_seconds)) || fail "after SIGTERM the Lease changed hands only after ${took}s (lease duration ${lease_seconds}s): not released"
echo "deleted $leader (SIGTERM); $(holder) took the Lease after ${took}s" >&2
k rollout status -n "$OPS" "deploy/$DEPLOY" --timeout=180s

log "6. kubectl get contacttenants"
table="$(k get contacttenants -n "$NS")"
echo "$table" >&2
header="$(head -1 <<<"$table")" row="$(sed -n 2p <<<"$table")"
for column in NAME READY REASON URL "LAST BACKUP" "NEXT MAINTENANCE" AGE; do
  [[ "$header" == *"$column"* ]] || fail "column $column is missing"
done
[[ "$row" == e2e*True*"https://$HOST"* ]] || fail "the row does not show Ready and the URL: $row"
[[ "$row" != *"<none>"* ]] || fail "a column is empty (Last Backup? Next Maintenance?): $row"
[[ "$row" == *"$(date -u +%Y)"* ]] || fail "the row shows no Next Maintenance time: $row"
echo "scenario: ok" >&2
