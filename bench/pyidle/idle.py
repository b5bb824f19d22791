#!/usr/bin/python3
"""Hold N idle PyMySQL connections, each having run one SELECT 1.

PyMySQL with its default settings, as an application would use it:
autocommit is off (as in every Python DB-API driver), so each connection
sends SET AUTOCOMMIT = 0 after the handshake. Used by make bench (with
--pid and --admin: prints the proxy's RSS and backend connections) and by
protocol/mysql's TestIdlePyMySQLClientsShareFewBackendConnections (without
them: prints "held N", then holds the connections until stdin closes).
"""
import argparse
import json
import resource
import sys
import urllib.request

try:
    import pymysql
except ImportError as e:
    sys.exit(f"pyidle: {e}: install python3-pymysql (make deps does)")


def raise_fd_limit(n):
    # One descriptor per connection, and some for the interpreter: the
    # default soft limit (often 1024) is too low for 2000 clients.
    need = n + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit(f"pyidle: {n} connections need {need} file descriptors, the hard limit (ulimit -Hn) is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def backend_connections(admin):
    with urllib.request.urlopen(f"http://{admin}/status", timeout=10) as r:
        st = json.load(r)
    return sum(m.get("backend_connections", 0) for c in st.get("clusters", []) for m in c.get("members", []))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6033)
    ap.add_argument("--user", default="app")
    ap.add_argument("--password", default="app")
    ap.add_argument("--database", default="app")
    ap.add_argument("-n", type=int, default=2000, help="connections")
    ap.add_argument("--pid", type=int, default=0, help="proxy pid: report its RSS")
    ap.add_argument("--admin", default="", help="proxy admin API: report its backend connections")
    args = ap.parse_args()
    raise_fd_limit(args.n)
    conns = []
    for i in range(args.n):
        try:
            c = pymysql.connect(host=args.host, port=args.port, user=args.user, password=args.password,
                                database=args.database, connect_timeout=30)
            with c.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        except pymysql.MySQLError as e:
            sys.exit(f"pyidle: client {i + 1} of {args.n}: {e}")
        conns.append(c)
    if args.pid or args.admin:
        import time
        time.sleep(1)  # let the proxy settle, as bench/idleclients does
        rss = f"{rss_mib(args.pid):.1f}" if args.pid else "?"
        backend = backend_connections(args.admin) if args.admin else "?"
        print(f"pymysql_idle_clients={len(conns)} rss_mib={rss} backend_connections={backend}", flush=True)
    else:
        print(f"held {len(conns)}", flush=True)
        sys.stdin.read()
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
