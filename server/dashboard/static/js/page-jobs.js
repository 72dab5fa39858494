// The Jobs page: evaluation jobs with their state, progress and ETA (polled while any runs),
// and one job's result: accuracy, per-class accuracy, confusion matrix, cost per layer, the
// reproducibility record and the downloads. Owners and admins cancel unfinished jobs.
import { del, download, get, viewer } from "./api.js";
import { duration, h, table, when } from "./dom.js";
import { onLeave, refresh, showError, showInfo } from "./app.js";

const POLL_MS = 1000;
const UNFINISHED = new Set(["queued", "running"]);

export async function jobsPage(jobId) {
  if (jobId !== undefined) return jobPage(await get(`v1/jobs/${encodeURIComponent(jobId)}`));
  const jobs = await get("v1/jobs");
  const list = table(["Id", "Owner", "Model", "Dataset", "State", "Progress", "ETA", "Submitted", ""], jobs.map(jobRow));
  pollWhileRunning(jobs, async () => {
    const now = await get("v1/jobs");
    list.tBodies[0].replaceChildren(...now.map(jobRow));
    return now;
  });
  return h("section", { id: "jobs" },
    h("h1", {}, "Evaluation jobs"),
    h("p", { class: "muted" }, "Submit with `specklab evaluate MODEL DATASET` or `lab.evaluate(...)`; they run on the lab's virtual devkits."),
    jobs.length ? list : h("p", {}, "No jobs yet."));
}

// Polls while a job is unfinished; `update` draws the new list and returns it.
function pollWhileRunning(jobs, update) {
  if (!jobs.some((job) => UNFINISHED.has(job.state))) return;
  let latest = jobs;
  const timer = setInterval(async () => {
    try { latest = await update(); } catch (error) { clearInterval(timer); showError(error); return; }
    if (!latest.some((job) => UNFINISHED.has(job.state))) clearInterval(timer);
  }, POLL_MS);
  onLeave(() => clearInterval(timer));
}

function jobRow(job) {
  return h("tr", { dataset: { job: String(job.id), state: job.state } },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, String(job.id))),
    h("td", {}, job.owner),
    h("td", {}, h("a", { href: `#/models/${job.model_id}` }, String(job.model_id))),
    h("td", {}, String(job.dataset_id)),
    h("td", { class: `job-state ${job.state}` }, job.state),
    h("td", {}, progressBar(job)),
    h("td", { class: "eta" }, job.eta_s === null || !UNFINISHED.has(job.state) ? "" : duration(job.eta_s)),
    h("td", {}, when(job.created_at)),
    h("td", {}, cancelButton(job)));
}

function progressBar(job) {
  const percent = Math.round(100 * job.progress);
  return h("div", { class: "bar progress", dataset: { done: String(job.samples_done), samples: String(job.samples) } },
    h("div", { class: "fill", style: { width: `${percent}%` } }),
    h("span", {}, `${job.samples_done} / ${job.samples} samples`));
}

function cancelButton(job) {
  const mayCancel = viewer.canWrite && (viewer.isAdmin || job.owner === viewer.user.name);
  if (!mayCancel || !UNFINISHED.has(job.state)) return null;
  const cancel = async () => {
    try {
      await del(`v1/jobs/${job.id}`);
      showInfo(`Job ${job.id} cancelled.`);
      refresh();
    } catch (error) { showError(error); }
  };
  return h("button", { class: "danger job-cancel", onclick: cancel }, "Cancel");
}

async function jobPage(job) {
  if (UNFINISHED.has(job.state)) {
    // Drawn again once it finishes, with its result.
    pollWhileRunning([job], async () => {
      const now = await get(`v1/jobs/${job.id}`);
      if (!UNFINISHED.has(now.state)) refresh();
      return [now];
    });
  }
  const summary = job.state === "done" ? await get(`v1/jobs/${job.id}/summary`) : null;
  return h("section", { id: "job", dataset: { state: job.state } },
    h("h1", {}, `Job ${job.id}: model ${job.model_id} on dataset ${job.dataset_id}`),
    h("p", {}, `${job.state}, by ${job.owner}, submitted ${when(job.created_at)}`,
      job.finished_at ? `, finished ${when(job.finished_at)}` : ""),
    progressBar(job),
    job.error ? h("p", { class: "error", id: "job-error" }, job.error) : null,
    cancelButton(job),
    summary ? result(job, summary) : null);
}

function result(job, summary) {
  const base = `v1/jobs/${job.id}`;
  return h("div", { id: "job-result" },
    h("p", {},
      h("button", { id: "download-summary", onclick: () => download(`${base}/summary`, `job-${job.id}-summary.json`).catch(showError) }, "Summary (JSON)"), " ",
      h("button", { id: "download-samples", onclick: () => download(`${base}/samples`, `job-${job.id}-samples.npz`).catch(showError) }, "Per-sample rows (.npz)")),
    h("p", { class: "accuracy" }, "Accuracy ", h("strong", { id: "job-accuracy" }, percent(summary.accuracy)),
      ` over ${job.samples} samples`,
      summary.mean_latency_us === null ? "" : `; first output spike after ${Math.round(summary.mean_latency_us).toLocaleString()} µs on average`,
      `; wall time ${summary.wall_time_s.toFixed(2)} s (${summary.sample_time_s.toFixed(2)} s summed over samples)`),
    h("div", { class: "live-grid" },
      h("div", {}, h("h2", {}, "Confusion matrix"), confusion(summary)),
      h("div", {}, h("h2", {}, "Cost per sample"), costTable(summary))),
    h("h2", {}, "Reproducibility record"),
    record(summary.reproducibility));
}

function percent(share) {
  return share === null ? "-" : `${(100 * share).toFixed(1)} %`;
}

// Rows: labels; columns: predictions, then samples without output; the class's accuracy last.
function confusion(summary) {
  const classes = summary.confusion.length;
  const most = Math.max(1, ...summary.confusion.flat());
  const rows = summary.confusion.map((counts, label) => h("tr", { dataset: { label: String(label) } },
    h("th", {}, String(label)),
    counts.map((count, predicted) => h("td", {
      class: predicted === label ? "diagonal" : "",
      style: { background: `rgba(37, 99, 235, ${(0.6 * count) / most})` },
    }, String(count))),
    h("td", { class: "muted" }, String(summary.no_output[label])),
    h("td", { class: "class-accuracy" }, percent(summary.per_class_accuracy[label]))));
  const predicted = Array.from({ length: classes }, (_, i) => h("th", {}, String(i)));
  return h("table", { id: "confusion", class: "matrix" },
    h("thead", {}, h("tr", {}, h("th", {}, "label \\ predicted"), predicted, h("th", {}, "none"), h("th", {}, "accuracy"))),
    h("tbody", {}, rows));
}

function costTable(summary) {
  const rows = summary.layers.map((layer, i) => h("tr", {},
    h("td", {}, String(layer)),
    h("td", {}, summary.mean_spikes_per_layer[i].toFixed(1)),
    h("td", {}, summary.mean_synops_per_layer[i].toFixed(0))));
  return table(["Layer", "Spikes", "Synaptic ops"], rows);
}

function record(reproducibility) {
  const { options, compile_options: compile, ...hashes } = reproducibility;
  const entries = [...Object.entries(hashes), ["compile options", JSON.stringify(compile)], ["options", JSON.stringify(options)]];
  return h("dl", { id: "job-record" }, entries.flatMap(([name, value]) => [
    h("dt", {}, name.replaceAll("_", " ")),
    h("dd", { dataset: { field: name } }, value === null ? "none" : String(value)),
  ]));
}
