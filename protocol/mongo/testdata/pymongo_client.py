"""PyMongo as an unmodified client of the Mongo proxy (driven by
pymongo_test.go): connects to the URI in argv[1], pings, and prints one
JSON line saying what happened, so the Go test checks the outcome rather
than parsing a traceback. argv[2] is serverSelectionTimeoutMS; argv[3]
"crud" runs insert, find, update, delete and a batched find instead of the
unrouted find."""
import json
import sys

import pymongo
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError


def main():
    uri = sys.argv[1]
    out = {"pymongo": pymongo.version}
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(sys.argv[2]) if len(sys.argv) > 2 else 5000)
    try:
        out["ping"] = client.admin.command("ping")["ok"]
        hello = client.admin.command("isMaster")
        out["msg"] = hello.get("msg")
        out["maxWireVersion"] = hello.get("maxWireVersion")
        out["server_version"] = client.server_info()["version"]
        if len(sys.argv) > 3 and sys.argv[3] == "crud":
            coll = client.app.pycrud
            coll.insert_one({"_id": 1, "name": "ada"})
            out["found"] = coll.find_one({"_id": 1})["name"]
            out["modified"] = coll.update_one({"_id": 1}, {"$set": {"name": "grace"}}).modified_count
            out["updated"] = coll.find_one({"_id": 1})["name"]
            out["deleted"] = coll.delete_one({"_id": 1}).deleted_count
            coll.insert_many([{"_id": i} for i in range(1000)])
            out["batched"] = len(list(coll.find({}, batch_size=100)))
        else:
            try:
                client.app.command("find", "users")
            except OperationFailure as e:
                out["find_code"] = e.code
    except OperationFailure as e:
        out["error_code"] = e.code
        out["error"] = str(e)
    except ServerSelectionTimeoutError as e:
        out["error"] = "ServerSelectionTimeoutError: " + str(e)
    finally:
        client.close()
    print(json.dumps(out))


main()
