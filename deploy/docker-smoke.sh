#!/usr/bin/env bash
# Checks a running gateway container the way the README uses the gateway: the health check,
# the "Try it" requests, the CLI inside the container (with the token the server generated in
# var/), the dashboard, and state across a container restart. Exits non-zero at the first
# failure. The container must publish its port on 127.0.0.1 (docker-local.sh runs it on the
# host network; `docker run -p PORT:8000 -e ...` works too) and have no admin token configured.
#
#   deploy/docker-smoke.sh [CONTAINER] [PORT]      # default: release-gateway-local 8490,
#                                                  # what `docker-local.sh run` starts
set -euo pipefail
trap 'echo "FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
NAME=${1:-release-gateway-local}
PORT=${2:-8490}
URL=http://127.0.0.1:$PORT
ROW='[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]'
V2='{"id": "r1", "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": '$ROW'}]}'

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
cli() { docker exec -e GATEWAY_URL="$URL" "$NAME" gateway "$@"; }  # runs in WORKDIR /app
expect() { grep -q -- "$1" <<<"$2" || fail "expected '$1' in: ${2:0:400}"; }

wait_healthy() {
  local status=
  for _ in $(seq 60); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
    [ "$status" = healthy ] && break
    sleep 2
  done
  echo "health: $status"
  [ "$status" = healthy ] || fail "container not healthy: $(docker inspect -f '{{json .State.Health}}' "$NAME" | tail -c 600)"
}

step "health check (HEALTHCHECK on /v2/health/ready)"
wait_healthy
docker inspect -f '{{range .State.Health.Log}}exit {{.ExitCode}} at {{.End}}{{"\n"}}{{end}}' "$NAME" | tail -2

step "user and state volume"
docker exec "$NAME" id
docker inspect -f '{{range .Mounts}}{{.Type}} volume {{.Name}} at {{.Destination}}{{"\n"}}{{end}}' "$NAME"
listing=$(docker exec "$NAME" ls -ln /app/var)
echo "$listing"
expect "admin-token" "$listing"
expect "state.db" "$listing"
[ "$(docker exec "$NAME" stat -c '%u %a' /app/var/admin-token)" = "10001 600" ] || fail "token file not 10001 0600"

step "Try it: metadata, V2 routed, V2 pinned, V1 predict, metrics"
answer=$(curl -sf "$URL/v2/models/digits"); echo "${answer:0:200}"
expect '"name":"digits"' "$answer"
answer=$(curl -sf -D - "$URL/v2/models/digits/infer" -H 'content-type: application/json' -d "$V2")
grep -i -E '^(x-model-version|x-route-variant|x-route-reason):' <<<"$answer"
expect '"model_name":"digits"' "$answer"
answer=$(curl -sf -D - "$URL/v2/models/digits/versions/2/infer" -H 'content-type: application/json' -d "$V2")
grep -i '^x-model-version' <<<"$answer"
expect 'x-model-version: 2' "$answer"
answer=$(curl -sf "$URL/v1/models/digits:predict" -H 'content-type: application/json' -d '{"instances": ['"$ROW"']}'); echo "$answer"
expect '"predictions"' "$answer"
answer=$(curl -sf "$URL/metrics")
grep '^gateway_requests_total' <<<"$answer" | head -3
expect 'gateway_requests_total{' "$answer"

step "CLI in the container (token from var/admin-token)"
out=$(cli release status digits); echo "$out" | head -12; expect "digits" "$out"
out=$(cli models list); echo "$out"; expect "READY" "$out"
out=$(cli release rollout digits --version 2 --percent 25 --reason "docker smoke"); echo "$out"
out=$(cli audit --model digits --limit 3); echo "$out"; expect "docker smoke" "$out"
out=$(cli shadow report digits); echo "$out" | head -8
flag_before=$(cli release status digits --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["flag_version"], json.dumps(s["split"], sort_keys=True))')
echo "flag version and split: $flag_before"

step "dashboard at /ui"
token=$(docker exec "$NAME" cat var/admin-token)
code=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$URL/ui/"); echo "GET /ui/ without a session: $code"
login=$(curl -s -D - -o /dev/null "$URL/ui/login" --data-urlencode "token=$token" --data-urlencode "next=/ui/")
cookie=$(grep -i '^set-cookie: gateway_session=' <<<"$login" | sed 's/^[Ss]et-[Cc]ookie: //; s/;.*//' | tr -d '\r')
[ -n "$cookie" ] || fail "login gave no session cookie"
page=$(curl -sf -H "cookie: $cookie" "$URL/ui/")
expect "digits" "$page"
for asset in $(grep -o -E '(href|src)="/ui/static/[^"]+"' <<<"$page" | sed -E 's/^(href|src)="//; s/"$//' | sort -u); do
  echo "$asset $(curl -s -o /dev/null -w '%{http_code}' "$URL$asset")"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL$asset")" = 200 ] || fail "$asset"
done
echo "overview page: $(wc -c <<<"$page") bytes, release page: $(curl -sf -H "cookie: $cookie" "$URL/ui/releases/digits" | wc -c) bytes"

step "state survives a restart (same container, same volume)"
docker restart "$NAME" >/dev/null
wait_healthy
flag_after=$(cli release status digits --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["flag_version"], json.dumps(s["split"], sort_keys=True))')
echo "after restart: $flag_after"
[ "$flag_before" = "$flag_after" ] || fail "state changed across the restart: $flag_before -> $flag_after"
[ "$(docker exec "$NAME" cat var/admin-token)" = "$token" ] || fail "the token changed across the restart"
echo "same flag version and split, same generated token"
echo; echo "all checks passed"
