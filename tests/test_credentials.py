"""Credentials checked offline: the certificate PEM, tenant and client ids (issue 14.7).

Each bad credential is exit 2 naming the setting, from `config check`, `run` and `serve`
alike, before anything talks to Graph; an expiring certificate is a warning.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.credentials import certificate_info, check_credentials
from agent.errors import ConfigError
from agent.tomlwrite import dumps
from tests.conftest import CLIENT_ID, TENANT_ID

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def keys() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return (rsa.generate_private_key(public_exponent=65537, key_size=2048),
            rsa.generate_private_key(public_exponent=65537, key_size=2048))


def pem(key: Any, *, days_left: float = 365, not_before_days: float = -1,
        cert_key: Any = None, with_key: bool = True, with_cert: bool = True,
        password: bytes | None = None) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dap-agent test")])
    signer = cert_key or key
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(signer.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW + dt.timedelta(days=not_before_days))
            .not_valid_after(NOW + dt.timedelta(days=days_left))
            .sign(signer, hashes.SHA256()))
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    out = b""
    if with_key:
        out += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 encryption)
    if with_cert:
        out += cert.public_bytes(serialization.Encoding.PEM)
    return out


def real_config(tmp_path: Path, cert: bytes | None, **extra: Any) -> Path:
    data: dict[str, Any] = {"tenant_id": TENANT_ID, "client_id": CLIENT_ID,
                            "graph_url": "https://127.0.0.1:9",  # never reached
                            "authority_host": "https://127.0.0.1:9",
                            "state_dir": str(tmp_path / "state")}
    if cert is not None:
        (tmp_path / "app.pem").write_bytes(cert)
        data["client_certificate_path"] = str(tmp_path / "app.pem")
    else:
        data["client_secret"] = "not-a-real-secret-0123456789"
    data.update(extra)
    path = tmp_path / "agent.toml"
    path.write_text(dumps(data), encoding="utf-8")
    return path


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """The CLI in-process (a subprocess per case would cost a second each)."""
    def run(*args: str) -> Result:
        code = main(list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)
    return run


def test_certificate_info_names_subject_thumbprint_and_expiry(
        tmp_path: Path, keys: tuple[Any, Any]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    data = pem(keys[0], days_left=100)
    (tmp_path / "a.pem").write_bytes(data)
    info = certificate_info(tmp_path / "a.pem")
    cert = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE"):])
    assert info.subject == "CN=dap-agent test"
    assert info.thumbprint == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert info.not_after == cert.not_valid_after_utc
    assert abs(info.expires_in(NOW) - dt.timedelta(days=100)) < dt.timedelta(minutes=1)


BAD = {
    "garbage": (lambda k: b"hello, this is not a certificate\n", "not a PEM file"),
    "key only": (lambda k: pem(k[0], with_cert=False), "no certificate in the PEM"),
    "certificate only": (lambda k: pem(k[0], with_key=False), "no private key in the PEM"),
    "key of another certificate": (lambda k: pem(k[0], cert_key=k[1]),
                                   "does not belong to the certificate"),
    "encrypted key": (lambda k: pem(k[0], password=b"pw"), "private key is encrypted"),
    "expired": (lambda k: pem(k[0], days_left=-2, not_before_days=-400),
                "the certificate expired on"),
    "not yet valid": (lambda k: pem(k[0], not_before_days=3), "not valid before"),
    "damaged key": (lambda k: pem(k[0]).replace(b"MII", b"MIX", 1), "cannot be read"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_certificate_fails_config_check_with_exit_2_naming_the_setting(
        tmp_path: Path, keys: tuple[Any, Any], case: str, cli: Callable[..., Result]) -> None:
    make, problem = BAD[case]
    result = cli("--config", str(real_config(tmp_path, make(keys))), "config", "check")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"client_certificate_path: {tmp_path / 'app.pem'}: " in result.stderr
    assert problem in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_run_and_serve_refuse_an_expired_certificate_before_any_graph_call(
        tmp_path: Path, keys: tuple[Any, Any], cli: Callable[..., Result]) -> None:
    config = real_config(tmp_path, pem(keys[0], days_left=-1, not_before_days=-400))
    run = cli("--config", str(config), "run", "active-users")
    assert run.returncode == 2, run.stderr
    assert "client_certificate_path" in run.stderr and "expired" in run.stderr
    assert "internal error" not in run.stderr
    # the failed run is in the audit log, with the reason
    from agent.audit import AuditLog

    failed = [e for e in AuditLog(tmp_path / "state" / "audit.jsonl").entries()
              if e.get("event") == "run-failed"]
    assert failed and "expired" in failed[-1]["error"]
    serve = cli("--config", str(config), "serve")
    assert serve.returncode == 2, serve.stderr
    assert "client_certificate_path" in serve.stderr and "expired" in serve.stderr


def test_a_certificate_expiring_within_30_days_is_a_warning_and_shown(
        tmp_path: Path, keys: tuple[Any, Any], cli: Callable[..., Result]) -> None:
    config = real_config(tmp_path, pem(keys[0], days_left=12.5))
    check = cli("--config", str(config), "config", "check")
    assert check.returncode == 0, check.stderr
    assert "warning: client_certificate_path: the certificate expires on" in check.stdout
    assert "(in 12 days" in check.stdout
    assert "certificate: CN=dap-agent test, thumbprint " in check.stdout
    jobs = cli("--config", str(config), "jobs")
    assert jobs.returncode == 0, jobs.stderr
    assert "certificate: CN=dap-agent test" in jobs.stdout and "expires" in jobs.stdout


def test_a_good_certificate_passes_without_warning(tmp_path: Path,
                                                   keys: tuple[Any, Any]) -> None:
    from agent.settings import load_settings

    settings = load_settings(real_config(tmp_path, pem(keys[0], days_left=200)))
    assert check_credentials(settings) == []
    with pytest.raises(ConfigError) as err:
        check_credentials(settings, NOW + dt.timedelta(days=201))
    assert "expired" in str(err.value)


@pytest.mark.parametrize(("key", "value"), [
    ("tenant_id", "not a tenant!"), ("tenant_id", "common"), ("tenant_id", "contoso"),
    ("tenant_id", "5b7e2a1c-3c1f-4d1e-9a51-0d3f6c2b8e4"),
    ("client_id", "my-app"), ("client_id", "contoso.onmicrosoft.com"),
])
def test_a_malformed_tenant_or_client_id_is_exit_2_naming_it(
        tmp_path: Path, key: str, value: str, cli: Callable[..., Result]) -> None:
    config = real_config(tmp_path, None, **{key: value})
    for command in (["config", "check"], ["run", "active-users"]):
        result = cli("--config", str(config), *command)
        assert result.returncode == 2, result.stderr
        assert f"{config}: {key}: must be" in result.stderr
        assert "internal error" not in result.stderr


@pytest.mark.parametrize("tenant", [
    "5B7E2A1C-3C1F-4D1E-9A51-0D3F6C2B8E47", "contoso.onmicrosoft.com", "gemeente-x.nl",
    "xn--bcher-kva.example",
])
def test_guids_and_verified_domain_names_are_tenants(tmp_path: Path, tenant: str) -> None:
    from agent.settings import load_settings

    assert load_settings(real_config(tmp_path, None, tenant_id=tenant)).tenant_id == tenant
