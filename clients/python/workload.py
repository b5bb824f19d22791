#!/usr/bin/python3
"""The client matrix's application workload with a Python DB-API driver.

Usage: workload.py pymysql|mysqldb workload|restart|promote

Connection and table come from DBR_HOST, DBR_PORT, DBR_USER, DBR_PASSWORD,
DBR_DATABASE, DBR_TABLE (and DBR_STOP_FILE for promote). The driver runs at
its default settings: autocommit off, as in every DB-API driver, so the
workload commits as an application would. The lines printed are the
protocol clients/doc.go describes ("ok CHECK", "fail CHECK: why", "ready",
"tick", "info ...").

Run /usr/bin/python3: Debian's python3-pymysql and python3-mysqldb are
installed for it, not for another python3 that may come first on PATH.
"""

import hashlib
import os
import sys
import time

BIG_ROW = 20 << 20


def env(name):
    v = os.environ.get(name)
    if v is None:
        sys.exit("missing environment variable " + name)
    return v


def say(line):
    print(line, flush=True)


def main():
    driver, mode = sys.argv[1], sys.argv[2]
    if driver == "pymysql":
        import pymysql as db
    elif driver == "mysqldb":
        import MySQLdb as db
    else:
        sys.exit("unknown driver " + driver)
    table = env("DBR_TABLE")

    def connect():
        return db.connect(host=env("DBR_HOST"), port=int(env("DBR_PORT")), user=env("DBR_USER"),
                          password=env("DBR_PASSWORD"), database=env("DBR_DATABASE"))

    def one(cur, sql, args=None):
        cur.execute(sql, args)
        row = cur.fetchone()
        return None if row is None else row[0]

    if mode == "workload":
        workload(db, connect, one, table)
    elif mode == "restart":
        restart(connect, one, table)
    elif mode == "promote":
        promote(connect, one, table)
    else:
        sys.exit("unknown mode " + mode)


def check(name, f):
    try:
        f()
    except Exception as e:  # every failure is a result, not a crash
        say("fail %s: %r" % (name, e))
        return False
    say("ok " + name)
    return True


def workload(db, connect, one, table):
    conn = None

    def do_connect():
        nonlocal conn
        conn = connect()
        if one(conn.cursor(), "SELECT 1") != 1:
            raise AssertionError("SELECT 1 did not answer 1")

    if not check("connect", do_connect):
        return
    cur = conn.cursor()

    def write_read():
        cur.execute("INSERT INTO " + table + " (id, v) VALUES (1, 'written')")
        conn.commit()
        got = one(cur, "SELECT v FROM " + table + " WHERE id = 1")
        if got != "written":
            raise AssertionError("read back %r, want 'written'" % (got,))

    def rollback():
        cur.execute("INSERT INTO " + table + " (id, v) VALUES (2, 'rolled back')")
        conn.rollback()
        n = one(cur, "SELECT COUNT(*) FROM " + table + " WHERE id = 2")
        if n != 0:
            raise AssertionError("the rolled-back row is there (%r rows)" % (n,))

    def prepared():
        # DB-API drivers bind parameters on the client (no server-side
        # prepared statements at default settings).
        cur.execute("INSERT INTO " + table + " (id, v) VALUES (%s, %s)", (3, "prepared"))
        conn.commit()
        got = one(cur, "SELECT v FROM " + table + " WHERE id = %s", (3,))
        if got != "prepared":
            raise AssertionError("read back %r, want 'prepared'" % (got,))

    def big_row():
        data = os.urandom(BIG_ROW)
        cur.execute("INSERT INTO " + table + " (id, b) VALUES (%s, %s)", (4, data))
        conn.commit()
        got = one(cur, "SELECT b FROM " + table + " WHERE id = %s", (4,))
        if got is None or hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
            raise AssertionError("read back %d bytes with another checksum" % (len(got or b""),))

    def dup_key():
        try:
            cur.execute("INSERT INTO " + table + " (id, v) VALUES (1, 'again')")
        except db.IntegrityError as e:
            conn.rollback()
            if e.args[0] != 1062:
                raise AssertionError("error %r, want 1062" % (e.args,))
            return
        raise AssertionError("a duplicate key was accepted")

    for name, f in [("write_read", write_read), ("rollback", rollback), ("prepared", prepared),
                    ("big_row", big_row), ("dup_key", dup_key)]:
        check(name, f)
    conn.close()


def restart(connect, one, table):
    conn = connect()
    one(conn.cursor(), "SELECT 1")
    say("ready")
    sys.stdin.readline()  # the proxy has restarted
    try:
        one(conn.cursor(), "SELECT 1")
        say("info old connection still answers")
    except Exception as e:
        say("info old connection: %r" % (e,))
    deadline, last = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        try:
            conn = connect()
            cur = conn.cursor()
            cur.execute("REPLACE INTO " + table + " (id, v) VALUES (100, 'reconnected')")
            conn.commit()
            got = one(cur, "SELECT v FROM " + table + " WHERE id = 100")
            if got != "reconnected":
                raise AssertionError("read back %r" % (got,))
            say("ok reconnect")
            return
        except Exception as e:
            last = e
            time.sleep(0.1)
    say("fail reconnect: %r" % (last,))


def promote(connect, one, table):
    stop = env("DBR_STOP_FILE")
    n = 0
    try:
        conn = connect()
        cur = conn.cursor()
        while not os.path.exists(stop):
            i = 1000 + n
            cur.execute("INSERT INTO " + table + " (id, v) VALUES (%s, 'p')", (i,))
            conn.commit()
            got = one(cur, "SELECT v FROM " + table + " WHERE id = %s", (i,))
            if got != "p":
                raise AssertionError("row %d read back as %r" % (i, got))
            n += 1
            if n == 1:
                say("ready")
            say("tick")
    except Exception as e:
        say("fail promote: after %d writes: %r" % (n, e))
        sys.exit(1)
    say("ok promote %d" % n)


if __name__ == "__main__":
    main()
