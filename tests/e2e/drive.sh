#!/usr/bin/env bash
# Drives one conversation end to end through a running tenant runtime and the Conversation API
# simulator, the way a customer and an agent would:
#   the customer writes (simulator → signed webhook → runtime) → the agent logs in, finds it in the
#   queue, picks it and replies → the simulator receives the reply on messages:send.
# Used by tests/e2e/kind.sh against a kind cluster (through the tenant's ingress) and by the test
# suite against a locally started runtime (tenant-runtime/tests/api/e2e_drive.rs): the same steps.
#
#   drive.sh RUNTIME_URL SIMULATOR_URL AGENT_EMAIL AGENT_PASSWORD [HOST_HEADER]
# CURL_EXTRA: more curl options for the requests to the runtime (tests/e2e/scenario.sh passes
# --resolve and --cacert to reach it through the Ingress over HTTPS).
set -euo pipefail
runtime="$1" sim="$2" email="$3" password="$4" host="${5:-}"
identity="4670$(date +%s | tail -c 8)"
text="Hello from the e2e drive $identity"
reply="Thanks, an agent is on it ($identity)"
jar="$(mktemp)"; trap 'rm -f "$jar"' EXIT
read -r -a extra <<<"${CURL_EXTRA:-}"
hdr=("${extra[@]}" -H 'Content-Type: application/json')
[[ -n "$host" ]] && hdr+=(-H "Host: $host")
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d, 'json': json}))" "$1"; }
step() { printf 'drive: %s\n' "$*" >&2; }
retry() { # retry N SECONDS-BETWEEN command...: until the command succeeds
  local n="$1" pause="$2"; shift 2
  for ((i = 0; i < n; i++)); do "$@" && return 0; sleep "$pause"; done
  return 1
}

step "agent $email logs in"
csrf="$(curl -sSf -c "$jar" "${hdr[@]}" -d "{\"email\":\"$email\",\"password\":\"$password\"}" "$runtime/auth/login" | json "d['csrf_token']")"

step "customer $identity writes: $text"
curl -sSf -H 'Content-Type: application/json' -d "{\"identity\":\"$identity\",\"text\":\"$text\"}" "$sim/_sim/inbound" >/dev/null

find_conversation() {
  conversation="$(curl -sSf -b "$jar" "${hdr[@]}" "$runtime/api/v1/queue" \
    | json "next((c['id'] for c in d if c.get('identity') == '$identity'), '')")"
  [[ -n "$conversation" ]]
}
step "the conversation reaches the queue"
retry 50 0.2 find_conversation || { echo "drive: the conversation never reached the queue" >&2; exit 1; }

step "agent picks $conversation and replies"
curl -sSf -b "$jar" "${hdr[@]}" -H "X-CSRF-Token: $csrf" -X POST "$runtime/api/v1/conversations/$conversation/pick" >/dev/null
curl -sSf -b "$jar" "${hdr[@]}" -H "X-CSRF-Token: $csrf" \
  -d "{\"content\":{\"type\":\"text\",\"text\":\"$reply\"}}" \
  "$runtime/api/v1/workspace/conversations/$conversation/messages" >/dev/null

reply_sent() {
  curl -sSf "$sim/_sim/sent" | json "any(m['identity'] == '$identity' and '$reply' in json.dumps(m['body']) for m in d['messages'])" \
    | grep -qx True
}
step "the simulator receives the reply"
retry 100 0.2 reply_sent || { echo "drive: the reply never reached messages:send" >&2; exit 1; }
step "ok: customer → webhook → queue → agent → outbox → messages:send"
