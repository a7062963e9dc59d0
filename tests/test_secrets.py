"""corebuild.secrets: env var, then `<VAR>_FILE`, then Google Secret Manager.

Secret Manager is exercised through the real google-cloud-secret-manager client talking gRPC to an
in-process server that implements `AccessSecretVersion` (the package ships no servicer stubs, so a
generic handler built from the proto-plus request/response types serves it).
"""

from __future__ import annotations

import sys
import traceback
from concurrent import futures

import pytest

from corebuild import secrets
from corebuild.errors import ConfigError

grpc = pytest.importorskip("grpc")
secretmanager_v1 = pytest.importorskip("google.cloud.secretmanager_v1")
from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import (  # noqa: E402
    SecretManagerServiceGrpcTransport,
)

VAR = "COREBUILD_TEST_PROVIDER_KEY"
PLANTED = "sk-PLANTED-9f3c1e2d7a"  # a value that must never surface in an error
SV = "projects/corebuild-test/secrets/streetview-key"
DENIED = "projects/corebuild-test/secrets/locked"


class FakeSecretManager:
    """Just enough of the service: versions per secret, `latest` = the highest, IAM as a deny list."""

    def __init__(self, versions: dict[str, dict[int, bytes]] | None = None):
        self.versions: dict[str, dict[int, bytes]] = versions if versions is not None else {
            SV: {1: b"old-key", 2: b"new-key\n"},
            "projects/corebuild-test/secrets/planted": {1: PLANTED.encode()},
            "projects/corebuild-test/secrets/binary": {1: b"\xff\xfe" + PLANTED.encode()},
            "projects/corebuild-test/secrets/blank": {1: b"  \n"},
        }
        self.denied = {DENIED}
        self.calls: list[str] = []

    def access(self, request, context):
        self.calls.append(request.name)
        secret, _, version = request.name.partition("/versions/")
        if secret in self.denied:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"Permission 'secretmanager.versions.access' denied for resource '{request.name}'")
        versions = self.versions.get(secret, {})
        number = max(versions, default=None) if version == "latest" else int(version) if version.isdigit() else None
        if number not in versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
        return secretmanager_v1.AccessSecretVersionResponse(
            name=f"{secret}/versions/{number}", payload=secretmanager_v1.SecretPayload(data=versions[number])
        )


def serve_secret_manager(fake: FakeSecretManager):
    """The fake behind a real gRPC server on loopback: (server, address)."""
    handler = grpc.method_handlers_generic_handler(
        "google.cloud.secretmanager.v1.SecretManagerService",
        {
            "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                fake.access,
                request_deserializer=secretmanager_v1.AccessSecretVersionRequest.deserialize,
                response_serializer=secretmanager_v1.AccessSecretVersionResponse.serialize,
            )
        },
    )
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    srv.add_generic_rpc_handlers((handler,))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    return srv, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server():
    fake = FakeSecretManager()
    srv, addr = serve_secret_manager(fake)
    yield fake, addr
    srv.stop(None)


@pytest.fixture
def sm(server, monkeypatch):
    """The fake service, wired in through `secrets._client_factory`; clean env and cache."""
    fake, addr = server
    fake.calls.clear()
    for suffix in ("", "_FILE", "_SECRET"):
        monkeypatch.delenv(VAR + suffix, raising=False)
    channels = []

    def factory():
        channels.append(grpc.insecure_channel(addr))
        return secretmanager_v1.SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channels[-1]))

    monkeypatch.setattr(secrets, "_client_factory", factory)
    secrets.clear_cache()
    yield fake
    secrets.clear_cache()
    for ch in channels:
        ch.close()


def _error(fn, *args, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kw)
    return info.value


def _full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


# -- order of sources ------------------------------------------------------------------------------


def test_env_wins_over_file_and_secret_manager(sm, monkeypatch, tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    monkeypatch.setenv(VAR, " from-env ")
    monkeypatch.setenv(VAR + "_FILE", str(tmp_path / "key"))
    monkeypatch.setenv(VAR + "_SECRET", SV)
    assert secrets.resolve_secret(VAR, "Street View", secret_name=SV) == "from-env"
    assert sm.calls == []


def test_file_wins_over_secret_manager(sm, monkeypatch, tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    monkeypatch.setenv(VAR + "_FILE", str(tmp_path / "key"))
    assert secrets.resolve_secret(VAR, "Street View", secret_name=SV) == "from-file"
    assert sm.calls == []


def test_secret_manager_from_config_with_version(sm):
    assert secrets.resolve_secret(VAR, "Street View", secret_name=f"{SV}/versions/1") == "old-key"
    assert sm.calls == [f"{SV}/versions/1"]


def test_latest_version_is_the_default(sm):
    assert secrets.resolve_secret(VAR, "Street View", secret_name=SV) == "new-key"  # stripped
    assert sm.calls == [f"{SV}/versions/latest"]


def test_secret_env_var_when_config_has_none(sm, monkeypatch):
    monkeypatch.setenv(VAR + "_SECRET", f"{SV}/versions/1")
    assert secrets.resolve_secret(VAR, "Street View") == "old-key"


def test_config_name_wins_over_secret_env_var(sm, monkeypatch):
    monkeypatch.setenv(VAR + "_SECRET", f"{SV}/versions/1")
    assert secrets.resolve_secret(VAR, "Street View", secret_name=f"{SV}/versions/2") == "new-key"
    assert sm.calls == [f"{SV}/versions/2"]


def test_current_callers_unchanged(sm, monkeypatch):
    """Two positional arguments, as every caller passes today."""
    monkeypatch.setenv(VAR, "k")
    assert secrets.resolve_secret(VAR, "Mapillary") == "k"


# -- the per-process cache --------------------------------------------------------------------------


def test_one_rpc_per_secret_per_process(sm, monkeypatch):
    monkeypatch.setenv(VAR + "_SECRET", SV)
    assert secrets.resolve_secret(VAR, "Street View") == "new-key"
    assert secrets.resolve_secret("OTHER_UNSET_VAR_FOR_TEST", "map tiles", secret_name=SV) == "new-key"
    assert secrets.resolve_secret(VAR, "Street View", secret_name=f"{SV}/versions/latest") == "new-key"
    assert sm.calls == [f"{SV}/versions/latest"]
    assert secrets.resolve_secret(VAR, "Street View", secret_name=f"{SV}/versions/1") == "old-key"
    assert len(sm.calls) == 2
    secrets.clear_cache()
    secrets.resolve_secret(VAR, "Street View", secret_name=SV)
    assert len(sm.calls) == 3


def test_one_client_per_process(sm, monkeypatch):
    made = []
    factory = secrets._client_factory
    monkeypatch.setattr(secrets, "_client_factory", lambda: made.append(1) or factory())
    secrets.resolve_secret(VAR, "a", secret_name=f"{SV}/versions/1")
    secrets.resolve_secret(VAR, "b", secret_name=f"{SV}/versions/2")
    assert made == [1]


# -- errors -----------------------------------------------------------------------------------------


def test_not_found_names_the_secret_and_the_role(sm):
    name = "projects/corebuild-test/secrets/missing"
    msg = str(_error(secrets.resolve_secret, VAR, "Mapillary", secret_name=name))
    assert f"{name}/versions/latest" in msg and "not found" in msg
    assert secrets.ACCESSOR_ROLE in msg and msg.startswith("Mapillary: ")


def test_permission_denied_names_the_secret_and_the_role(sm):
    msg = str(_error(secrets.resolve_secret, VAR, "Mapillary", secret_name=f"{DENIED}/versions/3"))
    assert f"{DENIED}/versions/3" in msg
    assert "roles/secretmanager.secretAccessor" in msg and "service account" in msg


def test_errors_are_not_cached(sm):
    _error(secrets.resolve_secret, VAR, "x", secret_name=DENIED)
    _error(secrets.resolve_secret, VAR, "x", secret_name=DENIED)
    assert len(sm.calls) == 2


@pytest.mark.parametrize(
    "bad",
    [
        "projects/p/secrets",
        "secrets/streetview-key",
        "projects/corebuild-test/secrets/streetview-key/versions/",
        "projects/corebuild-test/secrets/streetview-key/versions/1/extra",
        "projects/corebuild-test/secrets/bad name",
        "projects/corebuild-test/locations/europe-west1/secrets/streetview-key",
        "https://secretmanager.googleapis.com/v1/projects/p/secrets/s",
    ],
)
def test_bad_resource_name(sm, bad):
    msg = str(_error(secrets.resolve_secret, VAR, "Street View", secret_name=bad))
    assert "projects/<project>/secrets/<name>[/versions/<version>]" in msg and "Street View" in msg
    assert sm.calls == []
    if bad.startswith("projects/"):
        assert bad in msg
    if "/locations/" in bad:
        assert "regional secrets are not supported" in msg


def test_bad_name_from_the_secret_env_var_says_so(sm, monkeypatch):
    monkeypatch.setenv(VAR + "_SECRET", "streetview-key")
    msg = str(_error(secrets.resolve_secret, VAR, "Street View"))
    assert f"from {VAR}_SECRET" in msg


def test_undecodable_and_empty_payloads(sm):
    assert "not UTF-8" in str(_error(secrets.resolve_secret, VAR, "x", secret_name="projects/corebuild-test/secrets/binary"))
    assert "is empty" in str(_error(secrets.resolve_secret, VAR, "x", secret_name="projects/corebuild-test/secrets/blank"))


def test_missing_secret_mentions_all_three_sources(sm):
    msg = str(_error(secrets.resolve_secret, VAR, "Google Street View"))
    assert msg.startswith("Google Street View needs a secret")
    for source in (f"set {VAR},", f"{VAR}_FILE", f"{VAR}_SECRET", "Secret Manager", "projects/<project>/secrets/<name>"):
        assert source in msg


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(secrets, "_client_factory", None)
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", None)  # import -> ImportError
    secrets.clear_cache()
    msg = str(_error(secrets.resolve_secret, VAR, "Street View", secret_name=SV))
    assert "pip install 'corebuild[gcp]'" in msg and "google-cloud-secret-manager" in msg
    assert secrets._client is None


def test_no_credentials_is_a_config_error(monkeypatch):
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_adc(*_a, **_k):
        raise DefaultCredentialsError("no ADC here")

    monkeypatch.setattr(google.auth, "default", no_adc)
    monkeypatch.setattr(secrets, "_client_factory", None)
    secrets.clear_cache()
    try:
        msg = str(_error(secrets.resolve_secret, VAR, "Street View", secret_name=SV))
    finally:
        secrets.clear_cache()
    assert "credentials" in msg and secrets.ACCESSOR_ROLE in msg


def test_value_never_in_an_error(sm, monkeypatch, tmp_path):
    """Every failure path, with the planted value reachable: not in the message, nor the traceback."""
    planted = "projects/corebuild-test/secrets/planted"
    assert secrets.resolve_secret(VAR, "x", secret_name=planted) == PLANTED  # reachable...
    errors = [
        _error(secrets.resolve_secret, VAR, "x", secret_name=f"{planted}/versions/9"),  # not found
        _error(secrets.resolve_secret, VAR, "x", secret_name=DENIED),
        _error(secrets.resolve_secret, VAR, "x", secret_name="projects/corebuild-test/secrets/binary"),
        _error(secrets.resolve_secret, VAR, "x", secret_name=PLANTED),  # the value pasted as the name
        _error(secrets.resolve_secret, VAR, "x", secret_name=f"{PLANTED}/versions/1"),
        _error(secrets.resolve_secret, VAR, "x"),
    ]
    monkeypatch.setenv(VAR + "_FILE", str(tmp_path / "absent"))
    errors.append(_error(secrets.resolve_secret, VAR, "x", secret_name=planted))
    for exc in errors:
        text = _full_text(exc) + repr(exc)
        assert PLANTED not in text, text
        assert exc.__cause__ is None


def test_every_resolved_value_is_redacted_wherever_it_turns_up(sm, monkeypatch, tmp_path):
    """Env var, <VAR>_FILE and Secret Manager values are registered with corebuild.redact: a server
    that echoes the bare key in an error, or a library that logs it, shows REDACTED instead."""
    from corebuild.redact import redact_text

    (tmp_path / "key").write_text("from-FILE-value-2\n")
    monkeypatch.setenv(VAR, "from-ENV-value-1")
    monkeypatch.setenv("OTHER_TEST_VAR_FILE", str(tmp_path / "key"))
    values = [
        secrets.resolve_secret(VAR, "x"),
        secrets.resolve_secret("OTHER_TEST_VAR", "x"),
        secrets.resolve_secret("THIRD_UNSET_TEST_VAR", "x", secret_name="projects/corebuild-test/secrets/planted"),
    ]
    assert values == ["from-ENV-value-1", "from-FILE-value-2", PLANTED]
    for v in values:
        assert redact_text(f"the key {v} is invalid") == "the key REDACTED is invalid"
