// NestJS ClientProxy scenario used by the Rust interop tests: a real NestJS client calls a
// Rust worker (rust.echo, rust.fail, rust.missing_type, rust.event, rust.headers) and prints
// ONE JSON object with what it got. Expected RPC errors and timeouts are recorded in that
// object; the exit code is 1 only on an unexpected crash. Nest's logs go to stderr.
// Run: NATS_URL=nats://127.0.0.1:4222 [NATS_USER=demo NATS_PASSWORD=...] node tests/nestjs/client.js
// `run(req, natsModule)` takes the `require` to load Nest with and the name of the NATS
// package that Nest version uses, so tests/nestjs12 can reuse this file.
'use strict';

const { stderrLogger } = require('./server.js');

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

// An error as JSON: a plain object (what Nest passes on from the reply's `err`) stays as
// it is; an Error instance keeps its name, message and own fields.
function errorJson(err, TimeoutError) {
  if (err instanceof TimeoutError) return { timeout: true };
  if (err instanceof Error) return { errorClass: err.name, message: err.message, ...err };
  return err;
}

async function run(req, natsModule = 'nats') {
  req('reflect-metadata');
  const { Logger } = req('@nestjs/common');
  const { ClientProxyFactory, Transport, NatsRecordBuilder } = req('@nestjs/microservices');
  const { firstValueFrom, lastValueFrom, timeout, TimeoutError } = req('rxjs');
  const { headers: natsHeaders } = req(natsModule);

  Logger.overrideLogger(stderrLogger());
  const client = ClientProxyFactory.create({
    transport: Transport.NATS,
    // NATS_USER / NATS_PASSWORD: the `demo` user of nats/dev.conf under scripts/dev; unset in
    // the tests (the harness's server lets a client without credentials in).
    options: {
      servers: [process.env.NATS_URL || 'nats://127.0.0.1:4222'],
      user: process.env.NATS_USER,
      pass: process.env.NATS_PASSWORD,
    },
  });
  await client.connect();

  const call = (pattern, data) => firstValueFrom(client.send(pattern, data).pipe(timeout(5000)));
  const out = {};
  // Runs one step; a failure is recorded under `key` instead of stopping the scenario.
  const step = async (key, fn) => {
    try {
      out[key] = await fn();
    } catch (err) {
      out[key] = errorJson(err, TimeoutError);
    }
  };
  // What a Rust echo handler sends back may be the data itself or `{echo: data}`.
  const echoed = (resp) => (resp && typeof resp === 'object' && 'echo' in resp ? resp.echo : resp);

  await step('echo', () => call('rust.echo', { text: 'héllo', n: 42, nested: { a: [1, 2, 3] } }));
  await step('fail', () => call('rust.fail', { reason: 'x' }));
  await step('badType', () => call('rust.missing_type', { n: 'not a number' }));
  await step('emitted', async () => {
    await lastValueFrom(client.emit('rust.event', { seq: 7 }).pipe(timeout(5000)), { defaultValue: null });
    return true;
  });
  await step('concurrentOk', async () => {
    const one = (i) => call('rust.echo', { i }).then((r) => echoed(r)?.i === i, () => false);
    const oks = await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
    return oks.filter(Boolean).length;
  });
  await step('headers', () => {
    const h = natsHeaders();
    h.set('authorization', 'Bearer abc');
    h.set('traceparent', TRACEPARENT);
    return call('rust.headers', new NatsRecordBuilder({ want: 'headers' }).setHeaders(h).build());
  });

  await client.unwrap().flush(); // make sure the event left before closing
  await client.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

module.exports = { run };

if (require.main === module) {
  run(require).then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
