// node-postgres (pure JavaScript, its own protocol code) through sluice in
// transaction pooling: queries with a `name` are prepared once per
// connection by the driver and afterwards sent as Bind/Execute only, so
// every later transaction that lands on another server needs sluice to
// prepare the statement there. Usage: node prepared.js PORT
'use strict';
const { Client } = require('pg');

const port = Number(process.argv[2]);
const CLIENTS = 20, ROUNDS = 50;

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}

async function worker(id) {
  const c = new Client({ host: '127.0.0.1', port, user: 'sl_scram', password: 'scram_pw',
                         database: 'sluice_test' });
  await c.connect();
  for (let i = 0; i < ROUNDS; i++) {
    const n = id * 1000 + i;
    // A named statement outside a transaction...
    let r = await c.query({ name: 'plus-one', text: 'SELECT $1::int + 1 AS v', values: [n] });
    if (r.rows[0].v !== n + 1) fail(`plus-one(${n}) = ${r.rows[0].v}`);
    // ...and inside one, next to another named one and an unnamed query.
    await c.query('BEGIN');
    r = await c.query({ name: 'echo-text', text: 'SELECT $1::text AS t, $2::int * 2 AS d',
                        values: [`c${id}`, i] });
    if (r.rows[0].t !== `c${id}` || r.rows[0].d !== i * 2) fail(`echo-text: ${JSON.stringify(r.rows)}`);
    r = await c.query({ name: 'plus-one', text: 'SELECT $1::int + 1 AS v', values: [i] });
    if (r.rows[0].v !== i + 1) fail(`plus-one in transaction: ${r.rows[0].v}`);
    r = await c.query('SELECT 40 + 2 AS x');
    if (r.rows[0].x !== 42) fail('unnamed query');
    await c.query('COMMIT');
  }
  // An error in a named statement leaves the connection usable.
  try {
    await c.query({ name: 'div', text: 'SELECT 1 / $1::int AS q', values: [0] });
    fail('division by zero succeeded');
  } catch (e) {
    if (e.code !== '22012') fail(`division by zero: ${e.code} ${e.message}`);
  }
  const r = await c.query({ name: 'div', text: 'SELECT 1 / $1::int AS q', values: [1] });
  if (r.rows[0].q !== 1) fail('named statement after its error');
  await c.end();
}

(async () => {
  const t0 = Date.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => worker(i)));
  console.log(`node-postgres: ${CLIENTS} clients x ${ROUNDS} rounds passed in ${Date.now() - t0} ms`);
})().catch((e) => fail(e.stack || String(e)));
