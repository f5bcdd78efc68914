// One-shot `mongo-init` of docker-compose.yml (run as `mongosh --nodb --file` with the settings in
// its environment). Idempotent, so it runs on every `docker compose up`:
// 1. initiates replica set MONGO_REPLICA_SET over MONGO_MEMBERS (an already initiated set is left
//    as it is), through the root account that mongo-1 created on its first start;
// 2. waits until the set has a primary;
// 3. creates the services' account MONGO_APP_USERNAME with readWrite on MONGO_DATABASE only, or
//    resets its password and roles when it exists (so changing MONGO_APP_PASSWORD in .env and
//    rerunning applies it).
// Exits non-zero (and compose keeps the services waiting) if any step fails within WAIT_SECS.

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') throw new Error(`${name} is not set`);
  return value;
}

const setName = env('MONGO_REPLICA_SET', 'rs0');
const members = env('MONGO_MEMBERS', 'mongo-1:27017,mongo-2:27017,mongo-3:27017').split(',');
const rootUser = encodeURIComponent(env('MONGO_ROOT_USERNAME'));
const rootPassword = encodeURIComponent(env('MONGO_ROOT_PASSWORD'));
const database = env('MONGO_DATABASE');
const appUser = env('MONGO_APP_USERNAME');
const appPassword = env('MONGO_APP_PASSWORD');
const deadline = Date.now() + 1000 * Number(env('WAIT_SECS', '180'));

// Retries `step` once a second until it returns a truthy value or the deadline passes.
function retry(what, step) {
  let last;
  for (;;) {
    try {
      const done = step();
      if (done) return done;
      last = 'not yet';
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) throw new Error(`${what}: gave up (${last})`);
    sleep(1000);
  }
}

// The first member, directly: before the set is initiated it has no primary to discover.
const first = retry(`connect to ${members[0]}`, () =>
  connect(`mongodb://${rootUser}:${rootPassword}@${members[0]}/admin?directConnection=true&authSource=admin`),
);

const config = {
  _id: setName,
  // The first member is preferred as primary; any of them can take over.
  members: members.map((host, i) => ({ _id: i, host, priority: i === 0 ? 2 : 1 })),
};
const initiated = first.adminCommand({ replSetInitiate: config });
if (initiated.ok) {
  print(`replica set ${setName} initiated over ${members.join(', ')}`);
} else if (initiated.codeName === 'AlreadyInitialized') {
  print(`replica set ${setName} was already initiated`);
} else {
  throw new Error(`replSetInitiate: ${initiated.codeName}: ${initiated.errmsg}`);
}

retry('wait for a primary', () => {
  const status = first.adminCommand({ replSetGetStatus: 1 });
  return status.ok && status.members.some((m) => m.stateStr === 'PRIMARY');
});

// Through the set (writes go to the primary wherever it is).
const rs = retry('connect to the replica set', () =>
  connect(`mongodb://${rootUser}:${rootPassword}@${members.join(',')}/admin?replicaSet=${setName}&authSource=admin`),
);
const app = rs.getSiblingDB(database);
const roles = [{ role: 'readWrite', db: database }];
retry(`account ${appUser}`, () => {
  if (app.getUser(appUser)) {
    app.updateUser(appUser, { pwd: appPassword, roles });
    print(`account ${appUser} updated (readWrite on ${database})`);
  } else {
    app.createUser({ user: appUser, pwd: appPassword, roles });
    print(`account ${appUser} created (readWrite on ${database})`);
  }
  return true;
});
