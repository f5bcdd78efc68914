// NestJS NATS microservice used by the Rust interop tests: lets a Rust client call a real
// NestJS server. Answers `nest.echo` (echoes data plus the authorization/traceparent headers
// it received) and `nest.fail` (throws an RpcException), in queue group `nest`.
// Prints the line READY on stdout once subscribed; Nest's own logs go to stderr.
// Run: NATS_URL=nats://127.0.0.1:4222 node tests/nestjs/server.js
// Plain CommonJS: decorators are applied by calling them. `run(req)` takes the `require`
// to load Nest with, so tests/nestjs12 can reuse this file with its own node_modules.
'use strict';

function stderrLogger() {
  const write = (level) => (msg, ...rest) =>
    process.stderr.write(`[nest ${level}] ${[msg, ...rest].map(String).join(' ')}\n`);
  return { log: write('log'), error: write('error'), warn: write('warn'), debug: write('debug'), verbose: write('verbose'), fatal: write('fatal') };
}

// Header lookup ignoring case: NATS keeps header names as sent, and a Rust client may
// send `Authorization` where a NestJS one sends `authorization`.
function headerValue(hdrs, name) {
  if (!hdrs || typeof hdrs.keys !== 'function') return null;
  const key = hdrs.keys().find((k) => k.toLowerCase() === name);
  return key === undefined ? null : hdrs.get(key);
}

async function run(req) {
  req('reflect-metadata');
  const { Controller, Module } = req('@nestjs/common');
  const { NestFactory } = req('@nestjs/core');
  const { Transport, MessagePattern, Payload, Ctx, RpcException } = req('@nestjs/microservices');

  class InteropController {
    echo(data, ctx) {
      const hdrs = ctx.getHeaders();
      const headers = hdrs
        ? { authorization: headerValue(hdrs, 'authorization'), traceparent: headerValue(hdrs, 'traceparent') }
        : null;
      return { echo: data, headers };
    }

    fail() {
      throw new RpcException({ status: 422, code: 'NEST_FAIL', message: 'nest says no' });
    }
  }
  const proto = InteropController.prototype;
  for (const [method, pattern] of [['echo', 'nest.echo'], ['fail', 'nest.fail']]) {
    const desc = Object.getOwnPropertyDescriptor(proto, method);
    Payload()(proto, method, 0);
    Ctx()(proto, method, 1);
    MessagePattern(pattern)(proto, method, desc);
  }
  Controller()(InteropController);

  class AppModule {}
  Module({ controllers: [InteropController] })(AppModule);

  const app = await NestFactory.createMicroservice(AppModule, {
    transport: Transport.NATS,
    options: { servers: [process.env.NATS_URL || 'nats://127.0.0.1:4222'], queue: 'nest' },
    logger: stderrLogger(),
  });
  await app.listen();
  // Round-trip to the NATS server so our subscriptions are in place before we say READY.
  await app.unwrap().flush();
  process.stdout.write('READY\n');

  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    await app.close();
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

module.exports = { run, headerValue, stderrLogger };

if (require.main === module) {
  run(require).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
