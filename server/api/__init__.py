"""REST and WebSocket routers, one module per resource."""

from fastapi import APIRouter

from . import meta

ROUTERS: list[APIRouter] = [meta.router]
