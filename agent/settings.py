"""Settings: CLI flags > environment `DAP_AGENT_*` > systemd credentials > the TOML file.

Strict: unknown keys are errors, and every problem is reported at once as
`source: key: problem`. Never log a `Settings` object: it holds the client secret.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from agent.errors import ConfigError
from agent.notify.settings import NotifySettings
from agent.retention import RetentionPolicy

DEFAULT_CONFIG = Path("/etc/dap-agent/agent.toml")
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
# a verified domain: DNS labels and a TLD (letters, or an IDN's xn--); not "common" and the
# like, which app-only sign-in cannot use
DOMAIN = re.compile(r"(?=.{4,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                    r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})", re.IGNORECASE)
ENV_PREFIX = "DAP_AGENT_"
# file names in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) and the setting each fills
CREDENTIAL_FILES = {
    "client_secret": "client_secret",
    "client_certificate": "client_certificate_path",
    "client_certificate.pem": "client_certificate_path",
    "notify_webhook_url": "notify.webhook_url",
}


def default_state_dir() -> Path:
    # systemd's StateDirectory= may list several, colon-separated: the first is ours
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path("/var/lib/dap-agent")


class CoreSettings(BaseSettings):
    """The settings that are not a job's policy table; `Settings` adds one per job."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      extra="forbid", case_sensitive=False)

    tenant_id: str = Field(min_length=1, description="Entra ID tenant id (GUID)")
    client_id: str = Field(min_length=1, description="app registration's client id")
    client_certificate_path: Path | None = None
    client_secret: SecretStr | None = None
    graph_url: str = "https://graph.microsoft.com"
    authority_host: str = "https://login.microsoftonline.com"
    state_dir: Path = Field(default_factory=default_state_dir)
    timezone: str = "Europe/Amsterdam"
    notify: NotifySettings = Field(default_factory=NotifySettings)
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy)


    @field_validator("state_dir")
    @classmethod
    def _trusted_state_dir(cls, value: Path) -> Path:
        from agent.files import trust_state_dir

        trust_state_dir(value)  # below it no symlink is followed (agent/files.py)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                             "Europe/Amsterdam)") from None
        return value

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        value = value.strip()
        if not (GUID.fullmatch(value) or DOMAIN.fullmatch(value)):
            raise ValueError("must be the tenant's id (a GUID such as "
                             "5b7e2a1c-3c1f-4d1e-9a51-0d3f6c2b8e47) or one of its verified "
                             "domains (contoso.onmicrosoft.com)")
        return value

    @field_validator("client_id")
    @classmethod
    def _client(cls, value: str) -> str:
        value = value.strip()
        if not GUID.fullmatch(value):
            raise ValueError("must be the app registration's Application (client) ID, a GUID "
                             "such as 9d3b7f2e-61c4-4f0a-b8d5-2e6a1c0f4b93")
        return value

    @field_validator("graph_url", "authority_host")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.rstrip("/")
        if value.startswith("sandbox:"):
            return value
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (TLS is always verified)")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> CoreSettings:
        if self.uses_sandbox:
            return self
        if self.client_certificate_path is None and self.client_secret is None:
            raise ValueError("no credential: set client_certificate_path (preferred) or "
                             "client_secret")
        if self.client_certificate_path is not None and not self.client_certificate_path.is_file():
            raise ValueError(f"client_certificate_path: {self.client_certificate_path} "
                             "does not exist or is not a file")
        return self

    @property
    def uses_sandbox(self) -> bool:
        return self.graph_url.startswith("sandbox:")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def policy(self, section: str) -> Any:
        return getattr(self, section)

    if TYPE_CHECKING:  # a job's policy table (added per job below): typed by the job itself
        def __getattr__(self, name: str) -> Any: ...

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Settings(tenant_id={self.tenant_id!r}, graph_url={self.graph_url!r})"

    __str__ = __repr__

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _DictSource(settings_cls, _LOADING["credentials"]),
                _DictSource(settings_cls, _LOADING["toml"]))


def _with_job_sections() -> type[CoreSettings]:
    """One policy table per registered job (`[active_users]`, ...): adding a job to
    `jobs.REGISTRY` is all it takes for its section to be read, validated and documented."""
    from jobs import REGISTRY

    sections: dict[str, Any] = {
        spec.policy_section: (spec.policy_model, Field(default_factory=spec.policy_model))
        for spec in REGISTRY.values()}
    return create_model("Settings", __base__=CoreSettings, __module__=__name__, **sections)


if TYPE_CHECKING:
    Settings = CoreSettings
else:
    Settings = _with_job_sections()


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


# What the sources hold while `load_settings` builds a Settings (single-threaded CLI).
_LOADING: dict[str, dict[str, Any]] = {"credentials": {}, "toml": {}}


def config_path(cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("DAP_AGENT_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (pass --config FILE or set "
                           "DAP_AGENT_CONFIG)"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: cannot read the file (permission denied)"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a TOML file"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None


def read_credentials() -> dict[str, Any]:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    found: dict[str, Any] = {}
    for name, setting in CREDENTIAL_FILES.items():
        path = Path(directory) / name
        if not path.is_file():
            continue
        if setting == "client_secret":
            found[setting] = path.read_text(encoding="utf-8").strip()
        elif "." in setting:  # a key of a section: merged into that table
            section, key = setting.split(".", 1)
            found.setdefault(section, {})[key] = path.read_text(encoding="utf-8").strip()
        else:
            found[setting] = str(path)
    return found


def _env_keys(settings_cls: type[BaseSettings]) -> dict[str, Any]:
    return EnvSettingsSource(settings_cls, env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                             case_sensitive=False)()


def load_settings(path: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from every source, or raise ConfigError listing every problem."""
    toml = read_toml(path)
    credentials = read_credentials()
    _LOADING["toml"], _LOADING["credentials"] = toml, credentials
    unknown = _unknown_environment()
    try:
        settings = Settings(**(overrides or {}))
    except SettingsError:
        # pydantic-settings could not even parse a value (a list or table in the
        # environment that is not JSON): find and name the variable ourselves
        raise ConfigError(_unparsable_environment() or [
            "environment: a DAP_AGENT_* variable could not be parsed"]) from None
    except ValidationError as exc:
        env = _env_keys(Settings)
        raise ConfigError(unknown + [_describe(err, path, toml, env, credentials)
                                     for err in exc.errors()]) from None
    finally:
        _LOADING["toml"], _LOADING["credentials"] = {}, {}
    if unknown:
        raise ConfigError(unknown)
    return settings


# DAP_AGENT_* variables that are not settings: the config file's path and test hooks
NOT_SETTINGS = ("CONFIG", "NOW", "SANDBOX_ROLES", "SANDBOX_FAULTS")


def _unknown_environment() -> list[str]:
    """A misspelt top-level variable (DAP_AGENT_TENANTID) is an error, as a nested one is
    (pydantic-settings would silently ignore it)."""
    known = {(f.alias or n).lower() for n, f in Settings.model_fields.items()}
    problems = []
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper[len(ENV_PREFIX):] in NOT_SETTINGS:
            continue
        top = upper[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if top not in known:
            close = difflib.get_close_matches(top, known, n=1)
            hint = (f"did you mean {ENV_PREFIX}{close[0].upper()}?" if close else
                    "see config/agent.example.toml for the settings")
            problems.append(f"environment {name}: unknown setting ({hint})")
    return problems


def _describe(err: Any, path: Path, toml: dict[str, Any], env: dict[str, Any],
              credentials: dict[str, Any]) -> str:
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc) or "(top level)"
    top = loc[0] if loc else ""
    if _has_path(env, loc):
        source = "environment " + ENV_PREFIX + "__".join(loc[:2]).upper()
    elif _has_path(credentials, loc):
        source = "$CREDENTIALS_DIRECTORY"
    else:
        source = str(path)
    kind = err["type"]
    if kind == "extra_forbidden":
        problem = "unknown key"
    elif kind == "missing":
        problem = "required setting is missing"
        if len(loc) == 1:
            problem += f" (set it in the file or in {ENV_PREFIX}{top.upper()})"
    else:
        problem = str(err["msg"]).removeprefix("Value error, ")
        if ("input" in err and not _secret_key(loc) and _printable(err["input"])
                and repr(err["input"]) not in problem):
            problem += f" (got {err['input']!r})"
    return f"{source}: {key}: {problem}"


def _unparsable_environment() -> list[str]:
    """DAP_AGENT_* variables for lists or tables whose value is not JSON."""
    problems = []
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        if _is_structured(Settings, path):
            try:
                json.loads(value)
            except ValueError:
                problems.append(f"environment {name}: {'.'.join(path)}: not valid JSON (lists "
                                "and tables in the environment are JSON, e.g. "
                                '["a@contoso.nl"])')
    return problems


def _is_structured(model: type[BaseModel], path: list[str]) -> bool:
    """Whether the setting at `path` is a list, tuple, dict or model (given as JSON in env)."""
    fields = {(f.alias or n).lower(): f for n, f in model.model_fields.items()}
    field = fields.get(path[0])
    if field is None:
        return False
    annotation = field.annotation
    if len(path) > 1:
        return (isinstance(annotation, type) and issubclass(annotation, BaseModel)
                and _is_structured(annotation, path[1:]))
    origin = getattr(annotation, "__origin__", annotation)
    return isinstance(origin, type) and (issubclass(origin, (list, tuple, dict, BaseModel)))


def _has_path(data: Any, loc: list[str]) -> bool:
    """Whether this source set the key (or, for a list item, the list holding it)."""
    if not loc:
        return False
    for part in loc:
        if isinstance(data, list):
            return part.isdigit()
        if not (isinstance(data, dict) and part in data):
            return False
        data = data[part]
    return True


def _secret_key(loc: list[str]) -> bool:
    return any("secret" in part or "password" in part or "webhook" in part for part in loc)


def _printable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and len(repr(value)) < 120
