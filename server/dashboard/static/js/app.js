// The dashboard's shell: sign-in, navigation (hash routes, so every URL stays relative) and
// the pages.
import { ErrorAnswer, get, viewer } from "./api.js";
import { h } from "./dom.js";
import { adminPage } from "./page-admin.js";
import { devicePage } from "./page-device.js";
import { jobsPage } from "./page-jobs.js";
import { labPage } from "./page-lab.js";
import { modelsPage } from "./page-models.js";
import { recordingsPage } from "./page-recordings.js";

const main = document.getElementById("main");
const notice = document.getElementById("notice");

const pages = {
  lab: labPage,
  device: devicePage,
  models: modelsPage,
  recordings: recordingsPage,
  jobs: jobsPage,
  admin: adminPage,
};

// Pages register what must stop when they are left (sockets, timers).
let cleanups = [];
export function onLeave(cleanup) { cleanups.push(cleanup); }

export function showError(error) {
  notice.hidden = false;
  notice.className = "error";
  notice.textContent = error instanceof ErrorAnswer ? `${error.message} (${error.code})` : String(error.message || error);
}

export function showInfo(text) {
  notice.hidden = false;
  notice.className = "info";
  notice.textContent = text;
}

// Draws the current page again (after an action), keeping the notice that reports it.
export function refresh() { route(); }

function clearNotice() { notice.hidden = true; notice.textContent = ""; }

function signInForm() {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", placeholder: "spk_...", required: true });
  const form = h("form", { id: "sign-in", class: "card" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste an API token (from your lab's admin, or `specklab token create`). It is kept in this tab only."),
    h("label", {}, "API token ", input),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    viewer.token = input.value.trim();
    if (await signIn()) route();
  });
  return form;
}

async function signIn() {
  try {
    viewer.user = await get("v1/users/me");
  } catch (error) {
    viewer.token = null;
    viewer.user = null;
    showError(error);
    return false;
  }
  clearNotice();
  return true;
}

function showShell() {
  const signedIn = viewer.user !== null;
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  document.querySelector("[data-admin]").hidden = !viewer.isAdmin;
  document.getElementById("who").textContent = signedIn ? `${viewer.user.name} (${viewer.user.role})` : "";
}

async function route() {
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
  if (viewer.user === null && viewer.token && !(await signIn())) viewer.token = null;
  showShell();
  if (viewer.user === null) {
    main.replaceChildren(signInForm());
    return;
  }
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = pages[name] || labPage;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.dataset.page === (pages[name] ? name : "lab"));
  }
  main.replaceChildren(h("p", { class: "loading" }, "Loading..."));
  try {
    main.replaceChildren(await page(...args));
  } catch (error) {
    main.replaceChildren();
    showError(error);
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  viewer.token = null;
  viewer.user = null;
  location.hash = "";
  route();
});
window.addEventListener("hashchange", () => { clearNotice(); route(); });
route();
