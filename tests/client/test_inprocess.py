"""The SDK against the app in this process, through its transport seam: no daemon, no socket.

``Client`` gets a Starlette ``TestClient`` (an ``httpx.Client`` that runs the app and its
lifespan); ``AsyncClient`` gets ``httpx.ASGITransport`` with the lifespan entered here.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from specklab.client import (
    AsyncClient,
    AuthenticationError,
    BookingConflict,
    Client,
    ClientClosed,
    Conflict,
    DeviceList,
    NotFound,
    PermissionDenied,
    TransportError,
)
from specklab.server.app import create_app
from specklab.server.settings import Settings

from ..lab_client import ADMIN_TOKEN, Lab, running_lab
from .conftest import ALL_ONES_SHAPE

URL = "http://testserver"
_names = itertools.count()


@pytest.fixture
def lab(tmp_path: Path, database_url: str) -> Iterator[Lab]:
    with running_lab(tmp_path / "data", database_url, virtual=["speck2fdevkit=1"]) as running:
        yield running


def user_client(lab: Lab, role: str = "user") -> Client:
    _, token = lab.add_user(f"{role}{next(_names)}", role)
    return Client(URL, token, transport=lab.client)


def test_lists_books_compiles_and_deploys_in_process(lab: Lab, model_file: Path) -> None:
    with user_client(lab) as client:
        status = client.lab_status()
        assert isinstance(status, DeviceList)
        assert [d.type for d in client.devices()] == ["speck2fdevkit"]
        with client.book("speck2fdevkit", minutes=5) as booking:
            model = client.compile(model_file, input_shape=ALL_ONES_SHAPE, name="ones")
            assert (model.name, client.model(model.id).id) == ("ones", model.id)
            assert client.chip_config(model).layers
            hw_model = client.deploy(model, booking.device_id)
            assert client.deployment(booking.device_id).model_id == model.id
            client.reset_states(booking.device_id)
            client.undeploy(booking.device_id)
            with pytest.raises(NotFound):
                client.deployment(booking.device_id)
            assert hw_model.device == booking.device_id
        assert client.booking(booking.id).status in ("ended", "cancelled", "released")


def test_error_answers_become_the_sdk_exceptions(lab: Lab, model_file: Path) -> None:
    stranger = Client(URL, "spk_not-a-token-of-this-lab", transport=lab.client)
    with stranger, pytest.raises(AuthenticationError):
        stranger.me()
    with user_client(lab, "observer") as observer, pytest.raises(PermissionDenied):
        observer.create_booking("speck2fdevkit", minutes=5)
    with user_client(lab) as client:
        with pytest.raises(NotFound):
            client.device("speck2fdevkit:7")
        with pytest.raises(NotFound):
            client.model(999)
        device = client.devices()[0].id
        with pytest.raises(TypeError, match="RemoteModel or its id"):
            client.deploy("ones", device)  # a name is not an id
        with pytest.raises(Conflict):
            client.reset_states(device)  # not booked by this user
        with (
            client.book(device, minutes=5),
            user_client(lab) as other,
            pytest.raises(BookingConflict),
        ):
            other.create_booking(device, minutes=5)


def test_a_given_httpx_client_stays_open_after_the_sdk_closes(lab: Lab) -> None:
    with Client(URL, ADMIN_TOKEN, transport=lab.client) as admin:
        assert admin.me().role == "admin"
    with pytest.raises(ClientClosed):
        admin.me()
    assert lab.client.get("/v1/health/live").status_code == 200


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.ASGITransport]:
    """The app's lifespan entered on this event loop, and a transport into it."""
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)


async def test_async_client_books_and_maps_errors_through_an_asgi_transport(
    tmp_path: Path, database_url: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        host_name="test-host",
        public_url="http://test-host:8765",
        virtual=["speck2fdevkit=1"],
    )
    async with (
        serving(create_app(settings)) as transport,
        AsyncClient(URL, ADMIN_TOKEN, transport=transport) as admin,
    ):
        user = await admin.create_user("async-seam")
        token = await admin.create_token("tests", user_id=user.id)
        async with AsyncClient(URL, token.token, transport=transport) as client:
            [device] = await client.devices()
            async with client.book("speck2fdevkit", minutes=5) as booking:
                assert booking.device_id == device.id
                with pytest.raises(BookingConflict):
                    await admin.create_booking(device.id, minutes=5)
            with pytest.raises(NotFound):
                await client.booking(10_000)


def test_streams_need_the_daemons_socket(lab: Lab) -> None:
    """Streams do not go through the seam (httpx has no WebSocket): they fail as a
    connection error to ``url``, not as a hang or a crash."""
    client = user_client(lab)
    with (
        client,
        client.book("speck2fdevkit", minutes=5) as booking,
        pytest.raises(TransportError, match="testserver"),
    ):
        client.stream(booking.device_id)
