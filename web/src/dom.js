// Small DOM helpers. Every piece of data reaches the page through
// textContent or a text node, never through innerHTML, so a message or a
// room name can hold any markup and still render as text.

// h creates an element. props: class, text, on<Event> handlers, and other
// attributes set with setAttribute (never "on..." strings, never innerHTML).
// children: nodes, strings (as text nodes), or null/false (skipped).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === "value") el.value = v;
    else if (k === "checked" || k === "disabled" || k === "hidden") el[k] = Boolean(v);
    else if (/^on/i.test(k)) throw new Error("refusing attribute " + k);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// replace empties el and appends children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// randomID returns a 128-bit random hex id. crypto.randomUUID exists only in
// secure contexts, and the page may be served over plain http on a LAN.
export function randomID() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });

// Times are shown in the viewer's zone (Intl's default); the full date and
// time, with the zone, are in the element's title.
export function formatTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return timeFmt.format(d);
}
export function formatDateTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return dateTimeFmt.format(d);
}
export function formatDay(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return dayFmt.format(d);
}
export function dayKey(iso) {
  const d = new Date(iso);
  return isNaN(d) ? "" : `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}
export function fullTimeTitle(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  return d.toLocaleString() + (zone ? " (" + zone + ")" : "");
}
