// NestJS 12 variant of ../nestjs/server.js (same handlers, same READY line), loading
// NestJS 12 from this directory's node_modules. NestJS 12 ships as ES modules; Node 20.19+
// can require() them.
// Run: NATS_URL=nats://127.0.0.1:4222 node tests/nestjs12/server.js
'use strict';

require('../nestjs/server.js').run(require).catch((err) => {
  console.error(err);
  process.exit(1);
});
