"""The dashboard in headless Chromium against a real daemon: sign-in, booking by click, the
live DVS view, a spectator's raster, the model report's memory bars, recordings, admin, the
observer's read-only pages, and escaping of names people typed."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from torch import nn

from specklab.server.devices.naming import DeviceId, lab_id

from ..fixtures_models import torchscript_bytes
from ..guide_inputs import guide_spikes
from ..stream_lab import StreamLab, open_stream
from .conftest import screenshot, sign_in, wait_for

pytestmark = pytest.mark.timeout(600)

LIVE, CLICKED, RECORDED = (
    lab_id(DeviceId("speck2fdevkit", i, virtual=True), host=socket.gethostname()) for i in range(3)
)
#: Some pixel of the sensor image is lit (red: off events, green: on events).
LIT_SENSOR = """(() => { const c = document.querySelector('#dvs');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4) if (d[i] || d[i + 1]) return true;
    return false; })()"""
SPIKING_LAYER = (
    "[...document.querySelectorAll('#rasters .rate')].some((r) => /^[1-9]/.test(r.textContent))"
)
DRAWN_RASTER = (
    "[...document.querySelectorAll('canvas.raster')].some((c) => Number(c.dataset.points) > 0)"
)
BARS = """bars => bars.map(b => [b.dataset.kind, Number(b.dataset.core), Number(b.dataset.used),
    Number(b.dataset.capacity), b.firstChild.style.width])"""


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
    page.wait_for_selector("#sensor-off")
    wait_for(page, "Number(document.querySelector('#live-frames')?.dataset.count) >= 10")
    # Some frames catch no event (the device is read about every millisecond): wait for one.
    wait_for(page, "/^[1-9]/.test(document.querySelector('#dvs-rate')?.textContent)")
    assert page.text_content("#dvs-rate").endswith(" events/s")
    wait_for(page, LIT_SENSOR)
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
                batch = guide_spikes(rng, n, 100_000, start=start)
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
        wait_for(page, SPIKING_LAYER)
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


HOSTILE = '<img src=x onerror="window.pwned=1">'
#: Buttons that only read (previews and downloads): everyone has them.
READ_ONLY = ":not(.preview):not(.download-npy):not(.download-aedat4)"


def test_a_recording_is_made_previewed_and_downloaded_in_the_browser(
    browser: object, lab: StreamLab, tmp_path: Path
) -> None:
    lab.book("ada", RECORDED)
    page = sign_in(browser, lab, "ada", f"#/device/{RECORDED}")
    page.fill("#record-seconds", "0.5")
    page.fill("#record-name", HOSTILE)
    page.click("#record-form button[type=submit]")
    wait_for(page, "document.querySelector('#notice').textContent.startsWith('Recorded')")
    with lab.http("ada") as http:
        [recording] = [r for r in http.get("/v1/recordings").json() if r["name"] == HOSTILE]
    assert recording["event_count"] > 0

    page.goto(f"{lab.daemon.url}/#/recordings")
    row = f"tr[data-recording='{recording['id']}']"
    page.wait_for_selector(row)
    assert page.text_content(f"{row} td:nth-child(2)") == HOSTILE
    page.click(f"{row} button.preview")
    wait_for(page, "Number(document.querySelector('#preview-rate')?.dataset.bins) > 0")
    assert page.query_selector("#preview-counts") is not None
    screenshot(page, "recordings")

    with page.expect_download() as download:
        page.click(f"{row} button.download-npy")
    path = tmp_path / "events.npy"
    download.value.save_as(path)
    assert len(np.load(path)) == recording["event_count"]
    with page.expect_download() as download:
        page.click(f"{row} button.download-aedat4")
    download.value.save_as(tmp_path / "events.aedat4")
    assert (tmp_path / "events.aedat4").stat().st_size > 0

    # Replaying needs a deployment with DVS input: the refusal is shown, not swallowed.
    page.select_option(f"{row} .replay-device", RECORDED)
    page.click(f"{row} .replay button")
    page.wait_for_selector("#notice.error")
    assert "(not_deployed)" in page.text_content("#notice")
    deploy_dvs_input_network("ada", lab, RECORDED)
    page.click(f"{row} .replay button")
    page.wait_for_selector("#notice.info")
    assert page.text_content("#notice").startswith(f"Replaying recording {recording['id']} into")
    assert page.evaluate("window.pwned") is None and page.errors == []


def deploy_dvs_input_network(user: str, lab: StreamLab, device: str) -> None:
    """A convolution taking the sensor's two polarities (its 16x16 corner) on ``device``."""
    network = nn.Sequential(nn.Conv2d(2, 2, 3, bias=False), nn.ReLU())
    with lab.http(user) as http:
        uploaded = http.post(
            "/v1/models",
            files={"file": ("dvs.pt", torchscript_bytes(network, (2, 16, 16)))},
            data={"options": json.dumps({"input_shape": [2, 16, 16], "dvs_input": True})},
        )
        assert uploaded.status_code == 201, uploaded.text
        deployed = http.post(
            f"/v1/devices/{device}/deployment", json={"model_id": uploaded.json()["id"]}
        )
        assert deployed.status_code == 201, deployed.text


def upload_two_features(page: object, name: str) -> None:
    """Submit the Models page's upload form with a two-feature convolution on 6x6 input."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.ReLU())
    file = {
        "name": name,
        "mimeType": "application/octet-stream",
        "buffer": torchscript_bytes(model, (1, 6, 6)),
    }
    page.set_input_files("#upload-file", file)  # type: ignore[attr-defined]
    page.fill("#upload-shape", "1,6,6")  # type: ignore[attr-defined]
    page.click("#upload-form button[type=submit]")  # type: ignore[attr-defined]


def test_a_model_is_uploaded_and_deployed_in_the_browser(browser: object, lab: StreamLab) -> None:
    page = sign_in(browser, lab, "ada", "#/models")
    upload_two_features(page, "two-features.pt")
    page.wait_for_selector("#model h1")
    assert page.text_content("#model h1") == "two-features.pt"
    model_id = page.url.rsplit("/", 1)[1]

    page.goto(f"{lab.daemon.url}/#/device/{RECORDED}")  # ada holds it (the recording test)
    page.wait_for_selector(f"#deploy-model option[value='{model_id}']", state="attached")
    page.select_option("#deploy-model", model_id)
    page.click("#deploy-form button[type=submit]")
    page.wait_for_selector("#undeploy")
    assert "two-features.pt" in page.text_content("#holder-tools")
    with lab.http("ada") as http:
        deployment = http.get(f"/v1/devices/{RECORDED}/deployment").json()
    assert deployment["model_id"] == int(model_id) and deployment["monitored"] == [0]
    screenshot(page, "device-deployed")
    page.click("#undeploy")
    wait_for(page, "document.querySelector('#holder-tools')?.textContent.includes('Nothing')")
    with lab.http("ada") as http:
        assert http.get(f"/v1/devices/{RECORDED}/deployment").status_code == 404
    assert page.errors == []


def test_names_people_typed_are_shown_as_text(browser: object, lab: StreamLab) -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.ReLU())
    with lab.http("ada") as http:
        uploaded = http.post(
            "/v1/models",
            files={"file": ("tiny.pt", torchscript_bytes(model, (1, 8, 8)))},
            data={"options": json.dumps({"input_shape": [1, 8, 8]}), "name": f"{HOSTILE}.pt"},
        )
        assert uploaded.status_code == 201, uploaded.text
    page = sign_in(browser, lab, "ada", "#/models")
    link = page.wait_for_selector(f"#models tr[data-model='{uploaded.json()['id']}'] a")
    assert link.text_content() == f"{HOSTILE}.pt"
    link.click()
    page.wait_for_selector("#model h1")
    assert page.text_content("#model h1") == f"{HOSTILE}.pt"
    assert page.query_selector("main img") is None
    assert page.evaluate("window.pwned") is None and page.errors == []


def test_an_observer_sees_everything_and_no_action_buttons(browser: object, lab: StreamLab) -> None:
    page = sign_in(browser, lab, "olga")
    page.wait_for_selector(f"#lab tr[data-device='{LIVE}']")
    assert page.text_content(f"#lab tr[data-device='{LIVE}'] td:nth-child(4)") == "ada"
    assert page.query_selector_all(".slot:not([disabled])") == []
    assert page.query_selector_all(".booking:not([disabled])") == []
    assert len(page.query_selector_all(".booking")) >= 2  # ada's bookings, read-only
    assert page.is_hidden("#nav a[data-page=admin]")
    screenshot(page, "observer-lab")

    for route, content in (
        ("#/models", "#models"),
        ("#/recordings", "#recordings"),
        ("#/jobs", "#jobs"),
        (f"#/device/{LIVE}", "#live"),
    ):
        page.goto(f"{lab.daemon.url}/{route}")
        page.wait_for_selector(content)
        assert page.query_selector_all(f"main form, main button{READ_ONLY}") == [], route
        assert page.query_selector_all("main .button") == [], route
    screenshot(page, "observer-device")
    page.goto(f"{lab.daemon.url}/#/admin")
    page.wait_for_selector("#notice.error")  # the API refuses; the page shows why
    assert page.errors == []


def test_admins_manage_users_tokens_bookings_and_read_the_audit_log(
    browser: object, lab: StreamLab
) -> None:
    page = sign_in(browser, lab, "admin", "#/admin")
    page.fill("#new-user-name", "carol")
    page.click("#new-user button[type=submit]")
    row = page.wait_for_selector("#admin tr[data-user] >> text=carol")
    row.evaluate("cell => cell.closest('tr').querySelector('.show-tokens').click()")
    page.wait_for_selector("#new-token")
    page.click("#new-token button[type=submit]")
    secret = page.wait_for_selector("#new-token-secret code").text_content()
    me = httpx.get(f"{lab.daemon.url}/v1/users/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json()["name"] == "carol"
    screenshot(page, "admin-token")
    # Shown once: the tokens listed again carry no secret.
    row.evaluate("cell => cell.closest('tr').querySelector('.show-tokens').click()")
    page.wait_for_selector("#new-token-secret code", state="detached")
    page.wait_for_selector("#admin td >> text=dashboard")  # the new token, listed
    assert secret not in page.inner_text("body")

    [booking] = [
        b
        for b in lab.http("admin").get("/v1/bookings", params={"current": True}).json()
        if b["device_id"] == CLICKED
    ]
    reason = f"maintenance {HOSTILE}"
    page.fill(f"tr[data-booking='{booking['id']}'] .preempt-reason", reason)
    page.click(f"tr[data-booking='{booking['id']}'] button.preempt")
    page.wait_for_selector("#notice.info")
    assert lab.http("admin").get(f"/v1/bookings/{booking['id']}").json()["status"] == "preempted"

    page.fill("#audit-action", "booking.preempt")
    page.click("#audit-filters button[type=submit]")
    wait_for(
        page,
        "[...document.querySelectorAll('.audit-entry')].map(r => r.children[2].textContent)"
        ".join() === 'booking.preempt'",
    )
    assert "maintenance <img src=x onerror=" in page.text_content(".audit-entry")
    screenshot(page, "admin")
    assert page.evaluate("window.pwned") is None and page.errors == []


def test_an_upload_shows_its_place_in_the_compile_queue(browser: object, lab: StreamLab) -> None:
    # The daemon's queue is played by intercepted status answers, and the upload is held until
    # the page has shown each state: nothing here depends on how fast the compiler is.
    page = sign_in(browser, lab, "ada", "#/models")
    page.wait_for_selector("#upload-form")
    statuses = [{"state": "queued", "position": 2, "queued": 3, "workers": 1}]
    polled: list[str] = []
    held: list[object] = []

    def status(route: object) -> None:
        compile_id = route.request.url.rsplit("/", 1)[1]  # type: ignore[attr-defined]
        polled.append(compile_id)
        body = {"id": compile_id, **statuses[-1]}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))  # type: ignore[attr-defined]

    def upload(route: object) -> None:
        if route.request.method == "POST":  # type: ignore[attr-defined]
            held.append(route)
        else:
            route.continue_()  # type: ignore[attr-defined]

    page.route("**/v1/models/compiles/*", status)
    page.route("**/v1/models", upload)
    upload_two_features(page, "queued.pt")
    wait_for(page, "document.querySelector('#notice').textContent.includes('2 compiles ahead')")
    screenshot(page, "upload-queued")
    statuses.append({"state": "compiling", "position": None, "queued": 2, "workers": 1})
    wait_for(page, "document.querySelector('#notice').textContent.includes('compiling')")
    [request] = held
    assert request.request.headers["x-compile-id"] == polled[0]  # type: ignore[attr-defined]
    request.continue_()  # type: ignore[attr-defined]
    wait_for(page, "document.querySelector('#model h1')", timeout_s=300)  # a cold compile
    assert page.text_content("#model h1") == "queued.pt"
    assert page.errors == []


def test_admins_change_a_users_role_and_delete_them_but_keep_an_admin(
    browser: object, lab: StreamLab
) -> None:
    with lab.http("admin") as http:
        assert http.post("/v1/users", json={"name": "dora"}).status_code == 201
    page = sign_in(browser, lab, "admin", "#/admin")
    page.on("dialog", lambda dialog: dialog.accept())
    dora = "#admin tr[data-user]:has(td:text-is('dora'))"
    page.select_option(f"{dora} select.user-role", "observer")
    page.wait_for_selector("#notice.info")
    with lab.http("admin") as http:
        [user] = [u for u in http.get("/v1/users").json() if u["name"] == "dora"]
        assert user["role"] == "observer"
    # The last admin cannot be demoted: the daemon's reason shows, the choice goes back.
    admin = "#admin tr[data-user]:has(td:text-is('admin'))"
    page.select_option(f"{admin} select.user-role", "user")
    page.wait_for_selector("#notice.error")
    assert "last admin" in page.text_content("#notice")
    assert page.eval_on_selector(f"{admin} select.user-role", "s => s.value") == "admin"
    page.click(f"{dora} button.delete-user")
    wait_for(page, "document.querySelector('#notice').textContent.includes('dora was deleted')")
    with lab.http("admin") as http:
        assert "dora" not in [u["name"] for u in http.get("/v1/users").json()]
    assert page.query_selector(dora) is None
    screenshot(page, "admin-users")
    assert page.errors == []
