"""Principals' own Anthropic credentials: sealed with AES-256-GCM, opened only to be sent.

The table ``principal_credentials`` holds a row per principal that brought its own key
or token: which kind, when it was set, and the secret sealed (a 12-byte random nonce,
then the ciphertext and its tag). The principal's id and the kind are the associated
data, so a sealed value copied onto another principal's row, or relabelled, does not
open: a writer of the database cannot lend itself someone else's key. Nothing but
``own_credentials`` opens a secret, and nothing returns one to a caller of the API.

AES-GCM of ``cryptography`` (OpenSSL's), rather than Fernet: the same library, with
associated data, which Fernet lacks.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aicli.contract import CredentialKind, Credentials, utcnow
from aicli.errors import CredentialsUnavailable, PrincipalNotFound, PrincipalRevoked
from aicli.storage.engine import Engine
from aicli.storage.fields import from_db_time, to_db_time
from aicli.storage.secret_key import SecretKey

NONCE_BYTES = 12
# The headers the Messages API takes each kind in.
_HEADERS = {
    CredentialKind.API_KEY: lambda secret: {"x-api-key": secret},
    CredentialKind.AUTH_TOKEN: lambda secret: {"authorization": f"Bearer {secret}"},
}
_UPSERT = (
    "INSERT INTO principal_credentials (principal_id, kind, sealed, set_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (principal_id) DO UPDATE"
    " SET kind = excluded.kind, sealed = excluded.sealed, set_at = excluded.set_at"
)
_INFO = "SELECT kind, set_at FROM principal_credentials WHERE principal_id = ?"
_SEALED = "SELECT kind, sealed FROM principal_credentials WHERE principal_id = ?"
DELETE = "DELETE FROM principal_credentials WHERE principal_id = ?"


def _associated(principal_id: str, kind: CredentialKind) -> bytes:
    return f"{principal_id}\x00{kind.value}".encode()


class PrincipalCredentials:
    """The ``principal_credentials`` table; reached as ``Store.credentials``."""

    def __init__(self, engine: Engine, key: SecretKey) -> None:
        self._engine = engine
        self._execute = engine.execute
        self._key = key
        self._for_update = " FOR UPDATE" if engine.is_postgres else ""

    def put(self, principal_id: str, kind: CredentialKind, secret: str) -> Credentials:
        """Seal and store ``secret`` as the principal's own, replacing any it had.

        The principal's row is locked first, so a revocation (which deletes the row here in
        its own commit) either comes after this commit and deletes it, or before and this
        is refused: a revoked principal never keeps a credential.
        """
        nonce = os.urandom(NONCE_BYTES)
        aead = AESGCM(self._key.get(create=True))
        associated = _associated(principal_id, kind)
        sealed = nonce + aead.encrypt(nonce, secret.encode("ascii"), associated)
        shown = Credentials(kind=kind, set_at=utcnow())
        lock = f"SELECT revoked_at FROM principals WHERE id = ?{self._for_update}"

        def write() -> Credentials:
            row = self._execute(lock, (principal_id,)).fetchone()
            if row is None:
                raise PrincipalNotFound(principal_id)
            if row[0] is not None:
                raise PrincipalRevoked(principal_id)
            self._execute(_UPSERT, (principal_id, kind.value, sealed, to_db_time(shown.set_at)))
            return shown

        return self._engine.write(write)

    def get(self, principal_id: str) -> Credentials | None:
        """What the API shows of the principal's own credential (never the secret), or None."""
        row = self._engine.read(lambda: self._execute(_INFO, (principal_id,)).fetchone())
        if row is None:
            return None
        return Credentials(kind=CredentialKind(row[0]), set_at=from_db_time(row[1]))

    def delete(self, principal_id: str) -> None:
        """Forget the principal's own credential; none: nothing to do."""
        self._engine.write(lambda: self._execute(DELETE, (principal_id,)))

    def own_credentials(self, principal_id: str | None) -> dict[str, str] | None:
        """The headers that carry the principal's own credential to the Messages API
        (``x-api-key``, or ``authorization: Bearer``); None when it brought none (and for
        no principal: a session of the open service). ``CredentialsUnavailable`` when they
        cannot be opened with this node's key; its message holds no secret."""
        if principal_id is None:
            return None
        row = self._engine.read(lambda: self._execute(_SEALED, (principal_id,)).fetchone())
        if row is None:
            return None
        kind, sealed = CredentialKind(row[0]), bytes(row[1])
        aead = AESGCM(self._key.get(create=False))
        try:
            nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
            secret = aead.decrypt(nonce, body, _associated(principal_id, kind)).decode("ascii")
        except (InvalidTag, ValueError):
            raise CredentialsUnavailable(
                f"The credentials of principal '{principal_id}' do not open with this node's "
                "secret key: it is not the key they were stored with (AICLI_SECRET_KEY_FILE "
                "or AICLI_SECRET_KEY differs between nodes, or changed). Restore that key, or "
                "set the credentials again (PUT /me/credentials).",
                {"principal_id": principal_id},
            ) from None
        return _HEADERS[kind](secret)
