// The Device page: who holds it and what runs on it, the live view, and for the holder:
// deploy a model, turn the sensor view on, record.
import { ErrorAnswer, del, get, post, viewer } from "./api.js";
import { h, when } from "./dom.js";
import { onLeave, refresh, showError, showInfo } from "./app.js";
import { LiveView } from "./live.js";

export async function devicePage(deviceId, mode = "") {
  const device = await get(`v1/devices/${encodeURIComponent(deviceId)}`);
  const holder = viewer.canWrite && device.booking !== null && device.booking.user_name === viewer.user.name;
  let deployment = null;
  if (holder) {
    try {
      deployment = await get(`v1/devices/${encodeURIComponent(deviceId)}/deployment`);
    } catch (error) {
      if (!(error instanceof ErrorAnswer && error.status === 404)) throw error;
    }
  }
  const sensor = holder && mode === "sensor";
  const live = new LiveView(deviceId, { sensor });
  onLeave(() => live.close());

  const base = `#/device/${encodeURIComponent(deviceId)}`;
  const page = h("section", { id: "device" },
    h("h1", {}, device.id),
    h("p", {}, `${device.type} on ${device.host}: ${device.status}`,
      device.booking ? `, held by ${device.booking.user_name} until ${when(device.booking.ends_at)}` : ""),
    holder ? holderTools(deviceId, deployment, sensor, base) : null,
    live.element);
  return page;
}

function holderTools(deviceId, deployment, sensor, base) {
  const path = `v1/devices/${encodeURIComponent(deviceId)}`;
  const models = h("select", { id: "deploy-model" });
  get("v1/models").then((list) => {
    models.replaceChildren(...list.map((m) => h("option", { value: String(m.id) }, `${m.id}: ${m.name}`)));
  }).catch(showError);
  const monitor = h("select", { id: "deploy-monitor" },
    h("option", { value: "all" }, "every layer"), h("option", { value: "last" }, "the last layer"));
  const deploy = h("form", { id: "deploy-form" }, "Deploy model ", models, " monitoring ", monitor, " ",
    h("button", { type: "submit" }, "Deploy"));
  deploy.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { model_id: Number(models.value), monitor_layers: monitor.value === "all" ? "all" : [-1] };
    try {
      const result = await post(`${path}/deployment`, body);
      showInfo(result.summary);
      refresh();
    } catch (error) { showError(error); }
  });

  const seconds = h("input", { id: "record-seconds", type: "number", min: "0.1", max: "3600", step: "0.1", value: "2" });
  const name = h("input", { id: "record-name", maxlength: "200", placeholder: "name" });
  const source = h("select", { id: "record-source" }, h("option", { value: "dvs" }, "DVS sensor"), h("option", { value: "monitor" }, "monitored spikes"));
  const record = h("form", { id: "record-form" }, "Record ", seconds, " s of ", source, " as ", name, " ",
    h("button", { type: "submit" }, "Record"));
  record.addEventListener("submit", async (event) => {
    event.preventDefault();
    showInfo("Recording...");
    try {
      const result = await post("v1/recordings", { device_id: deviceId, duration_s: Number(seconds.value), source: source.value, name: name.value });
      showInfo(`Recorded ${result.event_count} events (recording ${result.id}).`);
    } catch (error) { showError(error); }
  });

  const undeploy = async () => {
    try { await del(`${path}/deployment`); showInfo("Deployment removed."); refresh(); } catch (error) { showError(error); }
  };
  return h("div", { class: "card", id: "holder-tools" },
    h("p", {}, deployment ? `Deployed: ${deployment.summary}` : "Nothing deployed."),
    deploy,
    deployment ? h("button", { id: "undeploy", class: "danger", onclick: undeploy }, "Remove deployment") : null,
    h("p", {}, sensor
      ? h("a", { href: base, class: "button", id: "sensor-off" }, "Turn the sensor view off")
      : h("a", { href: `${base}/sensor`, class: "button", id: "sensor-on" }, "Watch the DVS sensor")),
    record);
}
