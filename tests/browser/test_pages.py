"""The dashboard in headless Chromium against a real daemon: sign-in, booking by click, the
live DVS view, a spectator's raster, the model report's memory bars, recordings, admin, the
observer's read-only pages, and escaping of names people typed."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from specklab.schemas.events import spikes

from ..stream_lab import StreamLab, open_stream
from .conftest import screenshot

pytestmark = pytest.mark.timeout(600)

LIVE, CLICKED, RECORDED = (f"virtual-speck2fdevkit:{i}" for i in range(3))
DRAWN_RASTER = (
    "[...document.querySelectorAll('canvas.raster')].some((c) => Number(c.dataset.points) > 0)"
)
BARS = """bars => bars.map(b => [b.dataset.kind, Number(b.dataset.core), Number(b.dataset.used),
    Number(b.dataset.capacity), b.firstChild.style.width])"""


def sign_in(browser: object, lab: StreamLab, user: str, path: str = "") -> object:
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(f"{lab.daemon.url}/{path}")
    page.fill("#token", lab.tokens[user])
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    return page


def wait_for(page: object, script: str, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(script, timeout=timeout_ms)  # type: ignore[attr-defined]


def test_sign_in_keeps_the_token_in_the_tab_only(browser: object, lab: StreamLab) -> None:
    page = browser.new_context().new_page()  # type: ignore[attr-defined]
    page.goto(f"{lab.daemon.url}/")
    screenshot(page, "sign-in")
    page.fill("#token", "spk_wrong-token")
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#notice.error")
    assert "invalid_token" in page.text_content("#notice")
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#token", lab.tokens["ada"])
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector(f"#lab tr[data-device='{LIVE}']")
    assert page.text_content("#who") == "ada (user)"
    assert page.evaluate("sessionStorage.getItem('specklab.token')") == lab.tokens["ada"]
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert lab.tokens["ada"] not in page.url
    assert page.is_hidden("#nav a[data-page=admin]")
    screenshot(page, "lab")

    page.click("#sign-out")
    page.wait_for_selector("#sign-in")
    assert page.evaluate("sessionStorage.length") == 0


def test_booking_conflicts_show_before_submitting_and_a_click_books(
    browser: object, lab: StreamLab
) -> None:
    lab.book("ada", CLICKED, minutes=30)
    page = sign_in(browser, lab, "bob")
    row = f".timeline-row[data-device='{CLICKED}']"
    page.wait_for_selector(row)
    # The first slot still open today overlaps ada's booking.
    page.click(f"{row} .slot:not([disabled])")
    assert "Conflicts with ada's booking" in page.text_content("#booking-conflict")
    assert page.is_disabled("#booking-submit")
    screenshot(page, "booking-conflict")

    page.goto(f"{lab.daemon.url}/#/lab/1")  # tomorrow: free
    page.click(f"{row} .slot[data-slot='40']")  # 10:00
    page.select_option("#booking-minutes", "60")
    assert page.text_content("#booking-conflict") == ""
    page.click("#booking-submit")
    page.wait_for_selector(f"{row} .booking.mine")
    with lab.http("bob") as http:
        [booking] = [b for b in http.get("/v1/bookings").json() if b["device_id"] == CLICKED]
    minutes = np.datetime64(booking["ends_at"][:19]) - np.datetime64(booking["starts_at"][:19])
    assert minutes == np.timedelta64(60, "m") and booking["starts_at"][11:16] == "10:00"
    screenshot(page, "booking-made")

    page.click(f"{row} .booking.mine")
    page.click("#booking-extend")
    page.wait_for_selector("#notice.info")
    with lab.http("bob") as http:
        extended = http.get(f"/v1/bookings/{booking['id']}").json()
    assert extended["ends_at"][11:16] == "11:15"
    page.click(f"{row} .booking.mine")
    page.click("#booking-cancel")
    page.wait_for_selector(f"{row} .booking.mine", state="detached")
    with lab.http("bob") as http:
        assert http.get(f"/v1/bookings/{booking['id']}").json()["status"] == "cancelled"
    assert page.errors == []


def test_the_holder_watches_the_sensor_live(browser: object, lab: StreamLab) -> None:
    lab.book("ada", LIVE)
    page = sign_in(browser, lab, "ada", f"#/device/{LIVE}")
    page.click("#sensor-on")
    wait_for(page, "Number(document.querySelector('#live-frames').dataset.count) >= 10")
    rate = page.text_content("#dvs-rate")
    assert rate.endswith("events/s") and rate != "0 events/s"
    lit = page.evaluate(
        """() => { const c = document.querySelector('#dvs');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] || d[i + 1]) lit++;
        return lit; }"""
    )
    assert lit > 0
    screenshot(page, "device-live")
    page.close()


@pytest.fixture
def streaming(lab: StreamLab) -> Iterator[int]:
    """ada runs the guide's network on LIVE and streams input spikes into it, in the background,
    until the test ends; yields the model id."""
    model_id = lab.upload_guide("ada")
    with lab.http("ada") as http:
        deployed = http.post(
            f"/v1/devices/{LIVE}/deployment", json={"model_id": model_id, "monitor_layers": "all"}
        )
        assert deployed.status_code == 201, deployed.text
    stop = threading.Event()

    def stream() -> None:
        rng = np.random.default_rng(0)
        with lab.websocket("ada", f"/v1/devices/{LIVE}/stream?mode=continuous") as websocket:
            client = open_stream(websocket)
            start = 0
            while not stop.is_set():
                n = 2000
                batch = spikes(
                    t=start + np.sort(rng.integers(0, 100_000, n)),
                    layer=0,
                    feature=0,
                    x=rng.integers(0, 28, n),
                    y=rng.integers(0, 28, n),
                )
                client.send_events("spike", batch)
                for message in client.data_to_send():
                    websocket.send(message)
                start += 100_000
                deadline = time.monotonic() + 0.1
                while time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        websocket.recv(timeout=0.02)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    yield model_id
    stop.set()
    thread.join(30)


def test_a_spectator_sees_the_raster_while_the_holder_streams(
    browser: object, lab: StreamLab, streaming: int
) -> None:
    for user in ("bob", "olga"):
        page = sign_in(browser, lab, user, f"#/device/{LIVE}")
        wait_for(page, DRAWN_RASTER)
        assert "Spectating (read only)" in page.text_content("#live-status")
        assert page.query_selector("#holder-tools") is None
        rates = [r.text_content() for r in page.query_selector_all("#rasters .rate")]
        assert any(rate != "0 spikes/s" for rate in rates)
        screenshot(page, f"device-spectator-{user}")
        page.close()


def test_the_model_page_draws_each_cores_memory_against_its_capacity(
    browser: object, lab: StreamLab
) -> None:
    model_id = lab.upload_guide("ada")
    with lab.http("ada") as http:
        report = http.get(f"/v1/models/{model_id}").json()["report"]
    placement = report["placement"]
    expected = {}
    for capacity in placement["cores"]:
        on = [
            int(layer) for layer, core in placement["mapping"].items() if core == capacity["core"]
        ]
        if on:
            layers = [report["layers"][i] for i in on]
            expected[("kernel", capacity["core"])] = (
                sum(layer["kernel_memory"] for layer in layers),
                capacity["kernel"],
            )
            expected[("neuron", capacity["core"])] = (
                sum(layer["neuron_memory"] for layer in layers),
                capacity["neuron"],
            )

    page = sign_in(browser, lab, "ada", f"#/models/{model_id}")
    page.wait_for_selector("#cores .bar")
    bars = page.eval_on_selector_all("#cores .bar", BARS)
    drawn = {(kind, core): (used, capacity) for kind, core, used, capacity, _ in bars}
    assert drawn == expected and len(drawn) == 2 * len(report["layers"])
    for _, _, used, capacity, width in bars:
        assert float(width.rstrip("%")) == pytest.approx(100 * used / capacity, abs=0.01)
    rows = page.query_selector_all("#model tbody tr[data-layer]")
    cores = [row.query_selector_all("td")[2].text_content() for row in rows]
    assert cores == [str(placement["mapping"][str(i)]) for i in range(len(rows))]
    screenshot(page, "model")
