"""A principal's own Anthropic credentials (issue #26): set, shown only by kind, forgotten.

Through HTTP with the real runtime and Waitress (every answer checked against the served
OpenAPI document); the sealing and the secret key in the store, on SQLite and PostgreSQL.
Each test looks for the secret wherever it could leak: every answer's body, every log
record, the database's bytes.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from aicli.contract import CredentialKind, PrincipalCreate
from aicli.errors import CredentialsUnavailable, PrincipalRevoked
from aicli.settings import Settings
from aicli.storage import open_store
from aicli.storage.secret_key import DEFAULT_FILE_NAME, SecretKey
from aicli.testing import store_sql
from tests.http_server import Client, error_of, serving

pytest_plugins = ("tests.http_fixtures", "tests.storage_fixtures")

ROOT_TOKEN = "root-token"
API_KEY = "sk-ant-api03-" + "K" * 80 + "-own"
AUTH_TOKEN = "sk-ant-oat01-" + "T" * 60 + "-own"


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class Recording(Client):
    """The checking client, keeping every body it was answered with."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        super().__init__(base_url, token)
        self.bodies: list[bytes] = []

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = super().request(method, path, **kwargs)
        self.bodies.append(response.content)
        return response


@pytest.fixture
def service(make_runtime, tmp_path) -> Iterator[tuple[Any, str]]:
    runtime = make_runtime(api_token=ROOT_TOKEN)
    with serving(runtime) as url:
        yield runtime, url


@pytest.fixture
def runtime(service):
    return service[0]


@pytest.fixture
def admin(service) -> Recording:
    return Recording(service[1], token=ROOT_TOKEN)


def make_user(admin: Client, url: str, name: str) -> tuple[dict[str, Any], Recording]:
    made = admin.post("/principals", json={"name": name}).json()
    return made, Recording(url, token=made["token"])


@pytest.fixture
def alice(admin, service) -> tuple[dict[str, Any], Recording]:
    return make_user(admin, service[1], "alice")


@pytest.fixture
def bob(admin, service) -> tuple[dict[str, Any], Recording]:
    return make_user(admin, service[1], "bob")


@pytest.fixture
def logged(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_nowhere(secret: str, clients: list[Recording], logged: pytest.LogCaptureFixture) -> None:
    for client in clients:
        assert client.bodies and not any(secret.encode() in body for body in client.bodies)
    for record in logged.records:
        assert secret not in record.getMessage() and secret not in repr(record.__dict__)


def test_a_user_sets_sees_and_deletes_its_own_key_and_never_gets_it_back(
    runtime, admin, alice, logged, tmp_path
):
    me, as_alice = alice
    assert as_alice.get("/me").json()["own_credentials"] is False
    error_of(as_alice.get("/me/credentials"), 404, "not_found")
    assert runtime.own_credentials(me["id"]) is None

    put = as_alice.put("/me/credentials", json={"anthropic_api_key": API_KEY})
    assert put.status_code == 200, put.text
    shown = put.json()
    assert set(shown) == {"kind", "set_at"} and shown["kind"] == "api_key"
    assert as_alice.get("/me/credentials").json() == shown
    assert admin.get(f"/principals/{me['id']}/credentials").json() == shown
    assert as_alice.get("/me").json()["own_credentials"] is True
    assert admin.get(f"/principals/{me['id']}").json()["own_credentials"] is True
    listed = {p["id"]: p for p in admin.walk("/principals")}
    assert listed[me["id"]]["own_credentials"] is True
    # What the proxy injects: the key as the Messages API takes it.
    assert runtime.own_credentials(me["id"]) == {"x-api-key": API_KEY}
    assert runtime.own_credentials(None) is None

    # Only sealed in the database: not in the rows, nor in any byte of its files.
    store = runtime.store
    rows = store_sql.rows(store, "SELECT * FROM principal_credentials")
    assert len(rows) == 1 and API_KEY not in repr(rows)
    key_file = tmp_path / DEFAULT_FILE_NAME  # made next to the database, for its owner only
    assert key_file.stat().st_mode & 0o777 == 0o600
    files = [p for p in tmp_path.glob("aicli.db*") if p.is_file()]
    assert files and not any(API_KEY.encode() in p.read_bytes() for p in files)

    # A token replaces the key; then both are gone.
    replaced = as_alice.put("/me/credentials", json={"anthropic_auth_token": AUTH_TOKEN}).json()
    assert replaced["kind"] == "auth_token" and replaced["set_at"] > shown["set_at"]
    assert runtime.own_credentials(me["id"]) == {"authorization": f"Bearer {AUTH_TOKEN}"}
    deleted = as_alice.delete("/me/credentials")
    assert deleted.status_code == 204 and deleted.content == b""
    error_of(as_alice.get("/me/credentials"), 404, "not_found")
    assert as_alice.delete("/me/credentials").status_code == 204  # none: as well
    assert as_alice.get("/me").json()["own_credentials"] is False
    assert runtime.own_credentials(me["id"]) is None
    for secret in (API_KEY, AUTH_TOKEN):
        assert_nowhere(secret, [admin, as_alice], logged)


def test_an_admin_sets_them_for_a_principal_and_revoking_forgets_them(
    runtime, admin, alice, logged
):
    me, as_alice = alice
    path = f"/principals/{me['id']}/credentials"
    assert admin.put(path, json={"anthropic_auth_token": AUTH_TOKEN}).json()["kind"] == (
        "auth_token"
    )
    assert as_alice.get("/me/credentials").json()["kind"] == "auth_token"
    # A user may use the path of its own id too.
    assert as_alice.get(path).json()["kind"] == "auth_token"

    assert admin.delete(f"/principals/{me['id']}").json()["revoked_at"] is not None
    assert runtime.own_credentials(me["id"]) is None
    store = runtime.store
    count = "SELECT COUNT(*) FROM principal_credentials"
    assert store_sql.value(store, count) == 0
    error_of(admin.get(path), 404, "not_found")
    assert admin.get(f"/principals/{me['id']}").json()["own_credentials"] is False
    message = error_of(
        admin.put(path, json={"anthropic_api_key": API_KEY}), 409, "principal_revoked"
    )
    assert "revoked" in message
    assert admin.delete(path).status_code == 204
    assert_nowhere(API_KEY, [admin], logged)
    assert_nowhere(AUTH_TOKEN, [admin, as_alice], logged)


def test_another_users_credentials_are_unknown_to_a_user(runtime, admin, alice, bob, logged):
    me, as_alice = alice
    other, as_bob = bob
    as_alice.put("/me/credentials", json={"anthropic_api_key": API_KEY})
    path = f"/principals/{me['id']}/credentials"
    for response in (
        as_bob.get(path),
        as_bob.put(path, json={"anthropic_api_key": "sk-bob"}),
        as_bob.delete(path),
        as_bob.get(f"/principals/{me['id']}"),
    ):
        assert error_of(response, 404, "not_found") == f"No principal with id '{me['id']}'."
    # Unknown ids answer alike, to admins too.
    error_of(as_bob.get("/principals/nobody/credentials"), 404, "not_found")
    error_of(admin.get("/principals/nobody/credentials"), 404, "not_found")
    error_of(admin.put("/principals/nobody/credentials", json={"anthropic_api_key": "x"}), 404,
             "not_found")  # fmt: skip
    error_of(admin.delete("/principals/nobody/credentials"), 404, "not_found")
    # Alice's are as they were; bob's own path is his.
    assert runtime.own_credentials(me["id"]) == {"x-api-key": API_KEY}
    own = as_bob.put(f"/principals/{other['id']}/credentials", json={"anthropic_api_key": "sk-b"})
    assert own.status_code == 200
    assert runtime.own_credentials(other["id"]) == {"x-api-key": "sk-b"}
    assert_nowhere(API_KEY, [as_bob, admin], logged)


def test_root_and_the_open_service_have_no_credentials_of_their_own(admin, make_runtime, tmp_path):
    for response in (
        admin.put("/me/credentials", json={"anthropic_api_key": API_KEY}),
        admin.get("/me/credentials"),
        admin.delete("/principals/root/credentials"),
    ):
        assert "'root'" in error_of(response, 403, "forbidden")
    open_service = make_runtime(database_url=f"sqlite:///{tmp_path / 'open.db'}")
    with serving(open_service) as url:  # no token, no principal: open
        anyone = Client(url)
        for response in (
            anyone.put("/me/credentials", json={"anthropic_api_key": API_KEY}),
            anyone.get("/me/credentials"),
            anyone.delete("/me/credentials"),
        ):
            assert "open" in error_of(response, 403, "forbidden")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "exactly one"),
        ({"anthropic_api_key": API_KEY, "anthropic_auth_token": AUTH_TOKEN}, "exactly one"),
        ({"anthropic_api_key": None}, "'anthropic_api_key' must be a string"),
        ({"anthropic_api_key": ""}, "must not be empty"),
        ({"anthropic_api_key": API_KEY[:20] + " " + API_KEY[20:]}, "without whitespace"),
        ({"anthropic_auth_token": AUTH_TOKEN + "\n"}, "without whitespace"),
        ({"anthropic_api_key": API_KEY + "\x00"}, "without whitespace"),
        ({"anthropic_api_key": API_KEY + "é"}, "visible ASCII"),
        ({"anthropic_api_key": "k" * 4097}, "the most allowed is 4096"),
        ({"anthropic_api_key": 12345}, "must be a string"),
        ({"anthropic_api_key": API_KEY, "api_key": API_KEY}, "Unknown"),
        ([API_KEY], "JSON object"),
    ],
)
def test_bad_bodies_are_400_and_never_echo_the_secret(alice, logged, body, says):
    _, as_alice = alice
    message = error_of(as_alice.put("/me/credentials", json=body), 400, "invalid_request")
    assert says in message
    for secret in (API_KEY, AUTH_TOKEN, API_KEY[:20], AUTH_TOKEN[:20]):
        assert secret not in message
    assert_nowhere(API_KEY[:20], [as_alice], logged)
    error_of(as_alice.get("/me/credentials"), 404, "not_found")


def test_a_body_that_is_not_json_is_400(alice):
    _, as_alice = alice
    response = as_alice.put(
        "/me/credentials", data=b"sk-not-json", headers={"Content-Type": "application/json"}
    )
    error_of(response, 400, "invalid_request")


# The secret key


def test_a_missing_key_file_is_a_clear_409_and_logs_no_traceback(make_runtime, tmp_path, logged):
    missing = tmp_path / "nowhere" / "key"
    runtime = make_runtime(api_token=ROOT_TOKEN, secret_key_file=str(missing))
    with serving(runtime) as url:
        admin = Client(url, token=ROOT_TOKEN)
        made = admin.post("/principals", json={"name": "carol"}).json()
        response = Client(url, token=made["token"]).put(
            "/me/credentials", json={"anthropic_api_key": API_KEY}
        )
        message = error_of(response, 409, "credentials_unavailable")
        assert str(missing) in message and "does not exist" in message
        assert not missing.exists()  # a configured file is never made: nodes must share it
    assert not [r for r in logged.records if r.exc_info or r.levelno >= logging.ERROR]
    assert_nowhere(API_KEY, [], logged)


def test_a_malformed_key_is_a_clear_409(make_runtime, tmp_path):
    runtime = make_runtime(api_token=ROOT_TOKEN, secret_key="not-a-key")
    with serving(runtime) as url:
        admin = Client(url, token=ROOT_TOKEN)
        made = admin.post("/principals", json={"name": "dan"}).json()
        path = f"/principals/{made['id']}/credentials"
        message = error_of(
            admin.put(path, json={"anthropic_api_key": API_KEY}), 409, "credentials_unavailable"
        )
        assert "AICLI_SECRET_KEY" in message and "32 random bytes" in message
        assert "not-a-key" not in message


def test_the_key_is_read_from_the_environment_and_kept_out_of_reprs():
    key = new_key()
    settings = Settings.resolve(environ={"AICLI_SECRET_KEY": key})
    assert settings.secret_key == key and key not in repr(settings)


def test_credentials_open_only_with_the_key_that_sealed_them(database_url, tmp_path):
    first, other = new_key(), new_key()
    key_file = tmp_path / "secret.key"
    key_file.write_text(first + "\n")
    store = open_store(database_url, secret_key=SecretKey(database_url, key_file=str(key_file)))
    try:
        ana = store.principals.create(PrincipalCreate(name="ana"))
        shown = store.credentials.put(ana.id, CredentialKind.API_KEY, API_KEY)
        assert shown.kind == CredentialKind.API_KEY
        assert store.credentials.own_credentials(ana.id) == {"x-api-key": API_KEY}
        raw = store_sql.value(store, "SELECT sealed FROM principal_credentials")
        assert API_KEY.encode() not in bytes(raw)
        # A sealed value copied onto another principal's row does not open for it.
        ben = store.principals.create(PrincipalCreate(name="ben"))
        store_sql.write(
            store,
            "INSERT INTO principal_credentials (principal_id, kind, sealed, set_at)"
            " SELECT ?, kind, sealed, set_at FROM principal_credentials WHERE principal_id = ?",
            (ben.id, ana.id),
        )
        with pytest.raises(CredentialsUnavailable, match="do not open"):
            store.credentials.own_credentials(ben.id)
        store.principals.revoke(ben.id)
        with pytest.raises(PrincipalRevoked):
            store.credentials.put(ben.id, CredentialKind.API_KEY, API_KEY)
    finally:
        store.close()

    elsewhere = open_store(database_url, secret_key=SecretKey(database_url, key=other))
    try:
        with pytest.raises(CredentialsUnavailable) as refused:
            elsewhere.credentials.own_credentials(ana.id)
        assert "not the key they were stored with" in refused.value.message
        assert API_KEY not in str(refused.value) and API_KEY not in repr(refused.value.details)
        assert elsewhere.credentials.get(ana.id).kind == CredentialKind.API_KEY  # still shown
    finally:
        elsewhere.close()


def test_a_lost_default_key_file_is_a_clear_error_at_use(tmp_path):
    url = f"sqlite:///{tmp_path / 'aicli.db'}"
    store = open_store(url)
    try:
        eve = store.principals.create(PrincipalCreate(name="eve"))
        store.credentials.put(eve.id, CredentialKind.AUTH_TOKEN, AUTH_TOKEN)
    finally:
        store.close()
    (tmp_path / DEFAULT_FILE_NAME).unlink()
    reopened = open_store(url)
    try:
        with pytest.raises(CredentialsUnavailable, match="does not exist"):
            reopened.credentials.own_credentials(eve.id)
        assert not (tmp_path / DEFAULT_FILE_NAME).exists()  # not silently replaced
    finally:
        reopened.close()


def test_a_key_file_that_cannot_be_made_or_read_is_a_clear_error(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'aicli.db'}"
    store = open_store(url)
    try:
        gus = store.principals.create(PrincipalCreate(name="gus"))

        def read_only(*args: Any, **kwargs: Any) -> int:
            raise OSError(30, "Read-only file system")

        with monkeypatch.context() as patched:
            patched.setattr("aicli.storage.secret_key.os.open", read_only)
            with pytest.raises(CredentialsUnavailable, match="cannot be made: Read-only"):
                store.credentials.put(gus.id, CredentialKind.API_KEY, API_KEY)
        assert store.credentials.get(gus.id) is None
        (tmp_path / DEFAULT_FILE_NAME).mkdir()
        with pytest.raises(CredentialsUnavailable, match="cannot be read"):
            store.credentials.put(gus.id, CredentialKind.API_KEY, API_KEY)
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_without_a_configured_key_refuses_to_store_credentials(
    make_runtime, postgres_database
):
    from aicli.testing.postgres import fresh_schema_url

    runtime = make_runtime(api_token=ROOT_TOKEN, database_url=fresh_schema_url(postgres_database))
    with serving(runtime) as url:
        admin = Client(url, token=ROOT_TOKEN)
        made = admin.post("/principals", json={"name": "fay"}).json()
        as_fay = Client(url, token=made["token"])
        message = error_of(
            as_fay.put("/me/credentials", json={"anthropic_api_key": API_KEY}),
            409,
            "credentials_unavailable",
        )
        assert "AICLI_SECRET_KEY_FILE" in message and "every node" in message
        # The service otherwise works.
        assert as_fay.get("/me").json()["own_credentials"] is False
        error_of(as_fay.get("/me/credentials"), 404, "not_found")
        assert as_fay.delete("/me/credentials").status_code == 204
