// The public API, as the dashboard calls it. The token lives in sessionStorage only (gone when
// the tab closes) and travels in the Authorization header; for the live view's WebSocket, as a
// subprotocol (never in a URL, which proxies and servers log).

const TOKEN_KEY = "specklab.token";

export const viewer = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  user: null,
  get canWrite() { return this.user !== null && this.user.role !== "observer"; },
  get isAdmin() { return this.user !== null && this.user.role === "admin"; },
};

export class ErrorAnswer extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || "error";
    this.detail = body.detail;
  }
}

// Relative to the page, so a path prefix in front of the daemon is kept.
export function apiUrl(path) {
  return new URL(path, document.baseURI);
}

export async function request(method, path, { json, form, raw, headers: extra } = {}) {
  const headers = { Authorization: `Bearer ${viewer.token}`, ...extra };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(apiUrl(path), { method, headers, body });
  if (!response.ok) {
    let error = { message: `${response.status} ${response.statusText}` };
    try { error = await response.json(); } catch { /* not JSON: keep the status line */ }
    throw new ErrorAnswer(response.status, error);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => request("GET", path);
export const post = (path, json) => request("POST", path, { json });
export const patch = (path, json) => request("PATCH", path, { json });
export const del = (path) => request("DELETE", path);

// A file behind the token: fetched with the header, then saved from a blob URL.
export async function download(path, filename) {
  const response = await request("GET", path, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function liveSocket(deviceId, { sensor }) {
  const url = apiUrl(`v1/devices/${encodeURIComponent(deviceId)}/live${sensor ? "?sensor=true" : ""}`);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url, ["specklab.live", `bearer.${viewer.token}`]);
  socket.binaryType = "arraybuffer";
  return socket;
}
