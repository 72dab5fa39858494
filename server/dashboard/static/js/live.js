// The live view's drawing: the sensor image (off events red, on events green) and one
// scrolling raster per monitored layer, fed by the frames of WS /v1/devices/{id}/live.
import { liveSocket } from "./api.js";
import { h } from "./dom.js";

const RASTER_PX_PER_S = 120;
const RASTER_HEIGHT = 120;
const HEARTBEAT_MS = 20000;

// A rate shown over about a second: single frames are too short (and too jumpy) to read.
class RateMeter {
  constructor(element, unit) {
    this.element = element;
    this.unit = unit;
    this.count = 0;
    this.seconds = 0;
  }

  add(count, seconds) {
    this.count += count;
    this.seconds += seconds;
    if (this.seconds >= 1) {
      this.element.textContent = `${Math.round(this.count / this.seconds).toLocaleString()} ${this.unit}`;
      this.count = 0;
      this.seconds = 0;
    }
  }
}

export function parseFrame(buffer) {
  const view = new DataView(buffer);
  const length = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const image = new Uint8Array(buffer, 4 + length);
  return { header, image };
}

export class LiveView {
  constructor(deviceId, { sensor }) {
    this.frames = 0;
    this.sensorEvents = 0;
    this.status = h("p", { id: "live-status" }, "connecting...");
    this.counter = h("span", { id: "live-frames", dataset: { count: "0" } }, "0 frames");
    this.dvsRate = h("span", { id: "dvs-rate" }, "");
    this.dvsMeter = new RateMeter(this.dvsRate, "events/s");
    this.canvas = h("canvas", { id: "dvs", width: 128, height: 128 });
    this.rasters = h("div", { id: "rasters" });
    this.layers = new Map();
    this.element = h("section", { id: "live" },
      h("h2", {}, "Live"), this.status,
      h("div", { class: "live-grid" },
        h("figure", {}, this.canvas, h("figcaption", {}, "DVS sensor ", this.dvsRate)),
        this.rasters),
      h("p", { class: "muted" }, this.counter));
    this.socket = liveSocket(deviceId, { sensor });
    this.socket.addEventListener("message", (event) => this.receive(event.data));
    this.socket.addEventListener("close", (event) => {
      if (event.code !== 1000 && event.code !== 1005 && !this.failed) this.status.textContent = `disconnected (${event.code})`;
    });
    if (sensor) {
      this.heartbeat = setInterval(() => {
        if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ op: "heartbeat" }));
      }, HEARTBEAT_MS);
    }
  }

  close() {
    clearInterval(this.heartbeat);
    this.socket.close();
  }

  receive(data) {
    if (typeof data === "string") {
      const message = JSON.parse(data);
      if (message.type === "error") {
        this.failed = true;
        this.status.textContent = `${message.message} (${message.code})`;
        this.status.className = "error";
      } else if (message.state === "idle") {
        this.status.textContent = "Nothing streams on this device now: the view starts when its holder streams.";
      } else {
        const what = message.role === "holder" ? "Your device" : "Spectating (read only)";
        this.status.textContent = `${what}: ${message.deployment || ""}`;
      }
      return;
    }
    const { header, image } = parseFrame(data);
    if (header.dvs) {
      this.drawSensor(header.dvs, image);
      this.dvsMeter.add(header.dvs.events, header.seconds);
      this.sensorEvents += header.dvs.events;
    }
    for (const layer of header.layers) this.drawLayer(layer, header.seconds);
    // Counted once drawn; what tests and benchmarks/bench_dashboard.py read.
    this.frames += 1;
    Object.assign(this.counter.dataset, { count: String(this.frames), events: String(this.sensorEvents), seq: String(header.seq) });
    this.counter.textContent = `${this.frames} frames, ${header.dropped} events dropped`;
  }

  drawSensor(dvs, image) {
    if (this.canvas.width !== dvs.width) { this.canvas.width = dvs.width; this.canvas.height = dvs.height; }
    const pixels = dvs.width * dvs.height;
    const picture = new ImageData(dvs.width, dvs.height);
    for (let i = 0; i < pixels; i += 1) {
      picture.data[4 * i] = Math.min(255, image[i] * 64);
      picture.data[4 * i + 1] = Math.min(255, image[pixels + i] * 64);
      picture.data[4 * i + 3] = 255;
    }
    this.canvas.getContext("2d").putImageData(picture, 0, 0);
  }

  drawLayer(layer, seconds) {
    let entry = this.layers.get(layer.layer);
    if (!entry) {
      const canvas = h("canvas", { class: "raster", width: 480, height: RASTER_HEIGHT, dataset: { layer: String(layer.layer) } });
      const rate = h("span", { class: "rate" });
      this.rasters.append(h("figure", {}, canvas, h("figcaption", {}, `layer ${layer.layer} (core ${layer.core}, ${layer.neurons} neurons) `, rate)));
      entry = { canvas, meter: new RateMeter(rate, "spikes/s"), points: 0 };
      this.layers.set(layer.layer, entry);
    }
    const { canvas } = entry;
    const context = canvas.getContext("2d");
    const strip = Math.max(1, Math.round(seconds * RASTER_PX_PER_S));
    context.drawImage(canvas, -strip, 0);
    context.fillStyle = "#111";
    context.fillRect(canvas.width - strip, 0, strip, canvas.height);
    context.fillStyle = "#ffd34d";
    if (layer.t.length) {
      const first = Math.min(...layer.t);
      const span = Math.max(1, Math.max(...layer.t) - first);
      for (let i = 0; i < layer.t.length; i += 1) {
        const x = canvas.width - strip + ((layer.t[i] - first) / span) * (strip - 1);
        const y = canvas.height - 1 - (layer.n[i] / Math.max(1, layer.neurons)) * (canvas.height - 1);
        context.fillRect(x, y, 1, 1);
      }
    }
    entry.points += layer.t.length;
    canvas.dataset.points = String(entry.points);
    entry.meter.add(layer.count, seconds);
  }
}
