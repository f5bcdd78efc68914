#!/usr/bin/env python3
"""Checks docker-compose.yml against what the services read, without a Docker engine.

Run by scripts/test (after the Compose-schema validation and hadolint):
    .venv/bin/python deploy/check_compose.py              # the checks; exit 1 on any problem
    .venv/bin/python deploy/check_compose.py --self-test  # shows each check fails on a broken copy
    .venv/bin/python deploy/check_compose.py --run-binaries target/debug   # after cargo build

What it proves, for every service running a mediabus binary (its `command`):
- every MEDIABUS__<SECTION>__<KEY> it sets is a key of that binary's defaults.toml, or one of the
  optional keys the Rust code reads (evidence: the field in the source; a rename breaks the check),
  with a value of the default's type; MEDIABUS__ENV is `production`;
- every key of deploy/config/<binary>.toml (the layer for arrays) is a key of defaults.toml or a
  field of the key structs in libs/auth, and the config directory is mounted where
  MEDIABUS_CONFIG_DIR points;
- with `backend = "s3"` / `"mongodb"`, every field the variant needs is set;
- every required secret is set from a required `${VAR:?}` of .env: NATS password (the same
  variable nats/cluster.conf binds to the service's user, passed to every NATS node), content
  signing secret (one variable for the media service and the bridges), S3 keys, MongoDB
  credentials in store.uri; no development value (`dev-only`) anywhere;
- JWT keys: the signing key's kid is a verification kid of every verifier, and every key file
  named under /run/secrets/ is a compose secret mounted into that service;
- every `${VAR}` referenced is in .env.example and every variable of .env.example is used;
- every long-running service has a health check, only the proxy publishes a port, and the
  replica counts of issue 13 hold;
- inline JSON configs stay JSON once interpolated; the Dockerfile's COPY sources exist; .env is in
  .gitignore and .dockerignore;
- nats/cluster.conf passes `nats-server -t` (every permission set bound) and deploy/nginx.conf
  passes `nginx -t` when those binaries are present (nginx without `resolve`, which needs 1.27.3).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; `$$` is a literal `$`.
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
BARE_VAR_RE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
SECRET_KEYS = {"password", "secret", "secret_key", "access_key", "signing_secret"}
# Secrets a service may leave empty (auth.admin_password: no first admin is created).
OPTIONAL_SECRETS = {"auth.admin_password"}
# Issue 13: replicas per service.
MIN_REPLICAS = {"media-service": 3, "media-processor": 2, "auth-service": 2, "http-bridge": 2}
DEV_MARKER = "dev-only"


class Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments, blank lines and surrounding quotes dropped)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """The value as compose would see it with `env` (the .env.example placeholders)."""

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        have = env.get(name)
        if op in (":-", "-"):
            return have if have not in (None, "") else arg
        return have or ""

    return VAR_RE.sub(one, value).replace("$$", "$")


def flatten(table: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key → leaf value (arrays, including arrays of tables, are leaves)."""
    out = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def struct_fields(path: Path, pattern: str) -> set[str]:
    """Field names inside the first `{...}` after `pattern` in a Rust source file."""
    text = path.read_text()
    m = re.search(pattern + r"\s*\{(.*?)\n?\s*\}", text, re.S)
    if not m:
        raise SystemExit(f"{path}: `{pattern}` not found (the check's evidence moved: update deploy/check_compose.py)")
    return set(re.findall(r"(?:pub\s+)?(\w+)\s*:", m.group(1)))


def optional_keys(binary: str) -> dict[str, str]:
    """Keys a binary reads beyond its defaults.toml, each with where the code reads it."""
    keys = {}
    config_rs = ROOT / "services" / binary / "src" / "config.rs"
    source = config_rs.read_text()
    if re.search(r"pub env: Env", source):
        keys["env"] = f"{config_rs.relative_to(ROOT)} (Settings.env)"
    if re.search(r"#\[serde\(default\)\]\s*pub keys: Vec<KeyConfig>", source):
        keys["auth.keys"] = f"{config_rs.relative_to(ROOT)} (AuthSettings.keys, optional)"
    storage = ROOT / "libs/storage/src/config.rs"
    for field in struct_fields(storage, r"\bS3"):
        keys[f"storage.{field}"] = f"{storage.relative_to(ROOT)} (StorageConfig::S3)"
    store = ROOT / "libs/store/src/lib.rs"
    for field in struct_fields(store, r"\bMongodb"):
        keys[f"store.{field}"] = f"{store.relative_to(ROOT)} (StoreConfig::Mongodb)"
    return keys


def type_ok(default: object, value: str) -> bool:
    """Would config-rs (try_parsing) turn `value` into the default's type?"""
    if isinstance(default, bool):
        return value.lower() in ("true", "false")
    if isinstance(default, int):
        return re.fullmatch(r"-?\d+", value) is not None
    if isinstance(default, float):
        return re.fullmatch(r"-?\d+(\.\d*)?([eE][-+]?\d+)?", value) is not None
    if isinstance(default, list):
        return False  # arrays cannot come from one variable: use deploy/config/<binary>.toml
    return True


def env_refs(value: str) -> list[tuple[str, str | None]]:
    """(variable, operator) of every ${...} in a value."""
    return [(m.group(1), m.group(2)) for m in VAR_RE.finditer(value)]


def check(compose_text: str, env_text: str, *, run_tools: bool = True) -> Problems:
    problems = Problems()
    env_example = parse_env_file(env_text)
    compose = yaml.safe_load(compose_text)
    services: dict = compose.get("services", {})

    # --- variables: referenced ↔ .env.example --------------------------------------------------
    referenced = {m.group(1) for m in VAR_RE.finditer(compose_text)}
    # Secrets created from a variable name that compose reads itself (`environment: NAME`).
    referenced |= {s["environment"] for s in (compose.get("secrets") or {}).values() if "environment" in s}
    for m in BARE_VAR_RE.finditer(compose_text):
        problems.add("docker-compose.yml", f"${m.group(1)} without braces: write ${{{m.group(1)}}}")
    for name in sorted(referenced - env_example.keys()):
        problems.add("docker-compose.yml", f"${{{name}}} is not in .env.example")
    for name in sorted(env_example.keys() - referenced):
        problems.add(".env.example", f"{name} is not used by docker-compose.yml")

    # --- health checks, ports, replicas --------------------------------------------------------
    one_shots = {
        dep
        for svc in services.values()
        for dep, cond in (svc.get("depends_on") or {}).items()
        if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully"
    }
    # Jobs nobody waits for are one-shots too when they may not restart for ever.
    one_shots |= {n for n, s in services.items() if str(s.get("restart", "")).startswith("on-failure")}
    for name, svc in services.items():
        if name not in one_shots and not svc.get("healthcheck"):
            problems.add(name, "long-running service without a healthcheck")
        if svc.get("ports") and name != "proxy":
            problems.add(name, "publishes a port: only the proxy does")
    if not services.get("proxy", {}).get("ports"):
        problems.add("proxy", "publishes no port")

    # --- NATS users: cluster.conf binds user → $VAR ---------------------------------------------
    cluster_conf = (ROOT / "nats/cluster.conf").read_text()
    nats_users = dict(re.findall(r"\{user:\s*(\w+),\s*password:\s*\$(\w+)", cluster_conf))
    nats_nodes = [n for n, s in services.items() if "nats-server" in " ".join(map(str, s.get("command") or []))]
    if len(nats_nodes) < 3:
        problems.add("docker-compose.yml", f"{len(nats_nodes)} NATS nodes, want 3")
    for node in nats_nodes:
        passed = services[node].get("environment") or {}
        for user, var in nats_users.items():
            if var not in passed:
                problems.add(node, f"does not pass {var} (password of NATS user {user} in nats/cluster.conf)")

    # --- every mediabus service ------------------------------------------------------------------
    binaries = {p.parent.name for p in (ROOT / "services").glob("*/defaults.toml")}
    per_binary: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for name, svc in services.items():
        command = svc.get("command") or []
        binary = command[0] if isinstance(command, list) and command else None
        if binary not in binaries:
            continue
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        per_binary.setdefault(binary, []).append((name, env))
        check_service(problems, name, svc, binary, env, env_example, nats_users)

    for binary, want in MIN_REPLICAS.items():
        got = sum((services[n].get("deploy") or {}).get("replicas", 1) for n, _ in per_binary.get(binary, []))
        if got < want:
            problems.add("docker-compose.yml", f"{binary}: {got} replicas, want at least {want}")

    # One file store, one document store, one content secret across services.
    for key in ("MEDIABUS__CONTENT__SIGNING_SECRET",):
        values = {env[key] for runs in per_binary.values() for _, env in runs if key in env}
        if len(values) > 1:
            problems.add("docker-compose.yml", f"{key} differs between services: {sorted(values)}")
    for section in ("STORAGE", "STORE"):
        shapes = {}
        for runs in per_binary.values():
            for svc_name, env in runs:
                part = tuple(sorted((k, v) for k, v in env.items() if k.startswith(f"MEDIABUS__{section}__")))
                if part:
                    shapes.setdefault(part, []).append(svc_name)
        if len(shapes) > 1:
            problems.add("docker-compose.yml", f"[{section.lower()}] differs between {list(shapes.values())}")

    check_jwt(problems, services, per_binary)
    check_build_context(problems)

    # Inline configs that are JSON (SeaweedFS's s3.json) must stay JSON once interpolated.
    for cfg_name, cfg in (compose.get("configs") or {}).items():
        targets = [
            c.get("target", "")
            for s in services.values()
            for c in s.get("configs") or []
            if isinstance(c, dict) and c.get("source") == cfg_name
        ]
        if "content" in cfg and any(t.endswith(".json") for t in targets):
            try:
                json.loads(interpolate(cfg["content"], env_example))
            except ValueError as e:
                problems.add(f"configs.{cfg_name}", f"not JSON once interpolated: {e}")

    if run_tools:
        check_tools(problems, env_example)
    return problems


def check_service(problems, name, svc, binary, env, env_example, nats_users) -> None:
    defaults = flatten(tomllib.loads((ROOT / "services" / binary / "defaults.toml").read_text()))
    optional = optional_keys(binary)
    effective = dict(defaults)

    # The config-file layer (arrays the environment cannot express).
    config_dir = env.get("MEDIABUS_CONFIG_DIR", "config")
    mounted = None
    for volume in svc.get("volumes") or []:
        source, _, target = str(volume).partition(":")
        if target.split(":")[0] == config_dir:
            mounted = ROOT / source
    config_file = mounted / f"{binary}.toml" if mounted else None
    if config_dir != "config" and mounted is None:
        problems.add(name, f"MEDIABUS_CONFIG_DIR={config_dir} but nothing is mounted there")
    if config_file and config_file.exists():
        layer = tomllib.loads(config_file.read_text())
        for key, value in flatten(layer).items():
            if key not in defaults and key not in optional and not key.startswith("auth.signing_key."):
                problems.add(f"{config_file.relative_to(ROOT)}", f"`{key}` is not a key of {binary}/defaults.toml")
            effective[key] = value
        auth = ROOT / "libs/auth/src/lib.rs"
        fields = {
            "keys": struct_fields(auth, r"pub struct KeyConfig"),
            "signing_key": struct_fields(auth, r"pub struct SigningKeyConfig"),
        }
        for entry in layer.get("auth", {}).get("keys", []):
            for field in set(entry) - fields["keys"]:
                problems.add(f"{config_file.relative_to(ROOT)}", f"auth.keys: `{field}` is not a KeyConfig field")
        for field in set(layer.get("auth", {}).get("signing_key", {})) - fields["signing_key"]:
            problems.add(f"{config_file.relative_to(ROOT)}", f"auth.signing_key: `{field}` is not a field")

    for var, raw in env.items():
        if not var.startswith("MEDIABUS__"):
            continue
        key = ".".join(part.lower() for part in var[len("MEDIABUS__") :].split("__"))
        if key in defaults:
            if not type_ok(defaults[key], interpolate(raw, env_example)):
                problems.add(name, f"{var}={raw!r} does not fit the default's type ({type(defaults[key]).__name__})")
        elif key not in optional:
            problems.add(name, f"{var} is not a key of services/{binary}/defaults.toml (nor an optional key)")
        effective[key] = raw
    if effective.get("env", "production") != "production":
        problems.add(name, f"MEDIABUS__ENV={effective.get('env')!r}: compose runs production")
    if "env" in optional and "MEDIABUS__ENV" not in env:
        problems.add(name, "MEDIABUS__ENV is not set (say `production` explicitly)")

    # Tagged backends: the fields of the chosen variant.
    if effective.get("storage.backend") == "s3":
        for field in ("storage.region", "storage.bucket", "storage.access_key", "storage.secret_key"):
            if field not in effective:
                problems.add(name, f"storage.backend = s3 without {field}")
    if effective.get("store.backend") == "mongodb":
        for field in ("store.uri", "store.database"):
            if field not in effective:
                problems.add(name, f"store.backend = mongodb without {field}")
        # Mask the ${...} (they hold ':' themselves) to find user:password@ in the URI.
        tokens: list[str] = []
        masked = VAR_RE.sub(
            lambda m: tokens.append(m.group(0)) or f"\0{len(tokens) - 1}\0", str(effective.get("store.uri", ""))
        )
        creds = re.match(r"mongodb(\+srv)?://([^:@/]+):([^@/]+)@", masked)
        unmask = lambda text: re.sub(r"\0(\d+)\0", lambda m: tokens[int(m.group(1))], text)  # noqa: E731
        if (
            not creds
            or not env_refs(unmask(creds.group(3)))
            or any(op != ":?" for _, op in env_refs(unmask(creds.group(2) + creds.group(3))))
        ):
            problems.add(name, "store.uri needs user:password@ from required ${VAR:?} variables")

    # Secrets: set, required, never a development value.
    for key, value in effective.items():
        leaf = key.rsplit(".", 1)[-1]
        value = str(value)
        if DEV_MARKER in interpolate(value, env_example) and key in env_keys(env):
            problems.add(name, f"{key} is a development value")
        if leaf not in SECRET_KEYS or key in OPTIONAL_SECRETS or key.startswith("auth.signing_key."):
            continue
        if key.startswith("storage.") and effective.get("storage.backend") != "s3":
            continue
        refs = env_refs(value) if key in env_keys(env) else []
        if not refs:
            problems.add(name, f"secret {key} is not set from .env (value: {'dev default' if value else 'empty'})")
        elif any(op != ":?" for _, op in refs):
            problems.add(name, f"secret {key} must use ${{VAR:?}} so compose refuses to start without it")

    # NATS: the password is the variable cluster.conf binds to this user.
    user = str(effective.get("nats.user", ""))
    password_refs = [v for v, _ in env_refs(str(effective.get("nats.password", "")))]
    if user not in nats_users:
        problems.add(name, f"NATS user {user!r} has no password in nats/cluster.conf")
    elif password_refs != [nats_users[user]]:
        problems.add(
            name, f"NATS password of {user} must be ${{{nats_users[user]}}} (nats/cluster.conf), not {password_refs}"
        )
    if str(effective.get("nats.url", "")).startswith("nats://127.0.0.1"):
        problems.add(name, "nats.url is the loopback default")


def env_keys(env: dict[str, str]) -> set[str]:
    return {".".join(p.lower() for p in v[len("MEDIABUS__") :].split("__")) for v in env if v.startswith("MEDIABUS__")}


def check_jwt(problems, services, per_binary) -> None:
    """The signer's kid is verified everywhere; key files are secrets mounted into the service."""
    verifiers: dict[str, set[str]] = {}
    signer_kid = None
    for binary, runs in per_binary.items():
        for name, env in runs:
            config_dir = env.get("MEDIABUS_CONFIG_DIR")
            svc = services[name]
            mounted = [str(v).split(":")[0] for v in svc.get("volumes") or [] if str(v).split(":")[1:2] == [config_dir]]
            path = ROOT / mounted[0] / f"{binary}.toml" if mounted else None
            layer = tomllib.loads(path.read_text()) if path and path.exists() else {}
            auth = layer.get("auth", {})
            secrets = {s if isinstance(s, str) else s.get("source") for s in svc.get("secrets") or []}
            for entry in auth.get("keys", []) + ([auth["signing_key"]] if "signing_key" in auth else []):
                for field in ("public_key_file", "private_key_file"):
                    file = entry.get(field)
                    if file and (
                        not file.startswith("/run/secrets/") or file.removeprefix("/run/secrets/") not in secrets
                    ):
                        problems.add(name, f"{field} {file} is not a compose secret mounted into the service")
                if entry.get("algorithm") == "HS256":
                    problems.add(name, "HS256 keys in deploy/config would hold the secret in a file: use EdDSA/RS256")
            defaults = tomllib.loads((ROOT / "services" / binary / "defaults.toml").read_text()).get("auth", {})
            if "keys" in defaults:
                kids = {k.get("kid") for k in auth.get("keys", defaults["keys"])}
                verifiers[name] = kids
                if any(k.get("kid") == "dev" for k in auth.get("keys", defaults["keys"])):
                    problems.add(
                        name, "verifies the development key (kid dev): list the production keys in deploy/config"
                    )
            if "signing_key" in auth:
                signer_kid = auth["signing_key"].get("kid")
            elif "signing_key" in defaults:
                problems.add(name, "signs with the development key: set auth.signing_key in deploy/config")
    if signer_kid:
        for name, kids in verifiers.items():
            if signer_kid not in kids:
                problems.add(name, f"does not verify the signing kid {signer_kid!r} (has {sorted(kids)})")


def check_build_context(problems) -> None:
    """The Dockerfile's COPY sources exist, and .env (the production secrets) stays out of git and
    of the image."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from=") for w in words):
            continue
        for source in [w for w in words[1:-1] if not w.startswith("--")]:
            if source != "." and not (ROOT / source).exists():
                problems.add("Dockerfile", f"COPY source {source} does not exist")
    for ignore in (".gitignore", ".dockerignore"):
        if ".env" not in (ROOT / ignore).read_text().split():
            problems.add(ignore, "does not list .env")


def check_tools(problems, env_example) -> None:
    nats = ROOT / ".venv/bin/nats-server"
    if nats.exists():
        env = {**os.environ, **env_example, "NATS_SERVER_NAME": "check"}
        run = subprocess.run(
            [str(nats), "-t", "-c", str(ROOT / "nats/cluster.conf")], env=env, capture_output=True, text=True
        )
        if run.returncode != 0:
            problems.add("nats/cluster.conf", (run.stderr or run.stdout).strip())
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx:
        with tempfile.TemporaryDirectory() as tmp:
            text = (ROOT / "deploy/nginx.conf").read_text()
            # Local nginx may predate `resolve` (1.27.3) and cannot resolve compose names.
            text = text.replace(" resolve ", " ").replace("http-bridge:8080", "127.0.0.1:8080")
            text = text.replace("events {", f"pid {tmp}/nginx.pid;\nevents {{", 1)
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(text)
            run = subprocess.run(
                [nginx, "-t", "-q", "-c", str(conf), "-e", "/dev/stderr"], capture_output=True, text=True
            )
            if run.returncode != 0:
                problems.add("deploy/nginx.conf", run.stderr.strip())


def self_test(compose_text: str, env_text: str) -> int:
    """Each broken copy must be caught, with a message naming what broke."""
    cases = [
        (
            "unknown key",
            "MEDIABUS__MEDIA__PUBLIC_BASE_URL:",
            "MEDIABUS__MEDIA__PUBLIC_BASE_URLS:",
            None,
            "PUBLIC_BASE_URLS",
        ),
        (
            "wrong type",
            "MEDIABUS__HTTP__LISTEN: 0.0.0.0:8080",
            "MEDIABUS__HTTP__LISTEN: 0.0.0.0:8080\n      MEDIABUS__HTTP__REQUEST_TIMEOUT_MS: soon",
            None,
            "REQUEST_TIMEOUT_MS",
        ),
        (
            "variable not in .env.example",
            None,
            None,
            ("CONTENT_SIGNING_SECRET=", "CONTENT_SIGNING_SECRETX="),
            "CONTENT_SIGNING_SECRET",
        ),
        (
            "missing NATS password",
            "      MEDIABUS__NATS__PASSWORD: ${AUTH_NATS_PASSWORD:?set in .env}\n",
            "",
            None,
            "nats.password",
        ),
        (
            "wrong NATS password variable",
            "MEDIABUS__NATS__PASSWORD: ${MEDIA_NATS_PASSWORD:?",
            "MEDIABUS__NATS__PASSWORD: ${BRIDGE_NATS_PASSWORD:?",
            None,
            "MEDIA_NATS_PASSWORD",
        ),
        (
            "optional secret",
            "MEDIABUS__STORAGE__SECRET_KEY: ${S3_SECRET_KEY:?set in .env}",
            "MEDIABUS__STORAGE__SECRET_KEY: ${S3_SECRET_KEY:-}",
            None,
            "storage.secret_key",
        ),
        ("development mode", "MEDIABUS__ENV: production", "MEDIABUS__ENV: dev", None, "MEDIABUS__ENV"),
        (
            "no health check",
            "    healthcheck: *worker-health\n    depends_on: *after-backends\n\n  media-processor:",
            "    depends_on: *after-backends\n\n  media-processor:",
            None,
            "healthcheck",
        ),
        (
            "config not JSON",
            '"secretKey": "${S3_SECRET_KEY:?set in .env}"}',
            '"secretKey": "${S3_SECRET_KEY:?set in .env}"',
            None,
            "not JSON",
        ),
        (
            "JWT key not mounted",
            "    secrets:\n      - jwt_public_key\n    expose:",
            "    expose:",
            None,
            "jwt_public_key",
        ),
    ]
    failed = 0
    # nats-server -t: a user bound to a variable .env.example does not define.
    env = parse_env_file(env_text)
    env.pop("OPS_NATS_PASSWORD", None)
    found = Problems()
    check_tools(found, env)
    if (ROOT / ".venv/bin/nats-server").exists():
        if any("OPS_NATS_PASSWORD" in p for p in found):
            print(f"self-test nats-server -t: caught ({found[0]})")
        else:
            print(f"self-test nats-server -t: NOT caught; problems were {found}")
            failed += 1
    for title, old, new, env_change, expect in cases:
        compose, env = compose_text, env_text
        if old is not None:
            if old not in compose:
                print(f"self-test {title}: the text to break is gone from docker-compose.yml (update the case)")
                failed += 1
                continue
            compose = compose.replace(old, new, 1)
        if env_change:
            env = env.replace(*env_change)
        found = check(compose, env, run_tools=False)
        if any(expect in p for p in found):
            print(f"self-test {title}: caught ({next(p for p in found if expect in p)})")
        else:
            print(f"self-test {title}: NOT caught; problems were {found}")
            failed += 1
    return failed


def run_binaries(compose_text: str, env_text: str, bin_dir: Path) -> int:
    """Starts each service's binary with its compose environment (values from .env.example) and
    the mounted config directory: it must load its settings and accept its secrets, then stop at
    the first thing only the compose network has (`nats` does not resolve here). Shows the real
    config code (layers, tagged backends, the config-file arrays, the dev-secret refusal) takes
    what compose gives; a deliberately broken copy must be refused."""
    env_example = parse_env_file(env_text)
    services = yaml.safe_load(compose_text)["services"]
    binaries = {p.parent.name for p in (ROOT / "services").glob("*/defaults.toml")}
    runs = []
    for name, svc in services.items():
        command = svc.get("command") or []
        if command and command[0] in binaries:
            env = {k: interpolate(str(v), env_example) for k, v in (svc.get("environment") or {}).items()}
            for volume in svc.get("volumes") or []:
                source, _, target = str(volume).partition(":")
                if target.split(":")[0] == env.get("MEDIABUS_CONFIG_DIR"):
                    env["MEDIABUS_CONFIG_DIR"] = str(ROOT / source)
            runs.append((name, command[0], env, True))
    # Broken copies: an unknown storage backend must stop the media service at its settings, and
    # so must a malformed file in the config directory (proof that the directory is read at all).
    media_env = next(env for n, b, env, _ in runs if b == "media-service")
    runs.append(
        ("media-service, unknown backend", "media-service", dict(media_env, MEDIABUS__STORAGE__BACKEND="s4"), False)
    )
    scratch = tempfile.TemporaryDirectory()
    shutil.copytree(media_env["MEDIABUS_CONFIG_DIR"], scratch.name, dirs_exist_ok=True)
    with open(Path(scratch.name) / "media-service.toml", "a") as f:
        f.write("\n[[auth.keys]\n")
    runs.append(
        (
            "media-service, malformed config file",
            "media-service",
            dict(media_env, MEDIABUS_CONFIG_DIR=scratch.name),
            False,
        )
    )
    failed = 0
    for name, binary, env, should_load in runs:
        base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ} | {"NO_COLOR": "1"}
        try:
            run = subprocess.run(
                [str(bin_dir / binary)],
                env={**base, **env},
                cwd=tempfile.gettempdir(),
                capture_output=True,
                text=True,
                timeout=30,
            )
            out = run.stdout + run.stderr
        except subprocess.TimeoutExpired:
            out = "(still running after 30 s)"
        refused = "invalid configuration" in out or "refusing to start" in out
        reached_nats = "cannot connect to NATS" in out
        ok = (not refused and reached_nats) if should_load else refused
        last = next((line for line in reversed(out.strip().splitlines()) if line.strip()), "")
        print(f"run {name} ({binary}): {'ok' if ok else 'FAILED'}: {last[-200:]}")
        failed += not ok
    scratch.cleanup()
    print(f"check_compose --run-binaries: {failed} of {len(runs)} runs failed")
    return 1 if failed else 0


def main() -> int:
    compose_text = (ROOT / "docker-compose.yml").read_text()
    env_text = (ROOT / ".env.example").read_text()
    if "--run-binaries" in sys.argv[1:]:
        return run_binaries(compose_text, env_text, Path(sys.argv[sys.argv.index("--run-binaries") + 1]))
    if "--self-test" in sys.argv[1:]:
        clean = check(compose_text, env_text, run_tools=False)
        if clean:
            print("self-test needs a clean docker-compose.yml first:", *clean, sep="\n  ")
            return 1
        failed = self_test(compose_text, env_text)
        print(f"check_compose self-test: {failed} of the broken copies went unnoticed")
        return 1 if failed else 0
    problems = check(compose_text, env_text)
    for problem in problems:
        print(f"  {problem}")
    print(f"check_compose: {len(problems)} problem(s) in docker-compose.yml, .env.example, deploy/, nats/cluster.conf")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
