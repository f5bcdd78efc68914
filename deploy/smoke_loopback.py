#!/usr/bin/env python3
"""The compose stack's own files, run for real on 127.0.0.1 without a Docker engine.

    .venv/bin/python deploy/smoke_loopback.py [BIN_DIR]     # BIN_DIR: debug binaries (default target/debug)

Uses, unchanged: nats/cluster.conf (three nodes, the users bound to .env passwords), the SeaweedFS
identity of docker-compose.yml's `seaweedfs_s3` config and deploy/seaweedfs/init-bucket.sh, the
JWT layer deploy/config/*.toml (EdDSA key files), and each service's compose environment. Only
what needs Docker's network or MongoDB's replica set is replaced: listen addresses and ports
(CLI flags / one variable each), the S3 endpoint, and the document store (SQLite: nx-27017 has no
replica set). Secrets are fresh random values and a fresh Ed25519 pair, as `.env` would hold.

Checks: the cluster forms with JetStream; every service starts (READY) with its compose settings,
the services spread over the three nodes; the bridge is ready; register, login (an EdDSA token with
kid prod-1, signed by the auth service, verified by the media service and the auth service),
upload through the bridge into the bucket (bucket-scoped key), download the same bytes, the
processor finishes the media; the streams are raised to 3 replicas as `nats-streams` does (JetStream
API as user `ops`) and each then has a leader and two current replicas.
"""

from __future__ import annotations

import base64
import json
import os

import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_compose import ROOT, interpolate, parse_env_file  # noqa: E402

VENV_BIN = ROOT / ".venv/bin"
DEADLINE_SECS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe, secs: float = DEADLINE_SECS):
    deadline = time.monotonic() + secs
    last = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - keep polling until the deadline, report the last error
            last = e
        time.sleep(0.2)
    raise SystemExit(f"smoke: {what}: not within {secs} s (last: {last})")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


class Nats:
    """Just enough of the NATS protocol for JetStream API requests."""

    def __init__(self, port: int, user: str, password: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.file.readline()  # INFO
        connect = {"user": user, "pass": password, "verbose": False, "headers": True, "no_responders": True}
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        line = self.file.readline()
        if not line.startswith(b"PONG"):
            raise SystemExit(f"smoke: NATS login as {user}: {line!r}")
        self.inbox = f"_INBOX.{uuid.uuid4().hex}"
        self.sock.sendall(f"SUB {self.inbox} 1\r\n".encode())

    def request(self, subject: str, body: dict | None) -> dict:
        data = json.dumps(body).encode() if body is not None else b""
        self.sock.sendall(f"PUB {subject} {self.inbox} {len(data)}\r\n".encode() + data + b"\r\n")
        while True:
            line = self.file.readline()
            if line.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                return json.loads(self.file.read(size + 2)[:-2])
            elif line.startswith(b"HMSG"):
                size = int(line.split()[-1])
                return {"error": self.file.read(size + 2)[:-2].decode(errors="replace")}
            elif line.startswith(b"-ERR") or not line:
                return {"error": line.decode(errors="replace")}


def png(width: int = 64, height: int = 48) -> bytes:
    """A real RGB PNG (a gradient)."""
    # Each row: filter byte 0, then RGB per pixel.
    raw = b"".join(
        b"\0" + b"".join(bytes((x * 4 % 256, y * 5 % 256, 128)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def main() -> int:
    bin_dir = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target") + "/debug")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env_names = parse_env_file((ROOT / ".env.example").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="mediabus-smoke-"))
    procs: list[tuple[str, subprocess.Popen, Path]] = []

    def spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = tmp / f"{name}.log"
        base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        proc = subprocess.Popen(
            argv, env={**base, "NO_COLOR": "1", **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp
        )
        procs.append((name, proc, log))
        return proc

    try:
        # --- .env: fresh secrets and a fresh Ed25519 pair ------------------------------------------
        dotenv = {k: v for k, v in env_names.items()}
        for key in dotenv:
            if "change-me" in dotenv[key]:
                dotenv[key] = secrets.token_hex(24)
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", tmp / "jwt.pem"], check=True)
        subprocess.run(["openssl", "pkey", "-in", tmp / "jwt.pem", "-pubout", "-out", tmp / "jwt.pub.pem"], check=True)
        dotenv["JWT_PRIVATE_KEY"] = (tmp / "jwt.pem").read_text()
        dotenv["JWT_PUBLIC_KEY"] = (tmp / "jwt.pub.pem").read_text()
        # Compose secrets land in /run/secrets/<name>; here, in tmp/secrets/<name>.
        (tmp / "secrets").mkdir()
        for name, secret in compose["secrets"].items():
            (tmp / "secrets" / name).write_text(dotenv[secret["environment"]])
        config_dir = tmp / "config"
        shutil.copytree(ROOT / "deploy/config", config_dir)
        for file in config_dir.glob("*.toml"):
            file.write_text(file.read_text().replace("/run/secrets/", f"{tmp}/secrets/"))

        # --- SeaweedFS with the compose identity, then the compose bucket init ---------------------
        s3_json = tmp / "s3.json"
        s3_json.write_text(interpolate(compose["configs"]["seaweedfs_s3"]["content"], dotenv))
        ports = {
            k: free_port()
            for k in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
        }
        (tmp / "weed").mkdir()
        spawn(
            "seaweedfs",
            [
                str(VENV_BIN / "weed"),
                "server",
                f"-dir={tmp}/weed",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={ports['master']}",
                f"-master.port.grpc={ports['master_grpc']}",
                f"-volume.port={ports['volume']}",
                f"-volume.port.grpc={ports['volume_grpc']}",
                f"-filer.port={ports['filer']}",
                f"-filer.port.grpc={ports['filer_grpc']}",
                "-s3",
                f"-s3.port={ports['s3']}",
                f"-s3.port.grpc={ports['s3_grpc']}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={s3_json}",
                "-volume.max=0",
                "-master.volumeSizeLimitMB=64",
            ],
            {},
        )
        s3 = f"http://127.0.0.1:{ports['s3']}"
        wait_until("SeaweedFS S3", lambda: http("GET", f"{s3}/healthz")[0] == 200)
        init = subprocess.run(
            ["sh", str(ROOT / "deploy/seaweedfs/init-bucket.sh")],
            capture_output=True,
            text=True,
            env={
                "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
                "S3_BUCKET": dotenv["S3_BUCKET"],
                # weed shell finds gRPC at port + 10000 unless told (compose keeps the defaults).
                "WEED_MASTER": f"127.0.0.1:{ports['master']}.{ports['master_grpc']}",
                "WAIT_SECS": "60",
            },
        )
        print(f"smoke: s3-init: {init.stdout.strip().splitlines()[-1] if init.stdout.strip() else init.stderr}")
        if init.returncode != 0:
            raise SystemExit("smoke: s3-init failed")
        anonymous = http("PUT", f"{s3}/{dotenv['S3_BUCKET']}/anonymous", b"x")[0]
        if anonymous < 400:
            raise SystemExit(f"smoke: S3 accepted an anonymous PUT ({anonymous})")

        # --- three NATS nodes from nats/cluster.conf ------------------------------------------------
        nats_env = {k: interpolate(str(v), dotenv) for k, v in compose["services"]["nats-1"]["environment"].items()}
        client, cluster, monitor = ([free_port() for _ in range(3)] for _ in range(3))
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster)
        shutil.copy(ROOT / "nats/permissions.conf", tmp / "permissions.conf")
        for i in range(3):
            # store_dir is fixed in the file (compose mounts a volume there): point it at tmp.
            conf = tmp / f"nats-{i + 1}.conf"
            conf.write_text((ROOT / "nats/cluster.conf").read_text().replace("/data/jetstream", f"{tmp}/nats-{i + 1}"))
            spawn(
                f"nats-{i + 1}",
                [
                    str(VENV_BIN / "nats-server"),
                    "-c",
                    str(conf),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(client[i]),
                    "-m",
                    str(monitor[i]),
                    "--cluster",
                    f"nats://127.0.0.1:{cluster[i]}",
                    "--routes",
                    routes,
                ],
                {**nats_env, "NATS_SERVER_NAME": f"nats-{i + 1}"},
            )
        for i in range(3):
            wait_until(
                f"nats-{i + 1} /healthz", lambda i=i: http("GET", f"http://127.0.0.1:{monitor[i]}/healthz")[0] == 200
            )
        print("smoke: NATS cluster of 3 with JetStream is healthy")

        # --- the services, with their compose environment ------------------------------------------
        bridge_port = free_port()
        started = []
        order = ["media-service", "media-service", "media-processor", "auth-service", "http-bridge"]
        for n, service in enumerate(order):
            svc = compose["services"][service]
            env = {k: interpolate(str(v), dotenv) for k, v in svc["environment"].items()}
            env.update(
                {
                    "MEDIABUS_CONFIG_DIR": str(config_dir),
                    # Spread over the nodes, as the `nats` alias does in compose.
                    "MEDIABUS__NATS__URL": f"nats://127.0.0.1:{client[n % 3]}",
                }
            )
            if "MEDIABUS__METRICS__LISTEN" in env:
                # Every container has its own :9100; here they share one host.
                env["MEDIABUS__METRICS__LISTEN"] = "127.0.0.1:0"
            if "MEDIABUS__STORAGE__ENDPOINT" in env:
                env["MEDIABUS__STORAGE__ENDPOINT"] = s3
            if env.get("MEDIABUS__STORE__BACKEND") == "mongodb":
                env.pop("MEDIABUS__STORE__URI")
                env.pop("MEDIABUS__STORE__DATABASE")
                env.update({"MEDIABUS__STORE__BACKEND": "sqlite", "MEDIABUS__STORE__PATH": str(tmp / "mediabus.db")})
            if service == "http-bridge":
                env["MEDIABUS__HTTP__LISTEN"] = f"127.0.0.1:{bridge_port}"
                env["MEDIABUS__DOCS__ASSETS_DIR"] = str(ROOT / "services/http-bridge/docs/node_modules/swagger-ui-dist")
                env["MEDIABUS__WEB__DIR"] = str(ROOT / "services/http-bridge/web")
            name = f"{service}-{n}"
            proc = spawn(name, [str(bin_dir / service)], env)
            log = tmp / f"{name}.log"

            def ready(proc=proc, log=log, name=name):
                if b"READY" in log.read_bytes():
                    return True
                if proc.poll() is not None:
                    raise SystemExit(f"smoke: {name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
                return False

            wait_until(f"{name} READY", ready)
            started.append(name)
        print(f"smoke: READY: {', '.join(started)} (nodes 1, 2, 3 in turn)")

        api = f"http://127.0.0.1:{bridge_port}"
        wait_until("bridge /readyz", lambda: http("GET", f"{api}/readyz")[0] == 200)

        # --- tokens: EdDSA, kid prod-1; verified by the auth and the media service -----------------
        user = {
            "name": "Smoke",
            "email": f"smoke-{uuid.uuid4().hex[:8]}@example.com",
            "password": "correct horse battery",
        }
        json_headers = {"content-type": "application/json"}
        status, body, _ = http("POST", f"{api}/api/auth/register", json.dumps(user).encode(), json_headers)
        assert status == 201, (status, body)
        status, body, _ = http(
            "POST",
            f"{api}/api/auth/login",
            json.dumps({k: user[k] for k in ("email", "password")}).encode(),
            json_headers,
        )
        assert status == 200, (status, body)
        token = json.loads(body)["accessToken"]
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header.get("alg") == "EdDSA" and header.get("kid") == "prod-1", header
        auth = {"authorization": f"Bearer {token}"}
        status, body, _ = http("GET", f"{api}/api/auth/me", None, auth)
        assert status == 200, (status, body)
        print(f"smoke: login gives an {header['alg']} token (kid {header['kid']}); auth.me accepts it")

        # --- upload through the bridge into the bucket, and back ------------------------------------
        def upload_and_process(width: int) -> dict:
            image = png(width)
            boundary = uuid.uuid4().hex
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="smoke.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            )
            form = head.encode() + image + f"\r\n--{boundary}--\r\n".encode()
            kind = {**auth, "content-type": f"multipart/form-data; boundary={boundary}"}
            status, body, _ = http("POST", f"{api}/api/media/upload", form, kind)
            assert status == 201, (status, body)
            media = json.loads(body)
            status, content, _ = http("GET", f"{api}/api/media/{media['id']}/content", None, auth)
            assert status == 200 and content == image, (status, len(content))
            print(f"smoke: upload {media['id']} ({len(image)} bytes) stored in S3 and read back byte for byte")

            def finished():
                m = json.loads(http("GET", f"{api}/api/media/{media['id']}", None, auth)[1])
                return m if m.get("status") in ("READY", "FAILED") else None

            done = wait_until("media processed", finished)
            assert done["status"] == "READY", done
            print(f"smoke: processed: READY, variants {[v['name'] for v in done.get('variants') or []]}")
            return done

        upload_and_process(64)

        # --- streams to 3 replicas, as nats-streams does ---------------------------------------------
        ops = Nats(client[0], "ops", dotenv["OPS_NATS_PASSWORD"])
        for stream in compose["services"]["nats-streams"]["environment"]["STREAMS"].split():
            info = ops.request(f"$JS.API.STREAM.INFO.{stream}", None)
            assert "config" in info, (stream, info)
            config = dict(info["config"], num_replicas=3)
            updated = ops.request(f"$JS.API.STREAM.UPDATE.{stream}", config)
            assert "error" not in updated, (stream, updated)

            def current(stream=stream):
                c = ops.request(f"$JS.API.STREAM.INFO.{stream}", None).get("cluster") or {}
                replicas = c.get("replicas") or []
                return c.get("leader") and len(replicas) == 2 and all(r.get("current") for r in replicas) and c

            c = wait_until(f"{stream} on 3 replicas", current)
            print(f"smoke: {stream}: leader {c['leader']}, replicas {[r['name'] for r in c['replicas']]}")
        # Events and jobs still flow through the replicated streams.
        upload_and_process(96)
        print("smoke: ok")
        return 0
    finally:
        # Services first (they drain while NATS is still up), then NATS, then SeaweedFS (killed:
        # it takes seconds to stop on SIGTERM and holds nothing we need).
        for name, proc, _log in reversed(procs):
            if proc.poll() is None:
                proc.kill() if name == "seaweedfs" else proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # weed leaves unix sockets in /tmp named after its ports (it ignores $TMPDIR).
        for port in ports.values() if "ports" in locals() else ():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
        if os.environ.get("SMOKE_KEEP"):
            print(f"smoke: logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
