"""The app's credential, checked offline before the first night.

`certificate_info` reads the PEM that `client_certificate_path` names (the certificate and
its private key in one file, as azure-identity's CertificateCredential loads it) and says
what is wrong in words that name the setting. `check_credentials` is what `config check`
and `serve` run before anything talks to Graph: a garbage PEM, a key-only PEM, a key of
another certificate or an expired certificate is a configuration error (exit 2), not an
`internal error: ValueError` at 02:00.

Parsing uses `cryptography` (already installed with azure-identity): it is what
azure-identity itself loads the PEM with, so what passes here loads there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.settings import Settings

SETTING = "client_certificate_path"
EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class CertInfo:
    not_after: datetime  # UTC
    subject: str  # RFC 4514, e.g. "CN=dap-agent contoso"
    thumbprint: str  # SHA-1 hex, upper case: what the Entra portal lists under Certificates
    not_before: datetime | None = None

    def expires_in(self, now: datetime) -> timedelta:
        return self.not_after - now

    def describe(self) -> str:
        return (f"{self.subject}, thumbprint {self.thumbprint}, expires "
                f"{self.not_after:%Y-%m-%d %H:%M}Z")


def _problem(path: Path, text: str) -> ConfigError:
    return ConfigError([f"{SETTING}: {path}: {text}"])


def certificate_info(path: Path | str) -> CertInfo:
    """The certificate in the PEM at `path`, after checking the file holds a certificate
    and the unencrypted private key that belongs to it. ConfigError naming the setting
    otherwise. Never puts key material in a message."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _problem(path, "no such file") from None
    except PermissionError:
        raise _problem(path, "cannot read the file (permission denied): run as the service "
                             "user, or check the file's owner and mode") from None
    except IsADirectoryError:
        raise _problem(path, "is a directory, not a PEM file") from None
    except OSError as exc:
        raise _problem(path, f"cannot read the file: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise _problem(path, "not a PEM file (expected the certificate and its private key, "
                             "each between -----BEGIN ...----- lines)")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise _problem(path, "no certificate in the PEM (a key alone is not enough: put the "
                             "certificate and its private key in one file)")
    if b"PRIVATE KEY-----" not in data:
        raise _problem(path, "no private key in the PEM (a certificate alone is not enough: "
                             "put the certificate and its private key in one file)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise _problem(path, "the private key is encrypted; dap-agent needs it unencrypted "
                             "(protect the file with systemd-creds instead)") from None
    except (ValueError, NotImplementedError):
        raise _problem(path, "the private key in the PEM cannot be read (damaged or an "
                             "unsupported key type)") from None
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    matching = [c for c in certificates
                if c.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
                == public]
    if not matching:
        raise _problem(path, "the private key does not belong to the certificate in the file")
    cert = matching[0]
    return CertInfo(
        not_after=cert.not_valid_after_utc,
        not_before=cert.not_valid_before_utc,
        subject=cert.subject.rfc4514_string() or "(empty subject)",
        thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # an id, not a MAC
    )


def check_credentials(settings: Settings, now: datetime | None = None) -> list[str]:
    """The offline credential checks: ConfigError on a problem, warnings (e.g. expiry within
    30 days) as the return value. The sandbox needs no credential."""
    if settings.uses_sandbox or settings.client_certificate_path is None:
        return []
    now = now or datetime.now(UTC)
    path = settings.client_certificate_path
    info = certificate_info(path)
    if info.not_before is not None and info.not_before > now:
        raise _problem(path, f"the certificate is not valid before "
                             f"{info.not_before:%Y-%m-%d %H:%M}Z")
    if info.not_after <= now:
        raise _problem(path, f"the certificate expired on {info.not_after:%Y-%m-%d %H:%M}Z "
                             f"({info.thumbprint}): upload a new one to the app registration "
                             "and replace the file")
    left = info.expires_in(now)
    if left <= EXPIRY_WARNING:
        return [f"{SETTING}: the certificate expires on {info.not_after:%Y-%m-%d} "
                f"(in {left.days} days, thumbprint {info.thumbprint}): rotate it before then "
                "(README, certificate rotation)"]
    return []


def certificate_summary(settings: Settings) -> str | None:
    """One line on the configured certificate for `jobs` and `config check`, or None."""
    if settings.uses_sandbox or settings.client_certificate_path is None:
        return None
    try:
        return "certificate: " + certificate_info(settings.client_certificate_path).describe()
    except ConfigError as exc:
        return "certificate: " + "; ".join(exc.problems)
