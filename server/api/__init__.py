"""REST and WebSocket routers, one module per resource."""

from fastapi import APIRouter

from . import audit, bookings, meta, tokens, users

#: Routers anyone may call: health and version.
PUBLIC_ROUTERS: list[APIRouter] = [meta.router]
#: Every other router; the app includes these behind a valid token (``auth.require_user``).
ROUTERS: list[APIRouter] = [users.router, tokens.router, bookings.router, audit.router]
