// The Models page: upload, the list, and one model's compile report: layers, their cores, and
// each core's kernel and neuron memory against its capacity; warnings highlighted.
import { del, get, request, viewer } from "./api.js";
import { bytes, h, table, when } from "./dom.js";
import { showError, showInfo } from "./app.js";

export async function modelsPage(modelId) {
  if (modelId !== undefined) return modelReport(await get(`v1/models/${encodeURIComponent(modelId)}`));
  const models = await get("v1/models");
  const rows = models.map((m) => h("tr", { dataset: { model: String(m.id) } },
    h("td", {}, h("a", { href: `#/models/${m.id}` }, m.name)),
    h("td", {}, m.owner), h("td", {}, m.format), h("td", {}, bytes(m.size_bytes)),
    h("td", {}, when(m.created_at)),
    h("td", {}, String(m.report.problems.filter((p) => p.severity === "warning").length))));
  return h("section", { id: "models" },
    h("h1", {}, "Models"),
    viewer.canWrite ? uploadForm() : null,
    models.length ? table(["Name", "Owner", "Format", "Size", "Uploaded", "Warnings"], rows) : h("p", {}, "No models yet."));
}

function uploadForm() {
  const file = h("input", { type: "file", id: "upload-file", required: true });
  const shape = h("input", { id: "upload-shape", value: "1,28,28", pattern: "\\d+,\\d+,\\d+", title: "channels,height,width" });
  const dvs = h("input", { type: "checkbox", id: "upload-dvs" });
  const form = h("form", { id: "upload-form", class: "card" },
    h("h2", {}, "Upload"), file, " input shape ", shape, h("label", {}, dvs, " DVS input"), " ",
    h("button", { type: "submit" }, "Upload and compile"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData();
    data.append("file", file.files[0]);
    data.append("options", JSON.stringify({ input_shape: shape.value.split(",").map(Number), dvs_input: dvs.checked }));
    showInfo("Uploading...");
    // As the SDK does: the upload names itself (X-Compile-Id) and its place in the daemon's
    // compile queue is polled until it is answered.
    const upload = { id: newCompileId(), done: false };
    const poll = setInterval(() => showCompileStatus(upload), COMPILE_POLL_MS);
    try {
      const model = await request("POST", "v1/models", { form: data, headers: { "X-Compile-Id": upload.id } });
      location.hash = `#/models/${model.id}`;
    } catch (error) { showError(error); } finally { upload.done = true; clearInterval(poll); }
  });
  return form;
}

const COMPILE_POLL_MS = 500;

function newCompileId() {
  // getRandomValues, not randomUUID: the latter needs a secure context (no plain-HTTP proxy).
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function showCompileStatus(upload) {
  let status;
  try { status = await get(`v1/models/compiles/${upload.id}`); } catch { return; } // 404: answered already
  if (upload.done) return; // a late answer must not cover the upload's own outcome
  if (status.state === "queued") {
    const ahead = status.position === 1 ? "1 compile" : `${status.position} compiles`;
    showInfo(`Uploaded; waiting for the compiler: ${ahead} ahead of yours (${status.workers} run at once).`);
  } else if (status.state === "compiling") {
    showInfo("Uploaded; compiling...");
  }
}

export function coreUsage(report) {
  // Per core: the memory its layers take against its capacity.
  const placement = report.placement;
  if (!placement) return [];
  const layers = new Map(report.layers.map((l) => [l.index, l]));
  return placement.cores.filter((c) => Object.values(placement.mapping).includes(c.core)).map((capacity) => {
    const on = Object.entries(placement.mapping).filter(([, core]) => core === capacity.core).map(([layer]) => layers.get(Number(layer)));
    const sum = (key) => on.reduce((total, layer) => total + (layer ? layer[key] : 0), 0);
    return { core: capacity.core, layers: on.map((l) => l.index), kernel: [sum("kernel_memory"), capacity.kernel], neuron: [sum("neuron_memory"), capacity.neuron] };
  });
}

function bar(kind, core, [used, capacity]) {
  const share = capacity ? Math.min(1, used / capacity) : 0;
  return h("div", { class: "bar", dataset: { core: String(core), kind, used: String(used), capacity: String(capacity) }, title: `${used} of ${capacity}` },
    h("div", { class: `fill${used > capacity ? " over" : ""}`, style: { width: `${share * 100}%` } }),
    h("span", {}, `${kind}: ${used.toLocaleString()} / ${capacity.toLocaleString()}`));
}

function modelReport(model) {
  const report = model.report;
  const problemsOf = (index) => report.problems.filter((p) => p.layer === index);
  const rows = report.layers.map((layer) => h("tr", { class: problemsOf(layer.index).length ? "warned" : "", dataset: { layer: String(layer.index) } },
    h("td", {}, String(layer.index)), h("td", {}, layer.kind),
    h("td", {}, layer.core === null ? "-" : String(layer.core)),
    h("td", {}, `${layer.input_shape.join("x")} -> ${layer.output_shape.join("x")}`),
    h("td", {}, layer.kernel_memory.toLocaleString()), h("td", {}, layer.neuron_memory.toLocaleString()),
    h("td", {}, layer.zero_weight_fraction === null || layer.zero_weight_fraction === undefined ? "-" : `${Math.round(layer.zero_weight_fraction * 100)} %`)));
  const problems = report.problems.map((p) => h("li", { class: p.severity }, `${p.severity}: `, p.layer === null || p.layer === undefined ? "" : `layer ${p.layer}: `, p.message, ` (${p.code})`));
  const cores = coreUsage(report).map((usage) => h("div", { class: "core" },
    h("h3", {}, `core ${usage.core} (layers ${usage.layers.join(", ")})`),
    bar("kernel", usage.core, usage.kernel), bar("neuron", usage.core, usage.neuron)));
  const remove = async () => {
    try { await del(`v1/models/${model.id}`); location.hash = "#/models"; } catch (error) { showError(error); }
  };
  return h("section", { id: "model" },
    h("h1", {}, model.name),
    h("p", {}, `model ${model.id} by ${model.owner}, ${model.format}, ${bytes(model.size_bytes)}, chip ${report.chip}, input ${report.input_shape.join("x")}`),
    problems.length ? h("ul", { id: "problems" }, problems) : h("p", {}, "No warnings."),
    h("h2", {}, "Layers"),
    table(["Layer", "Kind", "Core", "Shape", "Kernel memory", "Neuron memory", "Zero weights"], rows),
    h("h2", {}, "Memory per core"),
    h("div", { id: "cores" }, cores),
    viewer.canWrite && (viewer.isAdmin || model.owner === viewer.user.name) ? h("button", { class: "danger", id: "model-delete", onclick: remove }, "Delete model") : null);
}
