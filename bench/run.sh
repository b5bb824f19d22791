#!/usr/bin/env bash
# make bench: sysbench through five paths in one run (BENCH_ROUNDS rounds of
# BENCH_TIME seconds per target, interleaved; medians reported) — direct to a replica,
# HAProxy (TCP mode, round robin over the replicas), a bare Go TCP relay
# (bench/gorelay: the yardstick for any Go proxy on this machine), ProxySQL
# (the peer users pick; built from source in $PEERS, ../shared/peers by
# default, started by its start-proxysql.sh; the results say so when it is
# absent) and routerd — and 2000 idle clients against routerd: Go clients
# (bench/idleclients) against the proxy p1, and PyMySQL clients with default
# settings (autocommit off; bench/pyidle) against the sandbox's second
# proxy p2, fresh, so neither figure carries the other's memory — and a
# read-after-write workload (bench/readafterwrite) direct to the primary and
# through routerd with each causal_reads mode (off, session, proxy) — and
# the Mongo rows (bench/mongo.sh: find by _id direct to a FerretDB member and
# through a routerd's Mongo proxy, and 1000 idle authenticated driver
# connections). Writes bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${BENCH_TIME:-10}
ROUNDS=${BENCH_ROUNDS:-5}
THREADS=8
ROUTER=127.0.0.1:16033
ADMIN=127.0.0.1:17080
HAPORT=16300
RELAYPORT=16310
PEERS=${PEERS:-../shared/peers}
PSQLPORT=16035
work=$(mktemp -d /tmp/dbrouter-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

bin/sandbox -mongo=false -listen "$ROUTER" -admin "$ADMIN" -listen2 127.0.0.1:16034 -admin2 127.0.0.1:17090 -control-ports 17300 -dir "$work/cluster" -remote-latency 0 >"$work/sandbox.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do grep -q "sandbox is up" "$work/sandbox.log" && break; sleep 0.5; done
grep -q "sandbox is up" "$work/sandbox.log" || { cat "$work/sandbox.log"; echo "bench: sandbox did not come up"; exit 1; }
mapfile -t ports < <(grep -o 'addr: "127.0.0.1:[0-9]*"' "$work/cluster/routerd.yaml" | grep -o '[0-9]*"$' | tr -d '"')
P1=${ports[0]} P2=${ports[1]} P3=${ports[2]}
routerd_pid=$(pgrep -f "routerd --config $work/cluster/routerd.yaml" | head -1)
routerd2_pid=$(pgrep -f "routerd --config $work/cluster/p2.yaml" | head -1)

cat >"$work/haproxy.cfg" <<CFG
global
  maxconn 8192
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
listen mysql
  bind 127.0.0.1:$HAPORT
  balance roundrobin
  server db2 127.0.0.1:$P2
  server db3 127.0.0.1:$P3
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
# Built like routerd (make build's RUNTIME_TUNING), so the yardstick is fair.
go build -ldflags="${RUNTIME_TUNING:?run through make bench}" -o "$work/gorelay" ./bench/gorelay
"$work/gorelay" -listen "127.0.0.1:$RELAYPORT" -backends "127.0.0.1:$P2,127.0.0.1:$P3" >"$work/gorelay.log" 2>&1 &
pids+=($!)
# ProxySQL: writer db1, readers db2 and db3 (its rules send SELECTs to the
# readers), one worker thread per core, no health checks (the sandbox's
# members have no monitor account).
proxysql=absent
if [ -x "$PEERS/proxysql" ] && [ -x "$PEERS/start-proxysql.sh" ]; then
  if ldd "$PEERS/proxysql" | grep -q "not found"; then
    echo "bench: installing ProxySQL's libraries"
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y -qq libcivetweb1 libcurl4 libssl3 libgnutls30 >/dev/null
  fi
  PSQL_MONITOR=false PSQL_THREADS=$(nproc) PSQL_ADDR=127.0.0.1:$PSQLPORT PSQL_ADMIN_ADDR=127.0.0.1:16036 PSQL_DIR="$work/proxysql" \
    "$PEERS/start-proxysql.sh" "127.0.0.1:$P1" "127.0.0.1:$P2" "127.0.0.1:$P3" >"$work/proxysql.log" 2>&1 &
  pids+=($!)
  proxysql=$("$PEERS/proxysql" --version 2>/dev/null | grep -o '[0-9]\+\.[0-9][0-9.]*[-0-9a-z]*' | head -1 || true)
  proxysql=${proxysql:-unknown}
fi

sb() { sysbench "$@" --mysql-host=127.0.0.1 --mysql-user=app --mysql-password=app --mysql-db=sbtest --tables=2 --table-size=10000; }
echo "bench: preparing 2 tables x 10000 rows on the primary"
sb oltp_point_select --mysql-port="$P1" prepare >/dev/null
for p in "$P2" "$P3"; do
  for _ in $(seq 1 100); do
    n=$(mariadb -h 127.0.0.1 -P "$p" -u app -papp -N -e "SELECT COUNT(*) FROM sbtest.sbtest2" 2>/dev/null || echo 0)
    [ "$n" = 10000 ] && break; sleep 0.2
  done
done

declare -A QPS P95 ALLQ ALLP
run() { # workload[@threads] label port extra...
  local w=$1 label=$2 port=$3; shift 3
  local out q p threads=$THREADS
  [[ $w == *@* ]] && threads=${w#*@}
  out=$(sb "${w%@*}" --mysql-port="$port" --threads="$threads" --time="$DUR" --db-ps-mode=auto --report-interval=0 "$@" run)
  q=$(echo "$out" | sed -n 's/.*queries: .*(\(.*\) per sec.)/\1/p' | head -1)
  p=$(echo "$out" | awk '/95th percentile:/ {print $3}')
  ALLQ[$w/$label]+="$q "
  ALLP[$w/$label]+="$p "
  printf 'bench: %-18s %-8s qps %10s  p95 %6s ms\n' "$w" "$label" "$q" "$p"
}
# ProxySQL answers once it has loaded its config.
if [ "$proxysql" != absent ]; then
  for _ in $(seq 1 100); do
    mariadb -h 127.0.0.1 -P "$PSQLPORT" -u app -papp -N -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2
  done
  mariadb -h 127.0.0.1 -P "$PSQLPORT" -u app -papp -N -e "SELECT 1" >/dev/null || { cat "$work/proxysql.log"; echo "bench: ProxySQL did not come up"; exit 1; }
fi
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Targets are interleaved round by round, and medians reported: the machine
# is shared, and one run per target measures the neighbours as much as us.
# oltp_point_select@1: one client, where a proxy's per-statement latency
# shows undiluted by queueing.
WORKLOADS="oltp_point_select oltp_read_only oltp_point_select@1"
for round in $(seq 1 "$ROUNDS"); do
  for w in $WORKLOADS; do
    extra=()
    # sysbench wraps read_only in BEGIN/COMMIT; transactions stay on the
    # primary by design, so measure the read path with skip_trx.
    [ "$w" = oltp_read_only ] && extra=(--skip_trx=on)
    run "$w" direct "$P2" "${extra[@]}"
    run "$w" haproxy "$HAPORT" "${extra[@]}"
    run "$w" gorelay "$RELAYPORT" "${extra[@]}"
    if [ "$proxysql" != absent ]; then run "$w" proxysql "$PSQLPORT" "${extra[@]}"; fi
    run "$w" routerd "${ROUTER##*:}" "${extra[@]}"
  done
done
for k in "${!ALLQ[@]}"; do
  QPS[$k]=$(echo "${ALLQ[$k]}" | median)
  P95[$k]=$(echo "${ALLP[$k]}" | median)
done

idle=$(go run ./bench/idleclients -addr "$ROUTER" -admin "$ADMIN" -n 2000 -pid "$routerd_pid")
echo "bench: $idle"
# Debian's python3-pymysql is for the system interpreter (make deps).
pyidle=$(/usr/bin/python3 bench/pyidle/idle.py --port 16034 -n 2000 --pid "$routerd2_pid" --admin 127.0.0.1:17090)
echo "bench: $pyidle"

# Read-after-write (causal_reads): each client writes a row and reads it
# back on the same connection (bench/readafterwrite, THREADS clients).
# direct = the primary itself; routerd off/session/proxy = three standalone
# routerd (no control plane, the sandbox's members and accounts), one per
# causal_reads mode, so each mode runs in an otherwise identical process.
go build -o "$work/readafterwrite" ./bench/readafterwrite
declare -A RAWPORT=([off]=16041 [session]=16042 [proxy]=16043) RAWADMIN=([off]=17181 [session]=17182 [proxy]=17183)
for mode in off session proxy; do
  awk -v mode="$mode" -v listen="127.0.0.1:${RAWPORT[$mode]}" -v admin="127.0.0.1:${RAWADMIN[$mode]}" '
    /^control:/ {skip = 1; next}
    /^clusters:/ {skip = 0}
    skip {next}
    /^name:/ {print "name: raw-" mode; next}
    /^  listen:/ {print "  listen: " admin; next}
    /^    listen:/ {print "    listen: " listen; print "    causal_reads: " mode; next}
    {print}' "$work/cluster/routerd.yaml" >"$work/raw-$mode.yaml"
  bin/routerd --config "$work/raw-$mode.yaml" >"$work/raw-$mode.log" 2>&1 &
  pids+=($!)
done
for mode in off session proxy; do
  for _ in $(seq 1 100); do
    mariadb -h 127.0.0.1 -P "${RAWPORT[$mode]}" -u app -papp -N -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2
  done
done
declare -A RAWQ RAWP RAWS ALLRAW
rawrun() { # label port
  local out q p st
  out=$("$work/readafterwrite" -addr "127.0.0.1:$2" -clients "$THREADS" -time "${DUR}s" -table sbtest.raw)
  q=$(echo "$out" | sed -n 's/.*pairs_per_sec=\([^ ]*\).*/\1/p')
  p=$(echo "$out" | sed -n 's/.*p95_ms=\([^ ]*\).*/\1/p')
  st=$(echo "$out" | sed -n 's/.*stale=\([^ ]*\).*/\1/p')
  ALLRAW[$1]+="$q/$p/$st "
  RAWQ[$1]+="$q "; RAWP[$1]+="$p "; RAWS[$1]+="$st "
  printf 'bench: %-18s %-8s pairs/s %8s  p95 %6s ms  stale %s\n' read-after-write "$1" "$q" "$p" "$st"
}
RAWTARGETS="direct off session proxy"
for round in $(seq 1 "$ROUNDS"); do
  rawrun direct "$P1"
  for mode in off session proxy; do rawrun "$mode" "${RAWPORT[$mode]}"; done
done
for k in $RAWTARGETS; do
  RAWQ[$k]=$(echo "${RAWQ[$k]}" | median)
  RAWP[$k]=$(echo "${RAWP[$k]}" | median)
  RAWS[$k]=$(echo "${RAWS[$k]}" | median)
done

# MongoDB: its own FerretDB member and routerd (the sandbox has no Mongo
# yet), same rounds and durations. A failure there leaves the MariaDB
# results written, and says so in them.
if ! bench/mongo.sh >"$work/mongo.md"; then
  printf '## MongoDB\n\nNot measured: bench/mongo.sh failed (its output is in the log of this run).\n' >"$work/mongo.md"
  echo "bench: bench/mongo.sh failed"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
{
  echo "# Benchmarks"
  echo
  echo "Made by \`make bench\` (bench/run.sh) on $(date -u +%Y-%m-%d) — $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB;"
  echo "sysbench $(sysbench --version | awk '{print $2}'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), $(mariadbd --version | awk '{print $3}')."
  echo "Everything (3 mariadbd, HAProxy, gorelay, ProxySQL and routerd, sysbench, and the sandbox's 3 arbiters and second proxy idling in the background) shares the same cores, so compare ratios, not absolute numbers. routerd is the sandbox's proxy p1, under the control plane (reads need no lease)."
  echo
  echo "Command per run: \`sysbench WORKLOAD --threads=$THREADS (1 for the one-thread row) --time=$DUR --db-ps-mode=auto --tables=2 --table-size=10000 run\`;"
  echo "$ROUNDS rounds, targets interleaved within each round; the table shows medians (all runs below)."
  echo "(oltp_read_only with \`--skip_trx=on\`: inside BEGIN/COMMIT routerd keeps the session on the primary by design)."
  if [ "$proxysql" = absent ]; then
    echo "ProxySQL: not run (no \`proxysql\` and \`start-proxysql.sh\` in \`$PEERS\`; set PEERS)."
  else
    echo "proxysql = ProxySQL $proxysql built from source (\`$PEERS/start-proxysql.sh\`: writer db1, readers db2 and db3, \`^SELECT\` to the readers, mysql-threads=$(nproc), no health checks)."
  fi
  echo "direct = one replica; haproxy = TCP mode, round robin over both replicas; gorelay = bench/gorelay, a bare Go TCP relay (two goroutines per connection, no protocol parsing) binding each client to one replica round-robin: what any Go proxy can reach here; routerd = reads to both replicas. gorelay and routerd are built with the Makefile's RUNTIME_TUNING (docs/operations.md)."
  echo
  echo "| workload | direct qps | haproxy qps | gorelay qps | proxysql qps | routerd qps | routerd/haproxy qps | routerd/gorelay qps | routerd/proxysql qps | direct p95 ms | haproxy p95 ms | gorelay p95 ms | proxysql p95 ms | routerd p95 ms | routerd/haproxy p95 | gorelay/haproxy p95 |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for w in $WORKLOADS; do
    echo "| ${w/@1/, 1 thread} | ${QPS[$w/direct]} | ${QPS[$w/haproxy]} | ${QPS[$w/gorelay]} | ${QPS[$w/proxysql]:-n/a} | ${QPS[$w/routerd]} | $(ratio "${QPS[$w/routerd]}" "${QPS[$w/haproxy]}") | $(ratio "${QPS[$w/routerd]}" "${QPS[$w/gorelay]}") | $(ratio "${QPS[$w/routerd]}" "${QPS[$w/proxysql]:-0}") | ${P95[$w/direct]} | ${P95[$w/haproxy]} | ${P95[$w/gorelay]} | ${P95[$w/proxysql]:-n/a} | ${P95[$w/routerd]} | $(ratio "${P95[$w/routerd]}" "${P95[$w/haproxy]}") | $(ratio "${P95[$w/gorelay]}" "${P95[$w/haproxy]}") |"
  done
  echo
  echo "All runs (qps / p95 ms, in round order):"
  echo
  for k in $(echo "${!ALLQ[@]}" | tr ' ' '\n' | sort); do
    echo "- $k: qps ${ALLQ[$k]}/ p95 ${ALLP[$k]}"
  done
  echo
  echo "Idle clients (each ran one SELECT, then stayed connected):"
  echo
  echo "- Go (go-sql-driver/mysql, bench/idleclients), through p1 after the sysbench runs: \`$idle\`"
  echo "- PyMySQL $(/usr/bin/python3 -c 'import pymysql; print(pymysql.__version__)') with default settings (autocommit off, so each sent \`SET AUTOCOMMIT = 0\`; bench/pyidle), through the fresh second proxy p2: \`$pyidle\`"
  echo
  echo "(rss_mib is that routerd's VmRSS; backend_connections is the total it has open to all members)."
  echo
  echo "Read-after-write (\`causal_reads\`, docs/routing.md): $THREADS clients (bench/readafterwrite), each on its own connection writing a row (autocommit \`INSERT\`) and reading it back by primary key, for $DUR s per run, $ROUNDS rounds interleaved, medians."
  echo "A pair is the write and its read; stale counts reads that did not find the row just written. direct = the primary (every read sees its write); routerd = a standalone routerd per mode in front of the same members (reads to both replicas)."
  echo
  echo "| target | pairs/s | p95 ms | stale reads | pairs/s vs direct | p95 vs direct | pairs/s vs off | p95 vs off |"
  echo "|---|---|---|---|---|---|---|---|"
  for k in $RAWTARGETS; do
    label="routerd causal_reads: $k"
    [ "$k" = direct ] && label=direct
    echo "| $label | ${RAWQ[$k]} | ${RAWP[$k]} | ${RAWS[$k]} | $(ratio "${RAWQ[$k]}" "${RAWQ[direct]}") | $(ratio "${RAWP[$k]}" "${RAWP[direct]}") | $(ratio "${RAWQ[$k]}" "${RAWQ[off]}") | $(ratio "${RAWP[$k]}" "${RAWP[off]}") |"
  done
  echo
  echo "All read-after-write runs (pairs/s / p95 ms / stale, in round order):"
  echo
  for k in $RAWTARGETS; do
    echo "- $k: ${ALLRAW[$k]}"
  done
  echo
  cat "$work/mongo.md"
} > bench/RESULTS.md
cat bench/RESULTS.md
