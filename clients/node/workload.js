// The client matrix's application workload with Node's mysql2 at its
// default settings (createConnection with nothing but the address, the
// account and the database).
//
// Usage: node workload.js workload|restart|promote. Connection and table come
// from DBR_HOST, DBR_PORT, DBR_USER, DBR_PASSWORD, DBR_DATABASE, DBR_TABLE
// (and DBR_STOP_FILE for promote); the lines printed are the protocol
// clients/doc.go describes. mysql2 is installed into this folder by
// `make clients-deps` (npm ci).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const readline = require('readline');
const mysql = require('mysql2/promise');

const BIG_ROW = 20 << 20;

function env(name) {
  const v = process.env[name];
  if (v === undefined) throw new Error('missing environment variable ' + name);
  return v;
}

function say(line) {
  process.stdout.write(line + '\n');
}

function connect() {
  return mysql.createConnection({
    host: env('DBR_HOST'),
    port: Number(env('DBR_PORT')),
    user: env('DBR_USER'),
    password: env('DBR_PASSWORD'),
    database: env('DBR_DATABASE'),
  });
}

async function check(name, f) {
  try {
    await f();
  } catch (e) {
    say('fail ' + name + ': ' + (e && e.stack ? e.stack.split('\n')[0] : e));
    return false;
  }
  say('ok ' + name);
  return true;
}

async function one(conn, sql, args) {
  const [rows] = args === undefined ? await conn.query(sql) : await conn.execute(sql, args);
  if (rows.length === 0) return undefined;
  return Object.values(rows[0])[0];
}

async function workload(table) {
  let conn;
  const connected = await check('connect', async () => {
    conn = await connect();
    if ((await one(conn, 'SELECT 1')) !== 1) throw new Error('SELECT 1 did not answer 1');
  });
  if (!connected) return;
  await check('write_read', async () => {
    await conn.query(`INSERT INTO ${table} (id, v) VALUES (1, 'written')`);
    const got = await one(conn, `SELECT v FROM ${table} WHERE id = 1`);
    if (got !== 'written') throw new Error(`read back ${got}, want written`);
  });
  await check('rollback', async () => {
    await conn.beginTransaction();
    await conn.query(`INSERT INTO ${table} (id, v) VALUES (2, 'rolled back')`);
    await conn.rollback();
    const n = await one(conn, `SELECT COUNT(*) AS n FROM ${table} WHERE id = 2`);
    if (n !== 0) throw new Error(`the rolled-back row is there (${n} rows)`);
  });
  await check('prepared', async () => {
    // execute() is mysql2's server-side prepared statement.
    await conn.execute(`INSERT INTO ${table} (id, v) VALUES (?, ?)`, [3, 'prepared']);
    const got = await one(conn, `SELECT v FROM ${table} WHERE id = ?`, [3]);
    if (got !== 'prepared') throw new Error(`read back ${got}, want prepared`);
  });
  await check('big_row', async () => {
    const data = crypto.randomBytes(BIG_ROW);
    await conn.execute(`INSERT INTO ${table} (id, b) VALUES (?, ?)`, [4, data]);
    const got = await one(conn, `SELECT b FROM ${table} WHERE id = 4`);
    const sum = (b) => crypto.createHash('sha256').update(b).digest('hex');
    if (!Buffer.isBuffer(got) || sum(got) !== sum(data)) {
      throw new Error(`read back ${got && got.length} bytes with another checksum`);
    }
  });
  await check('dup_key', async () => {
    try {
      await conn.query(`INSERT INTO ${table} (id, v) VALUES (1, 'again')`);
    } catch (e) {
      if (e.errno !== 1062) throw new Error(`error ${e.errno} (${e.message}), want 1062`);
      return;
    }
    throw new Error('a duplicate key was accepted');
  });
  await conn.end();
}

async function restart(table) {
  const conn = await connect();
  // A dropped connection must not crash the program: the application
  // notices it on its next statement.
  conn.on('error', () => {});
  await one(conn, 'SELECT 1');
  say('ready');
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.once('line', resolve)); // the proxy has restarted
  rl.close();
  try {
    await one(conn, 'SELECT 1');
    say('info old connection still answers');
  } catch (e) {
    say('info old connection: ' + e.message);
  }
  const deadline = Date.now() + 30000;
  let last;
  while (Date.now() < deadline) {
    let c;
    try {
      c = await connect();
      await c.query(`REPLACE INTO ${table} (id, v) VALUES (100, 'reconnected')`);
      const got = await one(c, `SELECT v FROM ${table} WHERE id = 100`);
      if (got !== 'reconnected') throw new Error(`read back ${got}`);
      await c.end();
      say('ok reconnect');
      return;
    } catch (e) {
      last = e;
      if (c) c.destroy();
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  say('fail reconnect: ' + last);
}

async function promote(table) {
  const stop = env('DBR_STOP_FILE');
  let n = 0;
  try {
    const conn = await connect();
    while (!fs.existsSync(stop)) {
      const id = 1000 + n;
      await conn.execute(`INSERT INTO ${table} (id, v) VALUES (?, 'p')`, [id]);
      const got = await one(conn, `SELECT v FROM ${table} WHERE id = ?`, [id]);
      if (got !== 'p') throw new Error(`row ${id} read back as ${got}`);
      n++;
      if (n === 1) say('ready');
      say('tick');
    }
    await conn.end();
  } catch (e) {
    say(`fail promote: after ${n} writes: ${e.message}`);
    process.exitCode = 1;
    return;
  }
  say('ok promote ' + n);
}

async function main() {
  const table = env('DBR_TABLE');
  const modes = { workload, restart, promote };
  const f = modes[process.argv[2]];
  if (!f) throw new Error('unknown mode ' + process.argv[2]);
  await f(table);
}

// Exit at the end even when a failed check left a connection open (an open
// socket would keep Node running).
main().then(
  () => process.exit(),
  (e) => {
    say('info crashed: ' + e.stack);
    process.exit(2);
  },
);
