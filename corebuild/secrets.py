"""Secrets are resolved on the workers, never carried in config.

`resolve_secret(env_name, what, secret_name="")` tries, in order:

1. the environment variable `env_name` itself;
2. a file named by `<env_name>_FILE`;
3. a Google Secret Manager secret version: `secret_name` (from config) or, failing that, the
   environment variable `<env_name>_SECRET`. Either holds a *resource name*,
   `projects/<p>/secrets/<name>/versions/<v>` or `projects/<p>/secrets/<name>` (= `versions/latest`).

Config only ever carries env var names and Secret Manager resource names, never values: a resource
name is not secret (it names a secret; who may read it is IAM's business), so it can travel in the
pipeline options to Dataflow workers, which have neither the launcher's environment nor its files.
The workers read the value with their own service account, which needs
`roles/secretmanager.secretAccessor` on the secret.

Per-process cache: a Secret Manager value is fetched once per worker process (one client, one
`AccessSecretVersion` per resource name) and kept in the module-level `_cache` for the life of the
process; `versions/latest` is therefore pinned to what it was at first use (a rotated secret is
picked up by new workers). `clear_cache()` drops the values and the client.

Error messages name the env var, the file path or the resource name, never a value.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from corebuild.errors import ConfigError
from corebuild.redact import register_secret

GCP_SECRETS_HINT = "Google Secret Manager secrets need google-cloud-secret-manager: pip install 'corebuild[gcp]'"
ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"
RESOURCE_FORMAT = "projects/<project>/secrets/<name>[/versions/<version>]"

# Project id (or number, or a legacy domain-scoped `example.com:id`), secret id (letters, digits,
# `-`, `_`; at most 255), version (a number, `latest` or an alias).
_RESOURCE = re.compile(
    r"^projects/(?P<project>[a-z0-9][a-z0-9.:-]*)/secrets/(?P<secret>[A-Za-z0-9_-]{1,255})"
    r"(?:/versions/(?P<version>[A-Za-z0-9_-]{1,63}))?$"
)

# Test hook: a zero-argument callable returning a SecretManagerServiceClient-like object (anything
# with `access_secret_version(name=...)`). None = the real client with Application Default Credentials.
_client_factory: Optional[Callable[[], Any]] = None

_lock = threading.Lock()
_client: Any = None
_cache: dict[str, str] = {}  # full resource name (with /versions/...) -> value; the per-process cache


def resolve_secret(env_name: str, what: str, secret_name: str = "") -> str:
    """The secret for `what` (a phrase for messages), read from the first source that is set.
    The value is registered with corebuild.redact, so this process redacts it wherever it turns up."""
    value = _resolve(env_name, what, secret_name)
    register_secret(value)
    return value


def _resolve(env_name: str, what: str, secret_name: str) -> str:
    value = os.environ.get(env_name)
    if value:
        return value.strip()
    file_var = f"{env_name}_FILE"
    path = os.environ.get(file_var)
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {file_var}={path}: {exc.strerror}") from None
    secret_var = f"{env_name}_SECRET"
    configured = (secret_name or "").strip()
    resource = configured or os.environ.get(secret_var, "").strip()
    if resource:
        return access_secret_version(resource, what, source="the config" if configured else secret_var)
    raise ConfigError(
        f"{what} needs a secret: set {env_name}, or {file_var} to a file holding it, or a Google "
        f"Secret Manager version ({RESOURCE_FORMAT}) in the config's secret field or {secret_var} "
        "(on Dataflow only Secret Manager reaches the workers). "
        "It is read on the workers and never written to logs, options or shards."
    )


def parse_resource_name(name: str, what: str = "secret", source: str = "the config") -> str:
    """The full version resource name (`versions/latest` when none is given); ConfigError if malformed."""
    name = name.strip()
    if _RESOURCE.match(name):
        return name if "/versions/" in name else f"{name}/versions/latest"
    if name.startswith("projects/"):
        shown = repr(name)
        if "/locations/" in name:
            shown += " (regional secrets are not supported: use a global secret)"
    else:  # may be the value itself pasted where its name belongs: don't echo it
        shown = f"a {len(name)}-character string that does not start with 'projects/' (not shown: is it the secret itself?)"
    raise ConfigError(
        f"{what}: the Secret Manager name from {source} must be {RESOURCE_FORMAT}, got {shown}. "
        "Config carries the secret's resource name, never its value."
    )


def access_secret_version(name: str, what: str = "secret", source: str = "the config") -> str:
    """The UTF-8 value of a Secret Manager version, fetched once per process (see `_cache`)."""
    full = parse_resource_name(name, what, source)
    with _lock:  # held across the RPC: concurrent threads of one worker make one request, not many
        if full in _cache:
            return _cache[full]
        client = _get_client()
        try:
            response = client.access_secret_version(name=full)
        except Exception as exc:
            mapped = _config_error(exc, full, what)
            if mapped is None:
                raise  # transient (UNAVAILABLE, DEADLINE_EXCEEDED...): the runner retries the bundle
            raise mapped from None
        try:
            value = bytes(response.payload.data).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"{what}: Secret Manager secret {full} is not UTF-8 text") from None
        if not value:
            raise ConfigError(f"{what}: Secret Manager secret {full} is empty")
        _cache[full] = value
        return value


def clear_cache() -> None:
    """Forget cached values and the client (tests; a process that must see a rotated `latest`)."""
    global _client
    with _lock:
        _cache.clear()
        _client = None


def _get_client() -> Any:
    global _client
    if _client is None:
        # The generated client's DEBUG log puts each response's payload (the secret) in the
        # record's `extra`, which a structured handler would write out: never below INFO here.
        logging.getLogger("google.cloud.secretmanager_v1").setLevel(logging.INFO)
        _client = (_client_factory or _default_client)()
    return _client


def _default_client() -> Any:
    try:
        secretmanager = importlib.import_module("google.cloud.secretmanager")
    except ImportError:
        raise ConfigError(GCP_SECRETS_HINT) from None
    from google.auth import exceptions as auth_exc

    try:
        return secretmanager.SecretManagerServiceClient()
    except auth_exc.DefaultCredentialsError:
        raise ConfigError(
            "Google Secret Manager: no Google credentials found (Application Default Credentials). "
            "Run `gcloud auth application-default login` locally; on Dataflow the workers use their "
            f"service account, which needs {ACCESSOR_ROLE}."
        ) from None


def _config_error(exc: Exception, full: str, what: str) -> Optional[ConfigError]:
    """The user-fixable Google API errors as ConfigError (naming the secret, never a value); else None."""
    try:
        from google.api_core import exceptions as gexc
    except ImportError:
        return None
    detail = getattr(exc, "message", "") or ""
    detail = f" ({detail})" if detail else ""
    if isinstance(exc, gexc.PermissionDenied):
        return ConfigError(
            f"{what}: permission denied reading Secret Manager secret {full}{detail}. Grant "
            f"{ACCESSOR_ROLE} on the secret to the service account the workers run as (on Dataflow "
            "the worker service account, --service_account_email; by default the Compute Engine "
            "default service account), and check the Secret Manager API is enabled in the project."
        )
    if isinstance(exc, gexc.NotFound):
        return ConfigError(
            f"{what}: Secret Manager secret {full} was not found{detail}: check the project, the "
            "secret name and the version (`latest` needs at least one enabled version). If it exists, "
            f"the workers' service account also needs {ACCESSOR_ROLE} on it."
        )
    if isinstance(exc, gexc.FailedPrecondition):
        return ConfigError(f"{what}: Secret Manager secret {full} cannot be read{detail}: the version is disabled or destroyed")
    if isinstance(exc, gexc.Unauthenticated):
        return ConfigError(f"{what}: no valid Google credentials to read Secret Manager secret {full}{detail}")
    if isinstance(exc, gexc.InvalidArgument):
        return ConfigError(f"{what}: Secret Manager rejected the name {full}{detail}")
    return None
