#!/usr/bin/python3
"""The Mongo client matrix's workload with PyMongo at its default settings.

Usage: mongo_workload.py workload|read_preference|retryable|transaction|promote

The proxy and the account come from DBR_HOST, DBR_PORT, DBR_USER and
DBR_PASSWORD (the URI is the one an application writes:
mongodb://USER:PASSWORD@HOST:PORT/?authSource=admin, and MongoClient gets
nothing else), the client's database from DBR_DATABASE and the prefix of its
collections from DBR_TABLE. The lines printed are the protocol clients/doc.go
describes ("ok CHECK", "fail CHECK: why", "info ...").

Run /usr/bin/python3: Debian's python3-pymongo (3.11) is installed for it,
not for another python3 that may come first on PATH.
"""

import os
import sys
from urllib.parse import quote_plus

import pymongo
from pymongo import ReadPreference, WriteConcern, monitoring
from pymongo.errors import DuplicateKeyError, OperationFailure

CURSOR_DOCS = 10000
INSERT_MANY_DOCS = 100000


def env(name):
    v = os.environ.get(name)
    if v is None:
        sys.exit("missing environment variable " + name)
    return v


def say(line):
    print(line, flush=True)


def check(name, f):
    try:
        f()
    except Exception as e:  # every failure is the check's, reported as such
        say("fail %s: %s: %s" % (name, type(e).__name__, str(e).replace("\n", " ")))
        return False
    say("ok " + name)
    return True


def expect(cond, why):
    if not cond:
        raise AssertionError(why)


class GetMores(monitoring.CommandListener):
    """Counts getMore commands: registered globally, it changes nothing the
    client does, and shows the cursor check read past the first batch."""

    n = 0

    def started(self, event):
        pass

    def succeeded(self, event):
        if event.command_name == "getMore":
            GetMores.n += 1

    def failed(self, event):
        pass


def crud(coll):
    coll.insert_one({"_id": 1, "v": "written"})
    got = coll.find_one({"_id": 1})
    expect(got is not None and got["v"] == "written", "find after insert: %r, want v written" % (got,))
    r = coll.update_one({"_id": 1}, {"$set": {"v": "updated"}})
    expect(r.matched_count == 1 and r.modified_count == 1,
           "update: %d matched, %d modified, want 1 and 1" % (r.matched_count, r.modified_count))
    got = coll.find_one({"_id": 1})
    expect(got is not None and got["v"] == "updated", "find after update: %r, want v updated" % (got,))
    r = coll.delete_one({"_id": 1})
    expect(r.deleted_count == 1, "delete: %d deleted, want 1" % r.deleted_count)
    got = coll.find_one({"_id": 1})
    expect(got is None, "find after delete: %r, want none" % (got,))


def cursor(coll):
    # One find at the default batch size: the server's first batch, then
    # getMore until the cursor is exhausted; every _id exactly once.
    coll.insert_many([{"_id": i, "n": i} for i in range(CURSOR_DOCS)])
    before = GetMores.n
    seen = bytearray(CURSOR_DOCS)
    n = 0
    for d in coll.find({}):
        i = d["_id"]
        expect(isinstance(i, int) and 0 <= i < CURSOR_DOCS, "document %d: _id %r was never written" % (n, i))
        expect(not seen[i], "document %d: _id %d seen twice" % (n, i))
        seen[i] = 1
        n += 1
    expect(n == CURSOR_DOCS, "read %d documents, want %d" % (n, CURSOR_DOCS))
    expect(GetMores.n > before, "every document came in the first batch: no getMore was sent")
    say("info cursor: %d documents with %d getMore" % (n, GetMores.n - before))


def insert_many(coll):
    r = coll.insert_many([{"_id": i, "n": i} for i in range(INSERT_MANY_DOCS)])
    expect(len(r.inserted_ids) == INSERT_MANY_DOCS,
           "%d inserted ids, want %d" % (len(r.inserted_ids), INSERT_MANY_DOCS))


def errors(coll):
    coll.insert_one({"_id": 1})
    try:
        coll.insert_one({"_id": 1})
    except DuplicateKeyError as e:
        expect(e.code == 11000, "DuplicateKeyError with code %r, want 11000" % e.code)
        return
    raise AssertionError("second insert of _id 1 succeeded, want DuplicateKeyError (11000)")


def read_preference(coll):
    """Reads the document naming the member that holds it (the test set it
    up) 20 times with each read preference."""
    primary = env("DBR_PRIMARY")
    secondaries = env("DBR_SECONDARIES").split(",")
    seen = {}
    for name, rp in (("primary", ReadPreference.PRIMARY), ("secondary", ReadPreference.SECONDARY),
                     ("nearest", ReadPreference.NEAREST)):
        c = coll.with_options(read_preference=rp)
        seen[name] = {}
        for _ in range(20):
            d = c.find_one({"_id": "rp"})
            expect(d is not None, "read with %s: no document" % name)
            seen[name][d["member"]] = seen[name].get(d["member"], 0) + 1
    desc = "primary %r, secondary %r, nearest %r" % (seen["primary"], seen["secondary"], seen["nearest"])
    expect(list(seen["primary"]) == [primary], "primary reads not all from %s: %s" % (primary, desc))
    expect(sorted(seen["secondary"]) == sorted(secondaries),
           "secondary reads not from both of %s and only them: %s" % (secondaries, desc))
    expect(len(seen["nearest"]) >= 2, "nearest reads all from one member: " + desc)
    say("info read_preference: " + desc)


def retryable(coll):
    r = coll.update_one({"_id": "retry"}, {"$inc": {"n": 1}}, upsert=True)
    expect(r.upserted_id == "retry", "upsert: upserted_id %r, want 'retry' (the first attempt's reply)" % (r.upserted_id,))
    d = coll.find_one({"_id": "retry"})
    expect(d is not None and d["n"] == 1, "read back: %r, want n 1: applied exactly once" % (d,))


def transaction(client, coll):
    with client.start_session() as s:
        try:
            s.with_transaction(lambda s: coll.insert_one({"_id": 1}, session=s))
        except OperationFailure as e:
            expect(e.code == 20, "transaction: %s (code %r), want code 20 (IllegalOperation)" % (e, e.code))
            say("info transaction refused: %s" % e)
        else:
            raise AssertionError("the transaction committed, want code 20 (IllegalOperation)")
    n = coll.count_documents({})
    expect(n == 0, "after the refused transaction: %d documents, want 0" % n)


def promote(coll):
    """Writes and reads back _id 1000, 1001, ... until the stop file exists
    ("tick" after each)."""
    stop = env("DBR_STOP_FILE")
    n = 0
    while not os.path.exists(stop):
        i = 1000 + n
        try:
            coll.insert_one({"_id": i, "v": "p"})
            d = coll.find_one({"_id": i})
            expect(d is not None and d["v"] == "p", "read back %d: %r" % (i, d))
        except Exception as e:  # the loop's first error is the check's
            say("fail promote: after %d writes: %s: %s" % (n, type(e).__name__, str(e).replace("\n", " ")))
            return
        if n == 0:
            say("ready")
        say("tick")
        n += 1
    say("ok promote %d" % n)


def main():
    mode = sys.argv[1]
    if mode not in ("workload", "read_preference", "retryable", "transaction", "promote"):
        sys.exit("unknown mode " + mode)
    uri = "mongodb://%s:%s@%s:%s/?authSource=admin" % (
        quote_plus(env("DBR_USER")), quote_plus(env("DBR_PASSWORD")), env("DBR_HOST"), env("DBR_PORT"))
    monitoring.register(GetMores())
    client = pymongo.MongoClient(uri)
    say("info pymongo " + pymongo.version)
    db = client[env("DBR_DATABASE")]
    prefix = env("DBR_TABLE")
    def connect():
        client.admin.command("ping")
        # The proxy's auth gate lets ping through before authentication,
        # not listCollections.
        db.list_collection_names()

    if mode == "read_preference":
        check("read_preference", lambda: read_preference(db[prefix + "_rp"]))
    elif mode == "retryable":
        coll = db[prefix + "_retry"]
        # A first round trip, so that the write below is the only thing
        # the test's fault can hit.
        coll.insert_one({"_id": "warm"})
        say("ready")
        sys.stdin.readline()
        check("retryable", lambda: retryable(coll))
    elif mode == "transaction":
        check("transaction", lambda: transaction(client, db[prefix + "_txn"]))
    elif mode == "promote":
        promote(db.get_collection(prefix + "_promote", write_concern=WriteConcern(w="majority")))
    else:
        if not check("connect", connect):
            return
        check("crud", lambda: crud(db[prefix + "_crud"]))
        check("cursor", lambda: cursor(db[prefix + "_cursor"]))
        check("insert_many", lambda: insert_many(db[prefix + "_many"]))
        check("errors", lambda: errors(db[prefix + "_errors"]))
    client.close()


if __name__ == "__main__":
    main()
