// The Mongo client matrix's workload with Node's mongodb driver (6.x) at its
// default settings (new MongoClient(URI), with nothing else but command
// monitoring, which only reports).
//
// Usage: node mongo_workload.js workload|read_preference|retryable|transaction|promote. The proxy and the account come from
// DBR_HOST, DBR_PORT, DBR_USER and DBR_PASSWORD (the URI is the one an
// application writes: mongodb://USER:PASSWORD@HOST:PORT/?authSource=admin),
// the client's database from DBR_DATABASE and the prefix of its collections
// from DBR_TABLE; the lines printed are the protocol clients/doc.go
// describes. mongodb is installed into this folder by `make clients-deps`
// (npm ci).
'use strict';

const fs = require('fs');
const readline = require('readline');
const { MongoClient, MongoServerError } = require('mongodb');

const CURSOR_DOCS = 10000;
const INSERT_MANY_DOCS = 100000;

function env(name) {
  const v = process.env[name];
  if (v === undefined) throw new Error('missing environment variable ' + name);
  return v;
}

function say(line) {
  process.stdout.write(line + '\n');
}

async function check(name, f) {
  try {
    await f();
  } catch (e) {
    const why = e && e.name ? e.name + ': ' + e.message : String(e);
    say('fail ' + name + ': ' + why.replace(/\n/g, ' '));
    return false;
  }
  say('ok ' + name);
  return true;
}

function expect(cond, why) {
  if (!cond) throw new Error(why);
}

async function crud(coll) {
  await coll.insertOne({ _id: 1, v: 'written' });
  let got = await coll.findOne({ _id: 1 });
  expect(got !== null && got.v === 'written', 'find after insert: ' + JSON.stringify(got) + ', want v written');
  const u = await coll.updateOne({ _id: 1 }, { $set: { v: 'updated' } });
  expect(u.matchedCount === 1 && u.modifiedCount === 1,
    `update: ${u.matchedCount} matched, ${u.modifiedCount} modified, want 1 and 1`);
  got = await coll.findOne({ _id: 1 });
  expect(got !== null && got.v === 'updated', 'find after update: ' + JSON.stringify(got) + ', want v updated');
  const d = await coll.deleteOne({ _id: 1 });
  expect(d.deletedCount === 1, `delete: ${d.deletedCount} deleted, want 1`);
  got = await coll.findOne({ _id: 1 });
  expect(got === null, 'find after delete: ' + JSON.stringify(got) + ', want none');
}

function docs(n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = { _id: i, n: i };
  return out;
}

// getMores counts the getMore commands the client sent (command monitoring
// changes nothing the driver does): the cursor check must read past the
// first batch.
let getMores = 0;

// One find at the default batch size: the server's first batch, then
// getMore until the cursor is exhausted; every _id exactly once.
async function cursor(coll) {
  await coll.insertMany(docs(CURSOR_DOCS));
  const before = getMores;
  const seen = new Uint8Array(CURSOR_DOCS);
  let n = 0;
  for await (const d of coll.find({})) {
    const i = d._id;
    expect(Number.isInteger(i) && i >= 0 && i < CURSOR_DOCS, `document ${n}: _id ${i} was never written`);
    expect(!seen[i], `document ${n}: _id ${i} seen twice`);
    seen[i] = 1;
    n++;
  }
  expect(n === CURSOR_DOCS, `read ${n} documents, want ${CURSOR_DOCS}`);
  expect(getMores > before, 'every document came in the first batch: no getMore was sent');
  say(`info cursor: ${n} documents with ${getMores - before} getMore`);
}

async function insertMany(coll) {
  const r = await coll.insertMany(docs(INSERT_MANY_DOCS));
  expect(r.insertedCount === INSERT_MANY_DOCS, `${r.insertedCount} inserted, want ${INSERT_MANY_DOCS}`);
}

async function errors(coll) {
  await coll.insertOne({ _id: 1 });
  try {
    await coll.insertOne({ _id: 1 });
  } catch (e) {
    expect(e instanceof MongoServerError && e.code === 11000,
      `second insert of _id 1: ${e && e.name} code ${e && e.code}, want a MongoServerError with code 11000`);
    return;
  }
  throw new Error('second insert of _id 1 succeeded, want a MongoServerError with code 11000');
}

// readPreference reads the document naming the member that holds it (the
// test set it up) 20 times with each read preference.
async function readPreference(coll) {
  const primary = env('DBR_PRIMARY');
  const secondaries = env('DBR_SECONDARIES').split(',');
  const seen = {};
  for (const mode of ['primary', 'secondary', 'nearest']) {
    seen[mode] = {};
    for (let i = 0; i < 20; i++) {
      const d = await coll.findOne({ _id: 'rp' }, { readPreference: mode });
      expect(d !== null, `read with ${mode}: no document`);
      seen[mode][d.member] = (seen[mode][d.member] || 0) + 1;
    }
  }
  const desc = `primary ${JSON.stringify(seen.primary)}, secondary ${JSON.stringify(seen.secondary)}, nearest ${JSON.stringify(seen.nearest)}`;
  const keys = (o) => Object.keys(o).sort();
  expect(JSON.stringify(keys(seen.primary)) === JSON.stringify([primary]), `primary reads not all from ${primary}: ${desc}`);
  expect(JSON.stringify(keys(seen.secondary)) === JSON.stringify([...secondaries].sort()),
    `secondary reads not from both of ${secondaries} and only them: ${desc}`);
  expect(keys(seen.nearest).length >= 2, 'nearest reads all from one member: ' + desc);
  say('info read_preference: ' + desc);
}

async function retryable(coll) {
  const r = await coll.updateOne({ _id: 'retry' }, { $inc: { n: 1 } }, { upsert: true });
  expect(r.upsertedCount === 1, `upsert: ${JSON.stringify(r)}, want one document upserted (the first attempt's reply)`);
  const d = await coll.findOne({ _id: 'retry' });
  expect(d !== null && d.n === 1, `read back: ${JSON.stringify(d)}, want n 1: applied exactly once`);
}

async function transaction(client, coll) {
  const s = client.startSession();
  try {
    await s.withTransaction(async () => {
      await coll.insertOne({ _id: 1 }, { session: s });
    });
    throw new Error('the transaction committed, want code 20 (IllegalOperation)');
  } catch (e) {
    if (!(e instanceof MongoServerError) || e.code !== 20) {
      throw new Error(`transaction: ${e && e.name}: ${e && e.message} (code ${e && e.code}), want a MongoServerError with code 20 (IllegalOperation)`);
    }
    say('info transaction refused: ' + e.message);
  } finally {
    await s.endSession();
  }
  const n = await coll.countDocuments({});
  expect(n === 0, `after the refused transaction: ${n} documents, want 0`);
}

// promote writes and reads back _id 1000, 1001, ... until the stop file
// exists ("tick" after each).
async function promote(coll) {
  const stop = env('DBR_STOP_FILE');
  let n = 0;
  for (; !fs.existsSync(stop); n++) {
    const id = 1000 + n;
    try {
      await coll.insertOne({ _id: id, v: 'p' });
      const d = await coll.findOne({ _id: id });
      expect(d !== null && d.v === 'p', `read back ${id}: ${JSON.stringify(d)}`);
    } catch (e) {
      say(`fail promote: after ${n} writes: ${e && e.name}: ${String(e && e.message).replace(/\n/g, ' ')}`);
      return;
    }
    if (n === 0) say('ready');
    say('tick');
  }
  say(`ok promote ${n}`);
}

function lineFromStdin() {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.once('line', () => { rl.close(); resolve(); });
    rl.once('close', resolve);
  });
}

const MODES = ['workload', 'read_preference', 'retryable', 'transaction', 'promote'];

async function main() {
  const mode = process.argv[2];
  if (!MODES.includes(mode)) throw new Error('unknown mode ' + mode);
  const uri = `mongodb://${encodeURIComponent(env('DBR_USER'))}:${encodeURIComponent(env('DBR_PASSWORD'))}@` +
    `${env('DBR_HOST')}:${env('DBR_PORT')}/?authSource=admin`;
  say('info mongodb ' + require('mongodb/package.json').version);
  const client = new MongoClient(uri, { monitorCommands: true });
  client.on('commandSucceeded', (e) => {
    if (e.commandName === 'getMore') getMores++;
  });
  try {
    const db = client.db(env('DBR_DATABASE'));
    const prefix = env('DBR_TABLE');
    if (mode === 'read_preference') {
      await check('read_preference', () => readPreference(db.collection(prefix + '_rp')));
      return;
    }
    if (mode === 'retryable') {
      const coll = db.collection(prefix + '_retry');
      // A first round trip, so that the write below is the only thing the
      // test's fault can hit.
      await coll.insertOne({ _id: 'warm' });
      say('ready');
      await lineFromStdin();
      await check('retryable', () => retryable(coll));
      return;
    }
    if (mode === 'transaction') {
      await check('transaction', () => transaction(client, db.collection(prefix + '_txn')));
      return;
    }
    if (mode === 'promote') {
      await promote(db.collection(prefix + '_promote', { writeConcern: { w: 'majority' } }));
      return;
    }
    const connected = await check('connect', async () => {
      await client.connect();
      const r = await client.db('admin').command({ ping: 1 });
      expect(r.ok === 1, 'ping: ' + JSON.stringify(r));
      // The proxy's auth gate lets ping through before authentication,
      // not listCollections.
      await db.listCollections().toArray();
    });
    if (!connected) return;
    await check('crud', () => crud(db.collection(prefix + '_crud')));
    await check('cursor', () => cursor(db.collection(prefix + '_cursor')));
    await check('insert_many', () => insertMany(db.collection(prefix + '_many')));
    await check('errors', () => errors(db.collection(prefix + '_errors')));
  } finally {
    await client.close();
  }
}

// Exit explicitly: once stdin has been read (retryable), it would keep the
// process alive until the test closes it.
main().then(
  () => process.exit(),
  (e) => {
    process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
    process.exit(1);
  });
