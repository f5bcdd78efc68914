// NestJS 12 variant of ../nestjs/client.js (same scenario, same JSON output), loading
// NestJS 12 and its NATS client, @nats-io/transport-node, from this directory.
// Run: NATS_URL=nats://127.0.0.1:4222 node tests/nestjs12/client.js
'use strict';

require('../nestjs/client.js').run(require, '@nats-io/transport-node').then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
