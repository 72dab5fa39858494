// The Admin page: users (role changes, deletion), tokens (a new token's secret is shown once),
// preempting bookings, and the audit log with filters.
import { del, get, patch, post } from "./api.js";
import { h, table, when } from "./dom.js";
import { refresh, showError, showInfo } from "./app.js";

export async function adminPage() {
  const [users, bookings] = await Promise.all([get("v1/users"), get("v1/bookings?current=true")]);
  const tokens = h("div", { id: "tokens" });
  const audit = h("div", { id: "audit" });
  const page = h("section", { id: "admin" },
    h("h1", {}, "Admin"),
    h("h2", {}, "Users"), usersTable(users, tokens), newUserForm(),
    tokens,
    h("h2", {}, "Current bookings"), bookingsTable(bookings),
    h("h2", {}, "Audit log"), auditFilters(audit), audit);
  return page;
}

const ROLES = ["user", "observer", "admin"];

function usersTable(users, tokens) {
  return table(["Id", "Name", "Role", "Since", ""], users.map((u) => h("tr", { dataset: { user: String(u.id) } },
    h("td", {}, String(u.id)), h("td", {}, u.name), h("td", {}, roleSelect(u)), h("td", {}, when(u.created_at)),
    h("td", {},
      h("button", { class: "show-tokens", onclick: () => showTokens(u, tokens) }, "Tokens"), " ",
      h("button", { class: "danger delete-user", onclick: () => deleteUser(u) }, "Delete")))));
}

// The daemon refuses to demote or delete the last admin (409 last_admin): its message is shown.
function roleSelect(user) {
  const select = h("select", { class: "user-role", "aria-label": `role of ${user.name}` },
    ROLES.map((r) => h("option", { value: r, selected: r === user.role }, r)));
  select.addEventListener("change", async () => {
    try {
      await patch(`v1/users/${encodeURIComponent(user.name)}`, { role: select.value });
      showInfo(`${user.name} is now ${select.value}.`);
      refresh();
    } catch (error) { select.value = user.role; showError(error); }
  });
  return select;
}

async function deleteUser(user) {
  if (!window.confirm(`Delete ${user.name} with their tokens, bookings, models and recordings?`)) return;
  try {
    await del(`v1/users/${encodeURIComponent(user.name)}`);
    showInfo(`${user.name} was deleted.`);
    refresh();
  } catch (error) { showError(error); }
}

function newUserForm() {
  const name = h("input", { id: "new-user-name", required: true, maxlength: "64", placeholder: "name" });
  const role = h("select", { id: "new-user-role" }, ROLES.map((r) => h("option", { value: r }, r)));
  const form = h("form", { id: "new-user" }, "New user ", name, " ", role, " ", h("button", { type: "submit" }, "Create"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await post("v1/users", { name: name.value, role: role.value }); refresh(); } catch (error) { showError(error); }
  });
  return form;
}

async function showTokens(user, box) {
  try {
    const tokens = await get(`v1/tokens?user_id=${user.id}`);
    const name = h("input", { id: "new-token-name", required: true, maxlength: "64", value: "dashboard" });
    const days = h("input", { id: "new-token-days", type: "number", min: "1", max: "3650", value: "90" });
    const secret = h("p", { id: "new-token-secret" });
    const form = h("form", { id: "new-token" }, "New token ", name, " valid for ", days, " days ", h("button", { type: "submit" }, "Create"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const created = await post("v1/tokens", { name: name.value, user_id: user.id, expires_in_days: Number(days.value) });
        secret.replaceChildren("Copy it now, it is shown only once: ", h("code", {}, created.token));
      } catch (error) { showError(error); }
    });
    const rows = tokens.map((t) => h("tr", {},
      h("td", {}, String(t.id)), h("td", {}, t.name), h("td", {}, t.prefix), h("td", {}, t.expires_at ? when(t.expires_at) : "never"),
      h("td", {}, t.revoked_at ? `revoked ${when(t.revoked_at)}` : t.last_used_at ? `used ${when(t.last_used_at)}` : "unused"),
      h("td", {}, t.revoked_at ? "" : h("button", { class: "danger", onclick: () => del(`v1/tokens/${t.id}`).then(() => showTokens(user, box)).catch(showError) }, "Revoke"))));
    box.replaceChildren(h("h2", {}, `Tokens of ${user.name}`), table(["Id", "Name", "Prefix", "Expires", "State", ""], rows), form, secret);
  } catch (error) { showError(error); }
}

function bookingsTable(bookings) {
  if (!bookings.length) return h("p", {}, "No current bookings.");
  return table(["Id", "Device", "User", "From", "To", "Preempt"], bookings.map((b) => {
    const reason = h("input", { class: "preempt-reason", maxlength: "200", placeholder: "reason" });
    const preempt = async () => {
      try { await post(`v1/bookings/${b.id}/preempt`, { reason: reason.value }); showInfo(`Booking ${b.id} preempted.`); refresh(); } catch (error) { showError(error); }
    };
    return h("tr", { dataset: { booking: String(b.id) } },
      h("td", {}, String(b.id)), h("td", {}, b.device_id), h("td", {}, b.user_name), h("td", {}, when(b.starts_at)), h("td", {}, when(b.ends_at)),
      h("td", {}, reason, h("button", { class: "danger preempt", onclick: preempt }, "Preempt")));
  }));
}

function auditFilters(box) {
  const action = h("input", { id: "audit-action", placeholder: "action, e.g. booking." });
  const actor = h("input", { id: "audit-actor", type: "number", min: "1", placeholder: "actor id" });
  const target = h("input", { id: "audit-target", placeholder: "target, e.g. device:..." });
  const form = h("form", { id: "audit-filters" }, action, " ", actor, " ", target, " ", h("button", { type: "submit" }, "Filter"));
  const load = async () => {
    const query = new URLSearchParams({ limit: "200" });
    if (action.value) query.set("action", action.value);
    if (actor.value) query.set("actor_id", actor.value);
    if (target.value) query.set("target", target.value);
    try {
      const entries = await get(`v1/audit?${query}`);
      box.replaceChildren(table(["When", "Who", "Action", "Target", "Detail", "Host"], entries.map((e) => h("tr", { class: "audit-entry" },
        h("td", {}, when(e.at)), h("td", {}, e.actor_name), h("td", {}, e.action), h("td", {}, e.target),
        h("td", {}, e.detail ? JSON.stringify(e.detail) : ""), h("td", {}, e.host_name)))));
    } catch (error) { showError(error); }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
  return form;
}
