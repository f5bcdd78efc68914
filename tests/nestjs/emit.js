// A NestJS backend emitting an integration event, as another service would when one of its
// objects is deleted (DESIGN §14): `ClientProxy.emit(pattern, data)`, a NestJS event packet
// without id, no reply. Used by the media service's lifecycle tests (user.deleted,
// entity.deleted). Prints ONE JSON object, `{"emitted": <times>}`, once every emit is flushed.
// Run: NATS_URL=nats://127.0.0.1:4222 NATS_USER=backend NATS_PASSWORD=... \
//      PATTERN=user.deleted DATA='{"userId":"u1"}' [TIMES=2] node tests/nestjs/emit.js
'use strict';

require('reflect-metadata');
const { Logger } = require('@nestjs/common');
const { ClientProxyFactory, Transport } = require('@nestjs/microservices');
const { lastValueFrom, timeout } = require('rxjs');
const { stderrLogger } = require('./server.js');

async function main() {
  const pattern = process.env.PATTERN;
  const data = JSON.parse(process.env.DATA || '{}');
  const times = Number(process.env.TIMES || '1');
  if (!pattern || !Number.isInteger(times) || times < 1) {
    throw new Error('set PATTERN, DATA (JSON) and optionally TIMES (>= 1)');
  }
  Logger.overrideLogger(stderrLogger());
  const client = ClientProxyFactory.create({
    transport: Transport.NATS,
    options: {
      servers: [process.env.NATS_URL || 'nats://127.0.0.1:4222'],
      user: process.env.NATS_USER,
      pass: process.env.NATS_PASSWORD,
    },
  });
  await client.connect();
  for (let i = 0; i < times; i += 1) {
    // `emit` completes once the packet is handed to the connection (no reply for events).
    await lastValueFrom(client.emit(pattern, data).pipe(timeout(5000)), { defaultValue: null });
  }
  // close() drains the connection: every emitted packet reaches the server before we exit.
  await client.close();
  process.stdout.write(`${JSON.stringify({ emitted: times })}\n`);
}

main().catch((err) => {
  process.stderr.write(`emit.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
