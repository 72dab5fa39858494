"""Users and API tokens: REST bodies shared by the daemon and the client."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: A user name: what people type in ``specklab admin`` and see in bookings and the audit log.
UserName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
#: Prefix of every API token, so a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "spk_"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    #: Reads everything it may see, writes nothing.
    OBSERVER = "observer"


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: UserName
    role: Role = Role.USER


class UserUpdate(BaseModel):
    """An admin changes a user's role."""

    model_config = ConfigDict(extra="forbid")

    role: Role


class UserPublic(BaseModel):
    id: int
    name: str
    role: Role
    created_at: datetime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    #: Lifetime in days; ``None`` makes a token that never expires.
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)
    #: Admins may create a token for another user; others leave this out.
    user_id: int | None = None


class TokenPublic(BaseModel):
    id: int
    user_id: int
    name: str
    #: The first characters of the token, to recognise it; the token itself is never stored.
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    #: The secret, shown in this response only.
    token: str
