// The Lab page: every device of the lab, and a day of bookings per device where users book,
// extend and cancel by clicking.
import { del, get, post, viewer } from "./api.js";
import { h, duration, table, when } from "./dom.js";
import { refresh, showError, showInfo } from "./app.js";

const SLOT_MINUTES = 15;
const SLOTS = (24 * 60) / SLOT_MINUTES;
const LENGTHS = [15, 30, 60, 120, 240];

function dayStart(offsetDays) {
  const day = new Date();
  day.setHours(0, 0, 0, 0);
  day.setDate(day.getDate() + offsetDays);
  return day;
}

export async function labPage(offset = "0") {
  const days = Number.parseInt(offset, 10) || 0;
  const start = dayStart(days);
  const query = new URLSearchParams({ start: start.toISOString(), hours: "24" });
  const [list, overview] = await Promise.all([get("v1/devices"), get(`v1/lab/overview?${query}`)]);
  const running = new Map(overview.deployments.map((d) => [d.device_id, d]));
  const now = new Date(overview.now);

  const rows = list.devices.map((device) => {
    const deployment = running.get(device.id);
    const free = device.booking ? duration((new Date(device.booking.ends_at) - now) / 1000) : "free now";
    return h("tr", { dataset: { device: device.id } },
      h("td", {}, h("a", { href: `#/device/${encodeURIComponent(device.id)}` }, device.id)),
      h("td", {}, device.host),
      h("td", {}, h("span", { class: `status ${device.status}` }, device.status)),
      h("td", {}, device.booking ? device.booking.user_name : "-"),
      h("td", {}, deployment ? deployment.summary : "-"),
      h("td", {}, free));
  });

  const section = h("section", { id: "lab" },
    h("h1", {}, "Lab"),
    table(["Device", "Host", "State", "Holder", "Deployment", "Free in"], rows),
    h("h2", {}, "Bookings ",
      h("a", { href: `#/lab/${days - 1}`, class: "button" }, "<"),
      ` ${start.toLocaleDateString()} `,
      h("a", { href: `#/lab/${days + 1}`, class: "button" }, ">")),
    timeline(list.devices, overview.bookings, start, now));
  return section;
}

function timeline(devices, bookings, start, now) {
  const form = h("div", { id: "booking-form" });
  const hours = h("div", { class: "timeline-hours" },
    Array.from({ length: 24 }, (_, hour) => h("span", {}, String(hour).padStart(2, "0"))));
  const rows = devices.map((device) => {
    const mine = bookings.filter((b) => b.device_id === device.id);
    const row = h("div", { class: "timeline-row", dataset: { device: device.id } });
    for (let slot = 0; slot < SLOTS; slot += 1) {
      const slotStart = new Date(start.getTime() + slot * SLOT_MINUTES * 60000);
      const slotEnd = new Date(slotStart.getTime() + SLOT_MINUTES * 60000);
      const past = slotEnd <= now;
      const cell = h("button", {
        class: `slot${past ? " past" : ""}`,
        title: `${device.id} ${slotStart.toLocaleTimeString([], { timeStyle: "short" })}`,
        disabled: past || !viewer.canWrite,
        dataset: { slot: String(slot) },
        onclick: () => bookingForm(form, device, bookings, slotStart < now ? now : slotStart, now),
      });
      row.append(cell);
    }
    for (const booking of mine) row.append(bookingBlock(form, booking, start));
    return h("div", { class: "timeline-line" }, h("span", { class: "timeline-label" }, device.id), row);
  });
  return h("div", { class: "timeline" }, h("div", { class: "timeline-line" }, h("span", { class: "timeline-label" }), hours), rows, form);
}

function bookingBlock(form, booking, start) {
  const dayMs = 24 * 3600 * 1000;
  const from = Math.max(0, new Date(booking.starts_at) - start) / dayMs;
  const to = Math.min(dayMs, new Date(booking.ends_at) - start) / dayMs;
  const block = h("button", {
    class: `booking${booking.mine ? " mine" : ""}`,
    style: { left: `${from * 100}%`, width: `${Math.max(0.3, (to - from) * 100)}%` },
    title: `${booking.user_name}: ${when(booking.starts_at)} - ${when(booking.ends_at)}`,
    dataset: { booking: String(booking.id) },
    disabled: !(booking.mine && viewer.canWrite),
    onclick: () => bookingActions(form, booking),
  }, booking.user_name);
  return block;
}

function conflicts(bookings, deviceId, from, minutes) {
  const to = new Date(from.getTime() + minutes * 60000);
  return bookings.filter((b) => b.device_id === deviceId && new Date(b.starts_at) < to && new Date(b.ends_at) > from);
}

function bookingForm(form, device, bookings, from, now) {
  const length = h("select", { id: "booking-minutes" }, LENGTHS.map((m) => h("option", { value: String(m) }, `${m} min`)));
  const warning = h("p", { id: "booking-conflict", class: "conflict" });
  const submit = h("button", { type: "submit", id: "booking-submit" }, "Book");
  const check = () => {
    const clash = conflicts(bookings, device.id, from, Number(length.value));
    warning.textContent = clash.map((b) => `Conflicts with ${b.user_name}'s booking ${when(b.starts_at)} - ${when(b.ends_at)}`).join("; ");
    submit.disabled = clash.length > 0;
  };
  length.addEventListener("change", check);
  const element = h("form", { class: "card" },
    h("h3", {}, `Book ${device.id} from ${when(from)}`),
    h("label", {}, "for ", length), " ", submit, warning);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { device_id: device.id, minutes: Number(length.value) };
    if (from > now) body.starts_at = from.toISOString();
    try {
      const booking = await post("v1/bookings", body);
      showInfo(`Booked ${booking.device_id} until ${when(booking.ends_at)} (booking ${booking.id}).`);
      refresh();
    } catch (error) {
      showError(error);
    }
  });
  form.replaceChildren(element);
  check();
}

function bookingActions(form, booking) {
  const act = (call, message) => async () => {
    try {
      await call();
      showInfo(message);
      refresh();
    } catch (error) {
      showError(error);
    }
  };
  form.replaceChildren(h("div", { class: "card" },
    h("h3", {}, `Your booking of ${booking.device_id}: ${when(booking.starts_at)} - ${when(booking.ends_at)}`),
    h("button", { id: "booking-extend", onclick: act(() => post(`v1/bookings/${booking.id}/extend`, { minutes: SLOT_MINUTES }), "Extended by 15 min.") }, "Extend 15 min"),
    " ",
    h("button", { id: "booking-cancel", class: "danger", onclick: act(() => del(`v1/bookings/${booking.id}`), "Booking cancelled.") }, "Cancel booking")));
}
