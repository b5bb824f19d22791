#!/usr/bin/python3
"""The Mongo client matrix's workload with PyMongo at its default settings.

Usage: mongo_workload.py workload

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
from pymongo import monitoring
from pymongo.errors import DuplicateKeyError

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


def main():
    mode = sys.argv[1]
    if mode != "workload":
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

    if not check("connect", connect):
        return
    check("crud", lambda: crud(db[prefix + "_crud"]))
    check("cursor", lambda: cursor(db[prefix + "_cursor"]))
    check("insert_many", lambda: insert_many(db[prefix + "_many"]))
    check("errors", lambda: errors(db[prefix + "_errors"]))
    client.close()


if __name__ == "__main__":
    main()
