#!/usr/bin/env bash
# The Mongo rows of make bench (bench/run.sh runs it; alone, after make
# build: RUNTIME_TUNING="$(make -s -n build | grep -o "\-X=[^']*" | head -1)" bench/mongo.sh). The sandbox has no Mongo yet, so
# this starts its own: one FerretDB member (cmd/ferretmember) and a standalone
# routerd (bin/routerd, no control plane) with a kind mongodb cluster in
# front of it, loopback only.
#
# - find by _id on a small collection (bench/mongofind: N goroutines sharing
#   one Go driver client, each FindOne by a random _id), directly against the
#   member, through bench/gorelay (a bare Go TCP relay: what any Go proxy
#   reaches here) and through the routerd, same client, BENCH_ROUNDS rounds
#   of BENCH_TIME seconds, targets interleaved, medians;
# - routerd's RSS with 1000 idle authenticated driver connections
#   (bench/mongoidle: 1000 driver clients, each with its pooled connection
#   authenticated and its monitoring connection), on a second routerd
#   started fresh for it.
#
# Progress goes to stderr; the Markdown section for bench/RESULTS.md to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${BENCH_TIME:-10}
ROUNDS=${BENCH_ROUNDS:-5}
CLIENTS=${MONGO_CLIENTS:-8 1}
IDLE=${MONGO_IDLE:-1000}
# 100 documents: FerretDB finds a string _id by its key, but the cost still
# grows with the collection (1000 documents: ~1.2 ms per find, 100: ~0.5).
DOCS=100
MEMBER=127.0.0.1:16018
PROXY=127.0.0.1:16017
ADMIN=127.0.0.1:17117
IDLEPROXY=127.0.0.1:16019
IDLEADMIN=127.0.0.1:17118
RELAY=127.0.0.1:16016
USER_=app PASS=app
work=$(mktemp -d /tmp/dbrouter-bench-mongo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "bench: $*" >&2; }

[ -x bin/routerd ] || { say "bin/routerd missing: run through make bench (or make build first)"; exit 1; }
go build -o "$work/ferretmember" ./cmd/ferretmember
go build -o "$work/mongofind" ./bench/mongofind
go build -o "$work/mongoidle" ./bench/mongoidle
# Built like routerd (make build's RUNTIME_TUNING), so the yardstick is fair.
go build -ldflags="${RUNTIME_TUNING:?run through make bench, or see the top of bench/mongo.sh}" -o "$work/gorelay" ./bench/gorelay

"$work/ferretmember" -port "${MEMBER##*:}" -dir "$work/member" -log-level warn >"$work/member.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do grep -qs "ferretmember ready" "$work/member.log" && break; sleep 0.5; done
grep -q "ferretmember ready" "$work/member.log" || { cat "$work/member.log" >&2; say "FerretDB member did not come up"; exit 1; }

# routerd LISTEN ADMIN NAME: a standalone routerd with one kind mongodb
# cluster, its defaults but the account; its pid in RPID.
routerd() {
  cat >"$work/$3.yaml" <<CFG
role: proxy
admin: {listen: "$2"}
clusters:
  - name: $3
    kind: mongodb
    listen: "$1"
    users: [{name: $USER_, password: $PASS}]
    members:
      - {name: m1, addr: "$MEMBER"}
CFG
  bin/routerd --config "$work/$3.yaml" >"$work/$3.log" 2>&1 &
  RPID=$!
  pids+=("$RPID")
  waitport "$1" "$work/$3.log"
}
# waitport ADDR LOG: wait up to 20 s for ADDR to accept connections.
waitport() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return; sleep 0.2; done
  cat "$2" >&2; say "nothing listens on $1"; exit 1
}
routerd "$PROXY" "$ADMIN" mongo
"$work/gorelay" -listen "$RELAY" -backends "$MEMBER" >"$work/gorelay.log" 2>&1 &
pids+=($!)
waitport "$RELAY" "$work/gorelay.log"

DIRECT_URI="mongodb://$MEMBER/?directConnection=true"
PROXY_URI="mongodb://$USER_:$PASS@$PROXY/?authSource=admin"
RELAY_URI="mongodb://$RELAY/?directConnection=true"
TARGETS="direct gorelay routerd"
"$work/mongofind" -uri "$DIRECT_URI" -setup -docs "$DOCS"

declare -A ALL Q P
for round in $(seq 1 "$ROUNDS"); do
  for c in $CLIENTS; do
    for target in $TARGETS; do
      case $target in
        direct) uri=$DIRECT_URI ;;
        gorelay) uri=$RELAY_URI ;;
        routerd) uri=$PROXY_URI ;;
      esac
      out=$("$work/mongofind" -uri "$uri" -clients "$c" -time "${DUR}s" -docs "$DOCS")
      q=$(echo "$out" | sed -n 's/.*qps=\([^ ]*\).*/\1/p')
      p=$(echo "$out" | sed -n 's/.*p95_ms=\([^ ]*\).*/\1/p')
      ALL[$c/$target]+="$q/$p "
      Q[$c/$target]+="$q "
      P[$c/$target]+="$p "
      say "$(printf 'mongo find %-2s clients %-8s qps %10s  p95 %6s ms' "$c" "$target" "$q" "$p")"
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

routerd "$IDLEPROXY" "$IDLEADMIN" mongoidle
idle=$("$work/mongoidle" -uri "mongodb://$USER_:$PASS@$IDLEPROXY/?authSource=admin" -n "$IDLE" -pid "$RPID" -admin "$IDLEADMIN")
say "$idle"

echo "## MongoDB"
echo
echo "The sandbox has no Mongo yet: bench/mongo.sh starts one FerretDB $(go list -m -f '{{.Version}}' github.com/FerretDB/FerretDB) member (cmd/ferretmember, SQLite) and a standalone routerd (bin/routerd, kind mongodb, no control plane, SCRAM-SHA-256 at the proxy) in front of it, on the same cores."
echo
echo "find by \`_id\` (bench/mongofind: N goroutines sharing one Go driver v2 client, \`FindOne\` by a random \`_id\` of a $DOCS-document collection, string \`_id\`s, $DUR s per run, $ROUNDS rounds, targets interleaved, medians). direct = the member itself (\`directConnection=true\`); gorelay = bench/gorelay in front of the member (a bare Go TCP relay, no protocol parsing, built with RUNTIME_TUNING: what any Go proxy reaches here); routerd = through the proxy, authenticated."
echo
echo "| clients | direct qps | gorelay qps | routerd qps | routerd/direct qps | gorelay/direct qps | routerd/gorelay qps | direct p95 ms | gorelay p95 ms | routerd p95 ms | routerd/direct p95 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for c in $CLIENTS; do
  dq=$(echo "${Q[$c/direct]}" | median) gq=$(echo "${Q[$c/gorelay]}" | median) rq=$(echo "${Q[$c/routerd]}" | median)
  dp=$(echo "${P[$c/direct]}" | median) gp=$(echo "${P[$c/gorelay]}" | median) rp=$(echo "${P[$c/routerd]}" | median)
  echo "| $c | $dq | $gq | $rq | $(ratio "$rq" "$dq") | $(ratio "$gq" "$dq") | $(ratio "$rq" "$gq") | $dp | $gp | $rp | $(ratio "$rp" "$dp") |"
done
echo
echo "All runs (qps/p95 ms, in round order):"
echo
for k in $(echo "${!ALL[@]}" | tr ' ' '\n' | sort -t/ -k1,1n -k2); do
  echo "- $k: ${ALL[$k]}"
done
echo
echo "Idle connections: $IDLE Go driver clients (bench/mongoidle), each of which ran one ping (so its pooled connection authenticated with SCRAM-SHA-256) and then sat idle, against a fresh routerd: \`$idle\`"
echo "(rss_before_mib is that routerd's VmRSS before the clients connected, rss_mib with them; client_sessions counts each client's monitoring connection too, which polls \`hello\` every 10 s without authenticating. One client holding its pool at $IDLE would fill it only 10 connections per 10 s: the Go driver's minPoolSize upkeep.)"
