"""Secrets and files.

- The whole demo (every job), an enforce offboarding run, a final active-users run, the
  export, audit and jobs commands and a few failures, all with a known client secret and a
  certificate (with its private key) in the settings: not one log line, report, export,
  audit entry, stored run, state file or error message contains the secret or any piece of
  the key.
- A real-Graph configuration with a wrong secret (or certificate) against a local token
  endpoint (HTTPS on 127.0.0.1, trusted through SSL_CERT_FILE / REQUESTS_CA_BUNDLE, so no
  Microsoft endpoint is ever called): exit 3, a message an admin can act on, no secret.
- File modes: the state directory and everything below it 0700 / 0600, even under umask 0.
- `export --output` never overwrites a delivered month's export (nor its snapshot).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.helpers_hardening import (
    CLIENT_ID,
    DAP_AGENT,
    NOW,
    TENANT_ID,
    clean_env,
    cli,
    demo_config,
    demo_tenant,
    files_under,
    modes_under,
    write_toml,
)

pytestmark = pytest.mark.skipif(not DAP_AGENT.exists(), reason="needs the installed dap-agent")

SECRET = "dapS3cr3t-" + secrets.token_hex(12)
MONTH = NOW.strftime("%Y-%m")




# ---- a certificate with its private key ----------------------------------------------------

def make_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, bytes]:
    """(PEM with key and certificate, PEM with the certificate only, the key's PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    both = directory / "app-cert.pem"
    both.write_bytes(key_pem + cert_pem)
    both.chmod(0o600)
    public = directory / "ca.pem"
    public.write_bytes(cert_pem)
    return both, public, key_pem


def key_fragments(key_pem: bytes) -> list[str]:
    """Pieces of the private key to look for: every base64 line of the PEM, and overlapping
    32-character windows of its body (in case it shows up re-wrapped)."""
    lines = [ln for ln in key_pem.decode().splitlines() if ln and not ln.startswith("-----")]
    body = "".join(lines)
    windows = [body[i:i + 32] for i in range(0, len(body) - 32, 16)]
    return [ln for ln in lines if len(ln) >= 16] + windows + ["PRIVATE KEY"]


def leaks(haystack: str, key_pem: bytes) -> list[str]:
    found = []
    variants = [SECRET, base64.b64encode(SECRET.encode()).decode(), SECRET[::-1]]
    found += [f"secret ({v[:6]}...)" for v in variants if v in haystack]
    found += [f"key material {f[:10]}..." for f in key_fragments(key_pem) if f in haystack]
    return found


# ---- the sweep over a whole demo ---------------------------------------------------------------

def test_no_secret_or_key_material_anywhere_in_a_full_demo(tmp_path: Path) -> None:
    cert, _, key_pem = make_certificate(tmp_path)
    demo = tmp_path / "demo"  # (the demo's sandbox ignores the credential; settings carry it)
    env = clean_env(DAP_AGENT_CLIENT_SECRET=SECRET,
                    DAP_AGENT_CLIENT_CERTIFICATE_PATH=str(cert))
    outputs: list[subprocess.CompletedProcess[str]] = []

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        result = cli(*args, env={**env, **extra})
        outputs.append(result)
        return result

    assert run("-v", "demo", "--dir", str(demo)).returncode == 0, outputs[-1].stderr[-2000:]
    config = demo / "agent.toml"
    base = ("-v", "--config", str(config))
    enforce = run(*base, "run", "offboarding", "--json", DAP_AGENT_OFFBOARDING__MODE="enforce")
    assert enforce.returncode in (0, 4), enforce.stderr[-2000:]
    assert any(a["status"] == "done" for a in json.loads(enforce.stdout)["actions"])
    assert run(*base, "run", "active-users", "--final", "--json").returncode == 0
    month = json.loads(outputs[-1].stdout)["summary"]["month"]
    run(*base, "export", "active-users", "--month", month, "--format", "xlsx")
    run(*base, "jobs")
    run(*base, "audit", "show")
    run(*base, "audit", "verify")
    run(*base, "config", "check")
    # failures: Graph down, a missing permission, a bad key, a traceback in debug mode
    faults = json.dumps({"unavailable_every": 1, "retry_after": 0.01})
    assert run(*base, "run", "device-compliance", "--json",
               DAP_AGENT_SANDBOX_FAULTS=faults).returncode == 3
    assert run(*base, "run", "privileged-roles",
               DAP_AGENT_SANDBOX_ROLES="User.Read.All").returncode == 3
    assert run(*base, "--debug", "run", "offboarding",
               DAP_AGENT_SANDBOX_FAULTS=json.dumps({"malformed_path": "^/users$"})
               ).returncode == 3
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text(encoding="utf-8") + '\nsurplus = "x"\n', encoding="utf-8")
    assert run("--config", str(bad), "config", "check").returncode == 2

    haystack = "\n".join(r.stdout + r.stderr for r in outputs)
    haystack += "\n".join(data.decode("utf-8", errors="replace")
                          for data in files_under(demo).values())
    assert "run started" in haystack and "graph request" in haystack  # the logs were there
    assert leaks(haystack, key_pem) == []


@pytest.mark.parametrize("credential", [
    {"client_secret": [SECRET]},  # wrong type
    {"client_secert": SECRET},  # misspelt: an unknown key
    {"client_secret": SECRET, "client_certificate_path": "/nonexistent/cert.pem"},
])
def test_a_config_error_next_to_the_secret_does_not_echo_it(
        tmp_path: Path, credential: dict[str, Any]) -> None:
    config = write_toml(tmp_path / "agent.toml", {
        "tenant_id": TENANT_ID, "client_id": CLIENT_ID, "state_dir": str(tmp_path / "state"),
        "timezone": "Mars/Olympus", **credential})
    for env in (clean_env(), clean_env(DAP_AGENT_CLIENT_SECRET=SECRET)):
        result = cli("--config", str(config), "config", "check", env=env)
        assert result.returncode == 2, result.stderr
        assert "timezone" in result.stderr
        assert SECRET not in result.stdout + result.stderr


# ---- real Graph with a wrong credential, against a local token endpoint ---------------------

class TokenEndpoint:
    """A sign-in authority on https://127.0.0.1:PORT that refuses every client credential,
    like Entra ID does for a wrong secret (AADSTS7000215) or an unknown certificate."""

    def __init__(self, directory: Path, *, echo_secret: bool = False) -> None:
        both, self.ca, _ = make_certificate(directory)
        self.requests: list[tuple[str, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                endpoint.requests.append(("GET", self.path))
                base = f"https://127.0.0.1:{endpoint.port}/{TENANT_ID}"
                if self.path.endswith("/.well-known/openid-configuration"):
                    self._json(200, {
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "issuer": f"{base}/v2.0",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    })
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                endpoint.requests.append(("POST", self.path))
                sent = (form.get("client_secret") or form.get("client_assertion") or [""])[0]
                detail = (f"AADSTS7000215: Invalid client secret provided. Ensure the secret "
                          f"being sent in the request is the client secret value, not the "
                          f"client secret ID, for a secret added to app '{CLIENT_ID}'.")
                if echo_secret:
                    detail += f" Received: '{sent}'"
                self._json(401, {"error": "invalid_client", "error_description": detail,
                                 "error_codes": [7000215]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(both))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[TokenEndpoint]:
    server = TokenEndpoint(tmp_path)
    yield server
    server.close()


def real_graph_config(tmp: Path, authority: str, **credential: str) -> Path:
    return write_toml(tmp / "agent.toml", {
        "tenant_id": TENANT_ID, "client_id": CLIENT_ID, "authority_host": authority,
        # never reached: the token request fails first (and 127.0.0.1:9 refuses anyway)
        "graph_url": "https://127.0.0.1:9", "state_dir": str(tmp / "state"), **credential})


def trusted(ca: Path) -> dict[str, str]:
    return clean_env(SSL_CERT_FILE=str(ca), REQUESTS_CA_BUNDLE=str(ca),
                     NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")


@pytest.mark.parametrize("command", [["run", "active-users"], ["config", "check", "--online"]])
def test_a_wrong_client_secret_exits_3_without_showing_it(
        tmp_path: Path, authority: TokenEndpoint, command: list[str]) -> None:
    config = real_graph_config(tmp_path, authority.url, client_secret=SECRET)
    result = cli("--config", str(config), *command, env=trusted(authority.ca), timeout=90)
    assert result.returncode == 3, result.stdout + result.stderr
    assert ("POST", f"/{TENANT_ID}/oauth2/v2.0/token") in authority.requests
    assert "AADSTS7000215" in result.stderr or "invalid_client" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    state = tmp_path / "state"
    assert SECRET not in "".join(d.decode(errors="replace") for d in files_under(state).values())


def test_a_rejected_certificate_exits_3_without_key_material(
        tmp_path: Path, authority: TokenEndpoint) -> None:
    (tmp_path / "app").mkdir()
    cert, _, key_pem = make_certificate(tmp_path / "app")
    config = real_graph_config(tmp_path, authority.url, client_certificate_path=str(cert))
    result = cli("--config", str(config), "run", "offboarding", env=trusted(authority.ca),
                 timeout=90)
    assert result.returncode == 3, result.stdout + result.stderr
    assert leaks(result.stdout + result.stderr, key_pem) == []


def test_a_secret_echoed_by_the_authority_is_still_not_printed(tmp_path: Path) -> None:
    server = TokenEndpoint(tmp_path, echo_secret=True)
    try:
        config = real_graph_config(tmp_path, server.url, client_secret=SECRET)
        result = cli("--config", str(config), "run", "active-users", env=trusted(server.ca),
                     timeout=90)
    finally:
        server.close()
    assert result.returncode == 3, result.stderr
    assert SECRET not in result.stdout + result.stderr


# ---- file modes ----------------------------------------------------------------------------

def run_with_umask(umask: int, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DAP_AGENT), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False, preexec_fn=lambda: os.umask(umask))


@pytest.fixture(scope="module")
def delivered_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir after every job, an enforce offboarding run and a final active-users
    run, all under umask 000 (the worst a service manager could hand us)."""
    root = tmp_path_factory.mktemp("modes")
    demo_tenant().save(root / "tenant.json")
    config = demo_config(root)
    env = clean_env(DAP_AGENT_NOW=NOW.isoformat())
    for job in ("privileged-roles", "device-compliance", "offboarding"):
        result = run_with_umask(0, "--config", str(config), "run", job,
                                env={**env, "DAP_AGENT_OFFBOARDING__MODE": "enforce"})
        assert result.returncode in (0, 4), result.stderr[-2000:]
    result = run_with_umask(0, "--config", str(config), "run", "active-users", "--final",
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


def wrong_modes(state: Path) -> dict[str, str]:
    wrong = {}
    for name, mode in modes_under(state).items():
        want = 0o700 if (state / name).is_dir() else 0o600
        if mode != want:
            wrong[name] = oct(mode)
    return wrong


def test_state_directories_are_0700_and_files_0600_even_under_umask_0(
        delivered_state: Path) -> None:
    state = delivered_state / "state"
    modes = modes_under(state)
    assert modes["."] == 0o700
    assert "audit.jsonl" in modes and any(n.startswith("exports/") for n in modes)
    assert any(n.startswith("runs/") for n in modes) and any(n.startswith("jobs/") for n in modes)
    wrong = wrong_modes(state)
    assert wrong == {}, f"modes other than 0700/0600: {wrong}"


def test_the_snapshots_directory_is_0700(delivered_state: Path) -> None:
    """`snapshots/` is an intermediate directory: mkdir(mode=..., parents=True) would give it
    the umask's mode."""
    state = delivered_state / "state"
    assert stat.S_IMODE((state / "snapshots").stat().st_mode) == 0o700


def test_the_audit_log_and_exports_are_0600(delivered_state: Path) -> None:
    state = delivered_state / "state"
    assert stat.S_IMODE((state / "audit.jsonl").stat().st_mode) == 0o600
    exports = list((state / "exports").iterdir())
    assert exports
    assert {stat.S_IMODE(p.stat().st_mode) for p in exports} == {0o600}


# ---- export --output never overwrites a delivered month ------------------------------------

@pytest.fixture
def delivered(tmp_path: Path, delivered_state: Path) -> tuple[Path, Path, bytes]:
    """(config, the delivered export, its bytes) in a private copy of the delivered state."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(delivered_state, root, symlinks=True)
    config = demo_config(root)
    export = root / "state" / "exports" / f"active-users-{MONTH}.csv"
    return config, export, export.read_bytes()


def export_cmd(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("--config", str(config), "export", "active-users", "--month", MONTH, *extra,
               env=clean_env(DAP_AGENT_NOW=NOW.isoformat()))


def test_export_reproduces_the_delivered_month_without_touching_it(
        delivered: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    config, export, data = delivered
    before = export.stat()
    assert export_cmd(config).returncode == 0
    assert export.read_bytes() == data and export.stat().st_ino == before.st_ino
    copy = tmp_path / "copy.csv"
    assert export_cmd(config, "--output", str(copy)).returncode == 0
    assert copy.read_bytes() == data


def test_export_refuses_to_overwrite_a_delivered_export_that_was_changed(
        delivered: tuple[Path, Path, bytes]) -> None:
    config, export, data = delivered
    export.write_bytes(data + b"tampered\r\n")
    for extra in ((), ("--output", str(export)), ("--output", str(export.parent))):
        result = export_cmd(config, *extra)
        assert result.returncode == 2, (extra, result.stderr)
        assert "refusing" in result.stderr
        assert export.read_bytes() == data + b"tampered\r\n"


def test_export_refuses_a_symlink_to_the_delivered_export(
        delivered: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    config, export, _ = delivered
    export.write_bytes(b"changed after delivery\r\n")
    link = tmp_path / "link.csv"
    link.symlink_to(export)
    assert export_cmd(config, "--output", str(link)).returncode == 2
    assert export.read_bytes() == b"changed after delivery\r\n"


def test_export_in_another_format_cannot_replace_the_delivered_export(
        delivered: tuple[Path, Path, bytes]) -> None:
    config, export, data = delivered
    result = export_cmd(config, "--format", "xlsx", "--output", str(export))
    assert export.read_bytes() == data, "the delivered CSV was overwritten"
    assert result.returncode == 2


def test_export_cannot_overwrite_the_months_snapshot(
        delivered: tuple[Path, Path, bytes]) -> None:
    config, export, _ = delivered
    snapshot = export.parent.parent / "snapshots" / "active-users" / f"{MONTH}.json"
    before = snapshot.read_bytes()
    result = export_cmd(config, "--output", str(snapshot))
    assert snapshot.read_bytes() == before, "the delivered snapshot was overwritten"
    assert result.returncode == 2
