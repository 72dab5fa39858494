"""API token secrets: high-entropy random strings, stored only as their sha256."""

from __future__ import annotations

import hashlib
import secrets

from specklab.schemas.accounts import TOKEN_PREFIX

#: 32 random bytes: a sha256 without salt or stretching is enough for secrets this strong.
_TOKEN_BYTES = 32
#: Characters shown in listings to recognise a token ("spk_" and 8 of the secret).
_DISPLAY_CHARS = len(TOKEN_PREFIX) + 8


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    return token[:_DISPLAY_CHARS]
