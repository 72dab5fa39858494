// The Recordings page: the list, a preview (event counts as an image, the event rate over
// time), downloads (.npy, AEDAT4) and replay into a deployment.
import { del, download, get, post, request, viewer } from "./api.js";
import { bytes, h, table, when } from "./dom.js";
import { refresh, showError, showInfo } from "./app.js";
import { parseNpy } from "./npy.js";

//: Larger recordings are not previewed (the browser would hold all of it).
const MAX_PREVIEW_BYTES = 64 * 1000 * 1000;
const RATE_BINS = 200;

export async function recordingsPage() {
  const [recordings, devices] = await Promise.all([get("v1/recordings"), get("v1/devices")]);
  const preview = h("div", { id: "preview" });
  const rows = recordings.map((r) => h("tr", { dataset: { recording: String(r.id) } },
    h("td", {}, String(r.id)), h("td", {}, r.name || "(no name)"), h("td", {}, r.owner), h("td", {}, r.device_id),
    h("td", {}, r.kind), h("td", {}, `${r.duration_s.toFixed(2)} s`), h("td", {}, r.event_count.toLocaleString()),
    h("td", {}, bytes(r.size_bytes)), h("td", {}, when(r.created_at)),
    h("td", {}, actions(r, devices.devices, preview))));
  return h("section", { id: "recordings" },
    h("h1", {}, "Recordings"),
    recordings.length ? table(["Id", "Name", "Owner", "Device", "Kind", "Duration", "Events", "Size", "Recorded", ""], rows)
      : h("p", {}, "No recordings yet: record from a device's page."),
    preview);
}

function actions(recording, devices, preview) {
  const base = `v1/recordings/${recording.id}`;
  const buttons = [
    h("button", { class: "preview", onclick: () => showPreview(recording, preview) }, "Preview"),
    h("button", { class: "download-npy", onclick: () => download(`${base}/events.npy`, `recording-${recording.id}.npy`).catch(showError) }, ".npy"),
  ];
  if (recording.kind === "dvs") {
    buttons.push(h("button", { class: "download-aedat4", onclick: () => download(`${base}/events.aedat4`, `recording-${recording.id}.aedat4`).catch(showError) }, "AEDAT4"));
  }
  if (viewer.canWrite && recording.kind === "dvs") {
    const device = h("select", { class: "replay-device" }, devices.map((d) => h("option", { value: d.id }, d.id)));
    const speed = h("input", { class: "replay-speed", type: "number", min: "0.01", max: "1000", step: "0.1", value: "1" });
    const replay = async () => {
      try {
        await post(`${base}/replay`, { device_id: device.value, speed: Number(speed.value) });
        showInfo(`Replaying recording ${recording.id} into ${device.value}: watch its page.`);
      } catch (error) { showError(error); }
    };
    buttons.push(h("span", { class: "replay" }, device, " x", speed, h("button", { onclick: replay }, "Replay")));
  }
  if (viewer.canWrite && (viewer.isAdmin || recording.owner === viewer.user.name)) {
    buttons.push(h("button", { class: "danger", onclick: () => del(base).then(() => refresh()).catch(showError) }, "Delete"));
  }
  return buttons;
}

async function showPreview(recording, preview) {
  if (recording.size_bytes > MAX_PREVIEW_BYTES) {
    preview.replaceChildren(h("p", {}, `Recording ${recording.id} is too large to preview here: download it.`));
    return;
  }
  preview.replaceChildren(h("p", {}, "Loading..."));
  try {
    const response = await request("GET", `v1/recordings/${recording.id}/events.npy`, { raw: true });
    const { count, columns } = parseNpy(await response.arrayBuffer());
    preview.replaceChildren(h("h2", {}, `Preview of ${recording.name || `recording ${recording.id}`}: ${count.toLocaleString()} events`),
      h("div", { class: "live-grid" }, countsImage(columns), rateTimeline(columns.t, recording.duration_s)));
  } catch (error) {
    preview.replaceChildren();
    showError(error);
  }
}

function countsImage(columns) {
  const xs = columns.x;
  const ys = columns.y;
  let width = 1;
  let height = 1;
  for (let i = 0; i < xs.length; i += 1) { width = Math.max(width, xs[i] + 1); height = Math.max(height, ys[i] + 1); }
  const counts = new Float64Array(width * height);
  for (let i = 0; i < xs.length; i += 1) counts[ys[i] * width + xs[i]] += 1;
  const most = Math.max(1, ...counts);
  const canvas = h("canvas", { id: "preview-counts", width, height });
  const picture = new ImageData(width, height);
  for (let i = 0; i < counts.length; i += 1) {
    const level = Math.round(255 * Math.sqrt(counts[i] / most));
    picture.data.set([level, level, level, 255], 4 * i);
  }
  canvas.getContext("2d").putImageData(picture, 0, 0);
  return h("figure", {}, canvas, h("figcaption", {}, "events per pixel"));
}

function rateTimeline(times, durationS) {
  const canvas = h("canvas", { id: "preview-rate", width: RATE_BINS * 2, height: 120 });
  const span = Math.max(1, durationS * 1e6);
  const bins = new Float64Array(RATE_BINS);
  for (let i = 0; i < times.length; i += 1) bins[Math.min(RATE_BINS - 1, Math.floor((times[i] / span) * RATE_BINS))] += 1;
  const most = Math.max(1, ...bins);
  const context = canvas.getContext("2d");
  context.fillStyle = "#3b82f6";
  bins.forEach((value, i) => {
    const tall = (value / most) * canvas.height;
    context.fillRect(2 * i, canvas.height - tall, 2, tall);
  });
  const peak = (most * RATE_BINS) / Math.max(1e-6, durationS);
  canvas.dataset.bins = String(bins.filter((v) => v > 0).length);
  return h("figure", {}, canvas, h("figcaption", {}, `event rate over ${durationS.toFixed(2)} s (peak ${Math.round(peak).toLocaleString()} events/s)`));
}
