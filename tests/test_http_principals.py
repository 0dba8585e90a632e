"""Principals through HTTP (1.1): admins create, list and revoke them; users see only themselves.

The real runtime and Waitress; every response is checked against the served OpenAPI
document (see ``http_server``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aicli.contract import PrincipalCreate
from tests.http_server import Client, create_principal, error_of, serving

pytest_plugins = ("tests.http_fixtures",)

FIELDS = {
    "id",
    "name",
    "role",
    "workspace_root",
    "limits",
    "created_at",
    "revoked_at",
    "total_cost_usd",
    "token",
    "stored_bytes",
    "own_credentials",
}


@pytest.fixture
def workspace_root(tmp_path) -> Path:
    """A workspace root with a team directory a principal may be confined to."""
    root = tmp_path / "workspace"
    (root / "team").mkdir(parents=True)
    return root


@pytest.fixture
def user(admin) -> dict[str, Any]:
    return create_principal(admin, "alice")


@pytest.fixture
def as_user(url, user) -> Client:
    return Client(url, token=user["token"])


def test_an_admin_creates_a_user_and_an_admin_whose_tokens_are_shown_once(admin, url, tmp_path):
    team = str((tmp_path / "workspace" / "team").resolve())
    limits = {
        "max_sessions": 2,
        "max_pending_per_session": 3,
        "budget_usd": 1.5,
        "max_stored_bytes": 1000000,
    }
    user = create_principal(admin, "alice", workspace_root=team, limits=limits)
    assert set(user) == FIELDS
    assert user["name"] == "alice" and user["role"] == "user"
    # 1.2: each shows its effective policy; a user's reaches no network, no extra path.
    user_policy = {
        "allowed_tools": None,
        "permission_modes": None,
        "network_domains": [],
        "read_paths": [],
    }
    assert user["workspace_root"] == team and user["limits"] == {**limits, "policy": user_policy}
    assert user["revoked_at"] is None and user["total_cost_usd"] == 0
    assert user["token"].startswith("aicli_") and len(user["token"]) >= len("aicli_") + 43

    other = create_principal(admin, "ops-bot", role="admin")
    assert other["role"] == "admin"
    # All null: no limits of its own, and a policy that allows anything.
    assert other["limits"] == {**dict.fromkeys(limits), "policy": dict.fromkeys(user_policy)}
    assert other["workspace_root"] is None
    assert other["token"].startswith("aicli_") and other["token"] != user["token"]

    # Shown only when created: every later answer has it null.
    again = admin.get(f"/principals/{user['id']}").json()
    assert again == {**user, "token": None}
    assert all(p["token"] is None for p in admin.walk("/principals"))
    assert Client(url, token=user["token"]).get("/me").json() == {**user, "token": None}

    # The new admin's own token works, as an admin's.
    as_other = Client(url, token=other["token"])
    assert as_other.get("/me").json()["id"] == other["id"]
    third = create_principal(as_other, "carol")
    assert as_other.get(f"/principals/{third['id']}").json()["name"] == "carol"


def test_the_configured_token_is_the_builtin_admin_root(admin):
    me = admin.get("/me").json()
    assert me["id"] == "root" and me["name"] == "root" and me["role"] == "admin"
    assert me["token"] is None and me["revoked_at"] is None
    assert admin.get("/principals/root").json() == me


def test_principals_are_listed_page_by_page(admin):
    created = [create_principal(admin, f"user-{n}") for n in range(5)]
    ids = [p["id"] for p in created]

    first = admin.get("/principals", params={"limit": 2}).json()
    assert [p["id"] for p in first["data"]] == ids[::-1][:2]  # newest first
    assert first["has_more"] is True and first["next_cursor"]
    second = admin.get("/principals", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [p["id"] for p in second["data"]] == ids[::-1][2:4]

    assert [p["id"] for p in admin.walk("/principals", limit=2)] == ids[::-1]
    assert [p["id"] for p in admin.walk("/principals", limit=3, order="asc")] == ids
    everyone = admin.get("/principals").json()
    assert everyone["has_more"] is False and everyone["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"status": "idle"}, None),  # no such filter here
    ],
)
def test_bad_list_parameters_are_400(admin, params, field):
    response = admin.get("/principals", params=params)
    message = error_of(response, 400, "invalid_request")
    if field is None:
        assert "'status'" in message
    else:
        assert response.json()["error"]["details"]["field"] == field


def test_a_user_may_not_use_the_admin_routes(as_user, user, admin):
    other = create_principal(admin, "bob")
    refused = [
        as_user.post("/principals", json={"name": "mallory", "role": "admin"}),
        # Refused as a user before the body is read: what it holds does not matter.
        as_user.post("/principals", json={"name": " ", "colour": "red"}),
        as_user.get("/principals"),
        as_user.get("/principals", params={"limit": 1}),
        as_user.delete(f"/principals/{other['id']}"),
        as_user.delete(f"/principals/{user['id']}"),
        as_user.delete("/principals/no-such-principal"),
    ]
    for response in refused:
        assert "admin" in error_of(response, 403, "forbidden")
    # Nothing was created or revoked.
    names = [p["name"] for p in admin.walk("/principals")]
    assert sorted(names) == ["alice", "bob"]
    assert admin.get(f"/principals/{other['id']}").json()["revoked_at"] is None
    assert as_user.get("/me").status_code == 200


def test_a_user_sees_itself_and_no_one_else(as_user, user, admin):
    me = as_user.get("/me").json()
    assert me == {**user, "token": None}
    assert as_user.get(f"/principals/{user['id']}").json() == me

    other = create_principal(admin, "bob")
    for principal_id in (other["id"], "root", "no-such-principal"):
        # Another's id is answered as an unknown one: nothing tells them apart.
        response = as_user.get(f"/principals/{principal_id}")
        assert error_of(response, 404, "not_found") == f"No principal with id '{principal_id}'."


def test_a_revoked_token_stops_working_at_once(url, admin, user, as_user):
    assert as_user.get("/me").status_code == 200

    response = admin.delete(f"/principals/{user['id']}")
    assert response.status_code == 200
    revoked = response.json()
    assert revoked["id"] == user["id"] and revoked["revoked_at"] is not None
    assert revoked["revoked_at"] >= revoked["created_at"] and revoked["token"] is None

    for response in (as_user.get("/me"), as_user.get(f"/principals/{user['id']}")):
        error_of(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"

    # Still there for admins, with the time of its revocation; revoking again changes nothing.
    assert admin.get(f"/principals/{user['id']}").json() == revoked
    again = admin.delete(f"/principals/{user['id']}")
    assert again.status_code == 200 and again.json() == revoked
    assert [p["revoked_at"] for p in admin.walk("/principals")] == [revoked["revoked_at"]]
    # Other tokens are untouched.
    assert admin.get("/me").json()["id"] == "root"


@pytest.mark.parametrize("method", ["get", "delete"])
def test_an_unknown_principal_is_404(admin, method):
    response = admin.request(method.upper(), "/principals/no-such-principal")
    message = error_of(response, 404, "not_found")
    assert message == "No principal with id 'no-such-principal'."
    assert response.json()["error"]["details"] == {"principal_id": "no-such-principal"}
    # An id no database could hold is unknown too, without asking the store.
    error_of(admin.request(method.upper(), "/principals/a%00b"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": ""}, "name", "empty"),
        ({"name": "   "}, "name", "whitespace"),
        ({"name": "x" * 201}, "name", "201"),
        ({}, "name", "required"),
        ({"name": 7}, "name", "string"),
        ({"name": "eve", "role": "owner"}, "role", "admin, user"),
        ({"name": "eve", "colour": "red"}, "colour", "colour"),
        ({"name": "eve", "limits": {"max_sessions": -1}}, "limits", "max_sessions"),
        ({"name": "eve", "limits": {"budget": 3}}, "limits", "budget"),
        ({"name": "eve", "limits": {"max_sessions": 10**30}}, "limits", "max_sessions"),
        ({"name": "eve", "limits": []}, "limits", "object"),
        ({"name": "eve", "workspace_root": "/no/such/dir"}, "workspace_root", "workspace_root"),
        ({"name": "eve", "workspace_root": "/"}, "workspace_root", "workspace_root"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(admin, body, field, words):
    response = admin.post("/principals", json=body)
    message = error_of(response, 400, "invalid_request")
    named = response.json()["error"]["details"]["field"]
    assert named == field or named.startswith(f"{field}."), message  # limits.budget: its path
    assert words in message
    assert admin.get("/principals").json()["data"] == []


def test_not_json_and_query_parameters_are_refused(admin):
    response = admin.post("/principals", data="{", headers={"Content-Type": "application/json"})
    assert "not valid JSON" in error_of(response, 400, "invalid_request")
    response = admin.post("/principals", data="name=x", headers={"Content-Type": "text/plain"})
    error_of(response, 415, "unsupported_media_type")
    response = admin.post("/principals", params={"dry_run": "1"}, json={"name": "eve"})
    assert "'dry_run'" in error_of(response, 400, "invalid_request")
    assert "'x'" in error_of(admin.get("/me", params={"x": "1"}), 400, "invalid_request")
    assert admin.get("/principals").json()["data"] == []


def test_without_a_token_the_caller_is_root_until_a_principal_exists(runtime):
    with serving(runtime) as base:
        open_client = Client(base)
        assert open_client.get("/me").json()["id"] == "root"
        assert "401" not in open_client.openapi.document["paths"]["/me"]["get"]["responses"]
        # The first principal is made where the server runs (``aicli principals create``).
        created = runtime.create_principal(PrincipalCreate(name="first", role="admin"))

        # A principal exists: the service is no longer open, and its document says so.
        mine = Client(base, token=created.token)
        assert mine.get("/me").json()["id"] == created.id
        assert "401" in mine.openapi.document["paths"]["/me"]["get"]["responses"]
        for path in ("/me", "/sessions", "/openapi.json"):
            response = mine.get(path, headers={"Authorization": None})
            error_of(response, 401, "unauthorized")


def test_an_open_service_refuses_to_make_its_first_principal_over_http(runtime):
    """Anyone who reaches an open service may call it: one anonymous POST must not make
    itself admin and lock everyone else out. The service stays open."""
    with serving(runtime) as base:
        open_client = Client(base)
        for role in ("admin", "user"):
            response = open_client.post("/principals", json={"name": "mallory", "role": role})
            message = error_of(response, 403, "forbidden")
            assert "aicli principals create" in message and "AICLI_API_TOKEN" in message
        assert open_client.get("/me").json()["id"] == "root"
        assert runtime.store.principals.count() == 0
        assert open_client.get("/sessions").status_code == 200
