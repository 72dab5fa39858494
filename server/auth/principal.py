"""Who a request acts for: a plain value, safe to keep across threads and WebSocket lifetimes."""

from __future__ import annotations

from dataclasses import dataclass

from specklab.schemas.accounts import Role


@dataclass(frozen=True, slots=True)
class Principal:
    id: int
    name: str
    role: Role
    #: The API token the request came with.
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def can_write(self) -> bool:
        return self.role != Role.OBSERVER

    @property
    def watches_lab(self) -> bool:
        """Sees the whole lab's activity (every booking, every deployment's summary), as
        admins and observers do; never others' secrets, models or recordings."""
        return self.role in (Role.ADMIN, Role.OBSERVER)
