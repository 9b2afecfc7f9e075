// The mulchat page: log in, rooms, conversation, sessions.
//
// State lives in plain objects; the sidebar and panels are re-rendered from
// it, while a conversation's message list is updated in place (messages are
// inserted by sequence number) so scroll position and pending sends survive.

import { API, APIError, friendlyError } from "./api.js";
import { Chat, newSeed, presenceStatuses } from "./chat.js";
import { h, replace, randomID, formatTime, formatDateTime, formatDay, dayKey, fullTimeTitle } from "./dom.js";

const PAGE = 50; // messages per history page
const MAX_TEXT = 4000; // mulchat.MessageMaxChars
const STORE_KEY = "mulchat.session";

const root = document.getElementById("app");

const state = {
  api: new API({ onUnauthorized: () => signOut("Your session has ended. Please log in again.") }),
  chat: null,
  user: null,
  stay: false,
  seed: null,
  rooms: new Map(), // id → room (with role when a member)
  convs: new Map(), // id → conversation
  unread: new Map(), // id → count
  online: new Set(), // ids of users known to be online
  members: new Map(), // room id → members (loaded for my rooms)
  openRoom: 0,
  conn: "disconnected",
  panel: "", // "", "members", "sessions"
  notice: "",
};

// ---------------------------------------------------------------- storage

// Remembered only with "stay signed in", and only for this tab
// (sessionStorage): the API token and the nkey seed.
function saveSession() {
  if (!state.stay) return;
  try {
    sessionStorage.setItem(
      STORE_KEY,
      JSON.stringify({ token: state.api.token, user: state.user, seed: new TextDecoder().decode(state.seed) }),
    );
  } catch {
    // storage disabled: stay signed in for this page load only
  }
}
function loadSession() {
  try {
    const raw = sessionStorage.getItem(STORE_KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}
function clearSession() {
  try {
    sessionStorage.removeItem(STORE_KEY);
  } catch {
    // nothing stored
  }
}

// The last message read per room is kept per user in localStorage (it is
// not secret) so unread counts survive a reload.
function lastReadKey() {
  return "mulchat.read." + (state.user ? state.user.id : 0);
}
function loadLastRead() {
  try {
    return new Map(Object.entries(JSON.parse(localStorage.getItem(lastReadKey()) || "{}")).map(([k, v]) => [Number(k), Number(v)]));
  } catch {
    return new Map();
  }
}
let lastRead = new Map();
function markRead(roomID, seq) {
  if (!seq || (lastRead.get(roomID) || 0) >= seq) return;
  lastRead.set(roomID, seq);
  try {
    localStorage.setItem(lastReadKey(), JSON.stringify(Object.fromEntries(lastRead)));
  } catch {
    // not persisted
  }
}

// ---------------------------------------------------------------- auth view

function renderAuth(mode = "login", message = "", error = "") {
  document.body.classList.remove("signed-in", "show-conv");
  const err = h("p", { class: "form-error", role: "alert", id: "auth-error", text: error });
  const username = h("input", { id: "username", name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false", maxlength: 64 });
  const password = h("input", {
    id: "password",
    name: "password",
    type: "password",
    required: true,
    autocomplete: mode === "login" ? "current-password" : "new-password",
    minlength: mode === "register" ? 10 : undefined,
  });
  const email = h("input", { id: "email", name: "email", type: "email", autocomplete: "email" });
  const stay = h("input", { id: "stay", name: "stay", type: "checkbox" });
  const submit = h("button", { type: "submit", class: "primary", id: "auth-submit", text: mode === "login" ? "Log in" : "Create account" });
  const form = h(
    "form",
    {
      class: "auth-form",
      id: mode + "-form",
      novalidate: true,
      onsubmit: async (ev) => {
        ev.preventDefault();
        err.textContent = "";
        const u = username.value.trim();
        const p = password.value;
        if (!u || !p) {
          err.textContent = "Enter a username and a password.";
          return;
        }
        submit.disabled = true;
        try {
          if (mode === "register") {
            await state.api.register(u, p, email.value.trim());
          }
          const res = await state.api.login(u, p);
          await startSession(res.token, res.user, stay.checked, null);
        } catch (e) {
          err.textContent = friendlyError(e, mode === "login" ? "login" : "register");
          submit.disabled = false;
          (e instanceof APIError && e.code === "unauthorized" ? password : username).focus();
        }
      },
    },
    h("label", { for: "username" }, "Username"),
    username,
    mode === "register" ? h("p", { class: "hint", text: "3–32 characters: a–z, 0–9, '_', '.', '-'" }) : null,
    h("label", { for: "password" }, "Password"),
    password,
    mode === "register" ? h("p", { class: "hint", text: "At least 10 characters." }) : null,
    mode === "register" ? h("label", { for: "email" }, "Email (optional)") : null,
    mode === "register" ? email : null,
    h("label", { class: "check" }, stay, " Stay signed in (this tab keeps your key until it is closed)"),
    err,
    submit,
  );
  replace(
    root,
    h(
      "main",
      { class: "auth" },
      h("h1", { text: "mulchat" }),
      message ? h("p", { class: "notice", role: "status", id: "signed-out", text: message }) : null,
      h(
        "nav",
        { class: "tabs", "aria-label": "Log in or register" },
        h("button", { type: "button", class: mode === "login" ? "tab active" : "tab", "aria-pressed": String(mode === "login"), onclick: () => renderAuth("login") }, "Log in"),
        h("button", { type: "button", class: mode === "register" ? "tab active" : "tab", "aria-pressed": String(mode === "register"), onclick: () => renderAuth("register") }, "Register"),
      ),
      form,
    ),
  );
  username.focus();
}

// startSession runs after login (or a reload with "stay signed in"): it
// makes or restores the nkey, obtains a credential and connects.
async function startSession(token, user, stay, seedText) {
  state.api.token = token;
  state.user = user;
  state.stay = stay;
  state.seed = seedText ? new TextEncoder().encode(seedText) : newSeed();
  state.rooms.clear();
  state.convs.clear();
  state.unread.clear();
  state.online.clear();
  state.members.clear();
  state.openRoom = 0;
  state.panel = "";
  lastRead = loadLastRead();
  saveSession();
  // New public rooms are not announced: look again now and then.
  clearInterval(state.roomsTimer);
  state.roomsTimer = setInterval(() => loadRooms().catch(() => {}), 30000);
  renderShell();
  const chat = new Chat({
    api: state.api,
    user,
    seed: state.seed,
    onDelivery: onDelivery,
    onStatus: (s) => setConn(s),
    onReconnected: () => fillGaps(),
    onSignedOut: (reason) => signOut(reason),
  });
  state.chat = chat;
  await Promise.all([
    loadRooms().catch((e) => showError(friendlyError(e))),
    chat.start().catch((e) => {
      if (state.chat !== chat) return;
      if (e instanceof APIError && e.status === 403) {
        // The kept key was revoked while the tab was away.
        signOut("Your chat credential was revoked. You have been signed out.");
        return;
      }
      setConn("disconnected");
      showError("Cannot connect to chat: " + friendlyError(e), true);
    }),
  ]);
  if (state.chat !== chat) return;
  refreshUnread();
  const fromHash = Number((location.hash.match(/^#room-(\d+)$/) || [])[1] || 0);
  if (fromHash && state.rooms.has(fromHash)) openRoom(fromHash);
}

async function logout() {
  try {
    await state.api.logout();
  } catch {
    // the token may already be gone; we forget it either way
  }
  signOut("You have logged out.");
}

// signOut forgets the token and the seed and shows why.
function signOut(reason) {
  if (!state.user) return;
  if (state.chat) state.chat.stop();
  state.chat = null;
  clearInterval(state.roomsTimer);
  state.user = null;
  state.api.token = "";
  if (state.seed) state.seed.fill(0);
  state.seed = null;
  clearSession();
  history.replaceState(null, "", location.pathname);
  renderAuth("login", reason);
}

// ---------------------------------------------------------------- shell

const els = {};

function renderShell() {
  document.body.classList.add("signed-in");
  els.conn = h("span", { class: "conn", id: "conn-status", role: "status" });
  els.banner = h("div", { class: "banner", id: "error-banner", role: "alert", hidden: true });
  els.sidebar = h("nav", { class: "sidebar", id: "sidebar", "aria-label": "Rooms" });
  els.main = h("section", { class: "conversation", id: "conversation", "aria-label": "Conversation" });
  els.panel = h("aside", { class: "panel", id: "panel", hidden: true });
  replace(
    root,
    h(
      "header",
      { class: "top" },
      h("h1", { text: "mulchat" }),
      els.conn,
      h("span", { class: "spacer" }),
      h("span", { class: "me", id: "me", text: state.user.username }),
      h("button", { type: "button", id: "sessions-button", onclick: () => togglePanel("sessions") }, "Sessions"),
      h("button", { type: "button", id: "logout-button", onclick: logout }, "Log out"),
    ),
    els.banner,
    h("div", { class: "layout" }, els.sidebar, els.main, els.panel),
  );
  setConn(state.conn);
  buildSidebar();
  els.createRoom.querySelector("summary").addEventListener("click", () => (els.createRoom.dataset.touched = "1"));
  renderSidebar();
  renderConversation();
}

function setConn(s) {
  const changed = state.conn !== s;
  state.conn = s;
  if (!els.conn) return;
  if (changed) {
    // Our own presence counts in the rooms' online numbers.
    renderSidebar();
    renderRoomHeader();
  }
  const labels = {
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Disconnected — reconnecting…",
    disconnected: "Disconnected",
  };
  els.conn.textContent = labels[s] || s;
  els.conn.dataset.state = s;
}

let bannerTimer = 0;
function showError(text, sticky) {
  if (!els.banner) return;
  clearTimeout(bannerTimer);
  replace(els.banner, h("span", { text }), h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: () => (els.banner.hidden = true) }, "×"));
  els.banner.hidden = false;
  if (!sticky) bannerTimer = setTimeout(() => (els.banner.hidden = true), 8000);
}

// ---------------------------------------------------------------- rooms

async function loadRooms() {
  const res = await state.api.rooms();
  const seen = new Set();
  for (const r of res.rooms || []) {
    seen.add(r.id);
    state.rooms.set(r.id, r);
  }
  for (const id of [...state.rooms.keys()]) if (!seen.has(id)) state.rooms.delete(id);
  if (state.openRoom && !state.rooms.has(state.openRoom)) closeRoom();
  renderSidebar();
  if (state.openRoom) renderRoomHeader();
}

const isMember = (r) => Boolean(r && r.role);

// buildSidebar makes the sidebar's fixed parts once per session: the two
// room lists are re-rendered often (unread counts, presence), and the
// create-room form must not lose what someone is typing when they are.
function buildSidebar() {
  els.myRooms = h("div", { class: "room-list" });
  els.publicRooms = h("div", { class: "room-list" });
  const nameInput = h("input", { id: "new-room-name", name: "name", required: true, placeholder: "room-name", pattern: "[a-z0-9][a-z0-9_\\-]{1,63}", autocapitalize: "none", maxlength: 64 });
  const descInput = h("input", { id: "new-room-description", name: "description", placeholder: "Description (optional)", maxlength: 1000 });
  const pubInput = h("input", { id: "new-room-public", type: "checkbox", checked: true });
  const formErr = h("p", { class: "form-error", role: "alert" });
  const createForm = h(
    "form",
    {
      class: "create-room",
      id: "create-room-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        formErr.textContent = "";
        try {
          const room = await state.api.createRoom(nameInput.value.trim(), descInput.value.trim(), pubInput.checked);
          state.rooms.set(room.id, room);
          nameInput.value = descInput.value = "";
          openRoom(room.id);
        } catch (e) {
          formErr.textContent = friendlyError(e);
        }
      },
    },
    h("label", { for: "new-room-name" }, "Name"),
    nameInput,
    h("label", { for: "new-room-description", class: "sr-only" }, "Description"),
    descInput,
    h("label", { class: "check" }, pubInput, " Public (anyone can join)"),
    formErr,
    h("button", { type: "submit", id: "create-room-submit" }, "Create room"),
  );
  els.createRoom = h("details", { class: "create", open: true }, h("summary", { text: "Create a room" }), createForm);
  replace(
    els.sidebar,
    h("h2", { text: "My rooms" }),
    els.myRooms,
    h(
      "div",
      { class: "side-head" },
      h("h2", { text: "Public rooms" }),
      h("button", { type: "button", class: "link", id: "refresh-rooms", title: "Refresh the room list", "aria-label": "Refresh the room list", onclick: () => loadRooms().catch((e) => showError(friendlyError(e))) }, "↻"),
    ),
    els.publicRooms,
    els.createRoom,
  );
}

function renderSidebar() {
  if (!els.myRooms) return;
  const rooms = [...state.rooms.values()].sort((a, b) => a.name.localeCompare(b.name));
  const mine = rooms.filter(isMember);
  const others = rooms.filter((r) => !isMember(r));
  const roomItem = (r) => {
    const n = state.unread.get(r.id) || 0;
    const online = onlineCount(r.id);
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: "room" + (r.id === state.openRoom ? " active" : "") + (n ? " has-unread" : ""),
          "data-room": r.id,
          "aria-current": r.id === state.openRoom ? "true" : undefined,
          onclick: () => openRoom(r.id),
        },
        h("span", { class: "room-name", text: "#" + r.name }),
        !r.is_public ? h("span", { class: "tag", text: "private" }) : null,
        online ? h("span", { class: "online-count", title: online + " online", "aria-label": online + " online", text: "● " + online }) : null,
        n ? h("span", { class: "unread", "aria-label": n + " unread", text: n >= PAGE ? PAGE + "+" : String(n) }) : null,
      ),
    );
  };
  const key = JSON.stringify([
    state.openRoom,
    rooms.map((r) => [r.id, r.name, r.role, r.is_public, state.unread.get(r.id) || 0, onlineCount(r.id)]),
  ]);
  if (els.myRooms.dataset.key === key) return;
  els.myRooms.dataset.key = key;
  // Keep keyboard focus on the same room across the re-render.
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.room : undefined;
  replace(els.myRooms, mine.length ? h("ul", { class: "rooms", id: "my-rooms" }, mine.map(roomItem)) : h("p", { class: "empty", text: "No rooms yet: join one below or create one." }));
  replace(els.publicRooms, others.length ? h("ul", { class: "rooms", id: "public-rooms" }, others.map(roomItem)) : h("p", { class: "empty", text: "No other public rooms." }));
  if (focused) {
    const el = els.sidebar.querySelector(`button[data-room="${focused}"]`);
    if (el) el.focus();
  }
  // The form starts open for someone with no rooms, folded otherwise; once
  // it has been toggled by hand it stays as it is.
  if (!els.createRoom.dataset.touched) els.createRoom.open = mine.length === 0;
}

async function joinRoom(id) {
  try {
    const room = await state.api.joinRoom(id);
    state.rooms.set(room.id, room);
    renderSidebar();
    renderRoomHeader();
    renderComposer();
    const conv = getConv(id);
    refreshMembers(id);
    if (!conv.loaded) await loadNewest(conv);
  } catch (e) {
    showError(friendlyError(e));
  }
}

async function leaveRoom(id) {
  const r = state.rooms.get(id);
  if (!r) return;
  if (!confirm(`Leave #${r.name}?`)) return;
  try {
    await state.api.leaveRoom(id);
    state.convs.delete(id);
    state.unread.delete(id);
    await loadRooms();
    closeRoom();
  } catch (e) {
    showError(friendlyError(e));
  }
}

// ---------------------------------------------------------------- conversation

// A conversation holds the messages loaded for a room, keyed by seq (so a
// message delivered twice, or both live and by history, shows once), plus
// the sends not yet acknowledged, keyed by client_msg_id.
function getConv(id) {
  let c = state.convs.get(id);
  if (!c) {
    c = {
      id,
      bySeq: new Map(),
      seqs: [], // sorted ascending
      pending: new Map(),
      loaded: false,
      hasMore: true,
      loading: false,
      el: null, // the message list element while open
      pendingEl: null,
    };
    state.convs.set(id, c);
  }
  return c;
}

function openRoom(id) {
  if (!state.rooms.has(id)) return;
  state.openRoom = id;
  history.replaceState(null, "", "#room-" + id);
  document.body.classList.add("show-conv");
  renderSidebar();
  renderConversation();
  if (state.panel === "members") renderMembers();
  const conv = getConv(id);
  const room = state.rooms.get(id);
  // History is for members; a public room shows its Join button first.
  if (!conv.loaded && isMember(room)) loadNewest(conv);
  else readUpTo(conv);
  if (isMember(room) && !state.members.has(id)) refreshMembers(id);
  refreshPresence(id);
  const input = document.getElementById("composer-input");
  if (input && !matchMedia("(pointer: coarse)").matches) input.focus();
}

function closeRoom() {
  state.openRoom = 0;
  history.replaceState(null, "", location.pathname);
  document.body.classList.remove("show-conv");
  if (state.panel === "members") togglePanel("members");
  renderSidebar();
  renderConversation();
}

function renderConversation() {
  if (!els.main) return;
  const id = state.openRoom;
  if (!id) {
    replace(els.main, h("div", { class: "placeholder" }, h("p", { text: "Pick a room on the left, or create one." })));
    return;
  }
  const conv = getConv(id);
  els.roomHeader = h("div", { class: "room-header" });
  conv.el = h("ol", { class: "messages", id: "messages", "aria-label": "Messages", "aria-live": "polite" });
  conv.pendingEl = h("ol", { class: "messages pending", id: "pending-messages", "aria-label": "Messages being sent" });
  els.olderBtn = h("button", { type: "button", class: "link older", id: "load-older", onclick: () => loadOlder(conv) }, "Load older messages");
  els.scroller = h(
    "div",
    { class: "scroller", id: "scroller", tabindex: "0", onscroll: () => onScroll(conv) },
    els.olderBtn,
    conv.el,
    conv.pendingEl,
  );
  els.jump = h("button", { type: "button", class: "jump", id: "jump-latest", hidden: true, onclick: () => scrollToBottom() }, "New messages ↓");
  els.composer = h("div", { class: "composer-wrap" });
  replace(els.main, els.roomHeader, els.scroller, els.jump, els.composer);
  for (const seq of conv.seqs) conv.el.appendChild(messageEl(conv.bySeq.get(seq)));
  for (const p of conv.pending.values()) conv.pendingEl.appendChild(pendingEl(conv, p));
  relabelDays(conv);
  updateOlder(conv);
  renderRoomHeader();
  renderComposer();
  scrollToBottom();
}

function renderRoomHeader() {
  const r = state.rooms.get(state.openRoom);
  if (!r || !els.roomHeader) return;
  const online = onlineCount(r.id);
  // Redraw only when something shown changed, so buttons keep focus and
  // are not replaced under a pointer.
  const key = JSON.stringify([r.id, r.name, r.description, r.role, online]);
  if (els.roomHeader.dataset.key === key) return;
  els.roomHeader.dataset.key = key;
  replace(
    els.roomHeader,
    h("button", { type: "button", class: "back", "aria-label": "Back to rooms", onclick: closeRoom }, "←"),
    h(
      "div",
      { class: "room-title" },
      h("h2", { id: "room-title", text: "#" + r.name }),
      r.description ? h("p", { class: "room-desc", text: r.description }) : null,
    ),
    online ? h("span", { class: "online-count", id: "online-count", text: online + " online" }) : null,
    isMember(r)
      ? [
          h("button", { type: "button", id: "members-button", onclick: () => togglePanel("members") }, "Members"),
          h("button", { type: "button", id: "leave-button", onclick: () => leaveRoom(r.id) }, "Leave"),
        ]
      : h("button", { type: "button", class: "primary", id: "join-button", onclick: () => joinRoom(r.id) }, "Join"),
  );
}

function renderComposer() {
  const r = state.rooms.get(state.openRoom);
  if (!r || !els.composer) return;
  if (!isMember(r)) {
    replace(els.composer, h("p", { class: "composer-note", text: "Join this room to send messages." }));
    return;
  }
  if (r.role === "reader") {
    replace(els.composer, h("p", { class: "composer-note", text: "You can read this room but not post in it." }));
    return;
  }
  const counter = h("span", { class: "counter", "aria-live": "polite" });
  const input = h("textarea", {
    id: "composer-input",
    rows: 1,
    placeholder: `Message #${r.name}`,
    "aria-label": `Message #${r.name}`,
    maxlength: MAX_TEXT,
    enterkeyhint: "send",
  });
  const send = () => {
    const text = input.value;
    if (!text.trim()) return;
    if ([...text].length > MAX_TEXT) {
      showError(`A message can hold at most ${MAX_TEXT} characters.`);
      return;
    }
    input.value = "";
    autosize();
    sendMessage(getConv(r.id), text);
  };
  const autosize = () => {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 200) + "px";
    const n = [...input.value].length;
    counter.textContent = n > MAX_TEXT - 500 ? `${n}/${MAX_TEXT}` : "";
  };
  input.addEventListener("keydown", (ev) => {
    // Enter sends; Shift+Enter (and Enter while an IME composes) is a newline.
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      send();
    }
  });
  input.addEventListener("input", autosize);
  replace(
    els.composer,
    h(
      "form",
      {
        class: "composer",
        id: "composer",
        onsubmit: (ev) => {
          ev.preventDefault();
          send();
          input.focus();
        },
      },
      input,
      counter,
      h("button", { type: "submit", class: "primary", id: "send-button" }, "Send"),
    ),
  );
}

function nearBottom() {
  // A scroll to the bottom is already due before the next frame: messages
  // that arrive meanwhile are read just the same.
  if (scrollQueued) return true;
  const s = els.scroller;
  return !s || s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}
// scrollToBottom scrolls before the next frame: reading scrollHeight forces
// a layout, so several inserts in one task share one.
let scrollQueued = false;
function scrollToBottom() {
  if (!els.scroller || scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => {
    scrollQueued = false;
    if (!els.scroller) return;
    els.scroller.scrollTop = els.scroller.scrollHeight;
    if (els.jump) els.jump.hidden = true;
  });
}

function onScroll(conv) {
  if (els.scroller.scrollTop < 120) loadOlder(conv);
  if (nearBottom()) {
    els.jump.hidden = true;
    readUpTo(conv);
  }
}

function updateOlder(conv) {
  if (!els.olderBtn || conv.el !== document.getElementById("messages")) return;
  els.olderBtn.hidden = !conv.loaded || !conv.hasMore;
  els.olderBtn.disabled = conv.loading;
  els.olderBtn.textContent = conv.loading ? "Loading…" : "Load older messages";
}

async function loadNewest(conv) {
  if (conv.loading) return;
  conv.loading = true;
  updateOlder(conv);
  try {
    const res = await state.api.messages(conv.id, 0, PAGE);
    const msgs = res.messages || [];
    const wasLoaded = conv.loaded;
    conv.loaded = true;
    if (!wasLoaded) conv.hasMore = msgs.length >= PAGE;
    const stick = nearBottom();
    insertMessages(conv, msgs);
    if (stick) scrollToBottom();
    readUpTo(conv);
  } catch (e) {
    if (conv.id === state.openRoom) showError("Could not load messages: " + friendlyError(e));
  } finally {
    conv.loading = false;
    updateOlder(conv);
  }
}

async function loadOlder(conv) {
  if (conv.loading || !conv.loaded || !conv.hasMore || conv.seqs.length === 0) return;
  conv.loading = true;
  updateOlder(conv);
  try {
    const res = await state.api.messages(conv.id, conv.seqs[0], PAGE);
    const msgs = res.messages || [];
    conv.hasMore = msgs.length >= PAGE;
    // Keep what the reader sees in place while older messages go above.
    const s = els.scroller;
    const before = s ? s.scrollHeight - s.scrollTop : 0;
    insertMessages(conv, msgs);
    if (s && conv.id === state.openRoom) s.scrollTop = s.scrollHeight - before;
  } catch (e) {
    showError("Could not load older messages: " + friendlyError(e));
  } finally {
    conv.loading = false;
    updateOlder(conv);
  }
}

// insertMessages adds messages not seen yet, each at its place by seq, and
// returns how many were new.
function insertMessages(conv, msgs) {
  let added = 0;
  for (const m of msgs) {
    if (!m || typeof m.seq !== "number" || conv.bySeq.has(m.seq)) continue;
    conv.bySeq.set(m.seq, m);
    // Binary search for the insertion point.
    let lo = 0;
    let hi = conv.seqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (conv.seqs[mid] < m.seq) lo = mid + 1;
      else hi = mid;
    }
    conv.seqs.splice(lo, 0, m.seq);
    added++;
    // Our own send, confirmed by delivery or history: drop its pending copy.
    if (m.client_msg_id && m.sender && m.sender.id === state.user.id) {
      const p = conv.pending.get(m.client_msg_id);
      if (p) {
        conv.pending.delete(m.client_msg_id);
        if (p.el) p.el.remove();
      }
    }
    if (conv.el) {
      const next = lo + 1 < conv.seqs.length ? conv.el.querySelector(`[data-seq="${conv.seqs[lo + 1]}"]`) : null;
      const el = messageEl(m);
      conv.el.insertBefore(el, next);
      relabelDay(el);
      if (next) relabelDay(next);
    }
  }
  return added;
}

function messageEl(m) {
  const mine = state.user && m.sender && m.sender.id === state.user.id;
  return h(
    "li",
    { class: "msg" + (mine ? " mine" : ""), "data-seq": m.seq, "data-day": dayKey(m.sent_at), "data-client-msg-id": m.client_msg_id || undefined },
    h("div", { class: "day", "aria-hidden": "true", text: formatDay(m.sent_at) }),
    h(
      "div",
      { class: "bubble" },
      h(
        "div",
        { class: "meta" },
        h("span", { class: "sender", text: (m.sender && m.sender.username) || "?" }),
        h("time", { datetime: m.sent_at, title: fullTimeTitle(m.sent_at), text: formatTime(m.sent_at) }),
      ),
      h("div", { class: "text", text: m.text }),
    ),
  );
}

// relabelDay shows the date line on el when it is the first message of its
// day; relabelDays does it for the whole list.
function relabelDay(el) {
  const prev = el.previousElementSibling;
  el.classList.toggle("first-of-day", !prev || prev.dataset.day !== el.dataset.day);
}
function relabelDays(conv) {
  let prev = "";
  for (const li of conv.el.children) {
    const d = li.dataset.day;
    li.classList.toggle("first-of-day", d !== prev);
    prev = d;
  }
}

function pendingEl(conv, p) {
  const status =
    p.status === "failed"
      ? h(
          "span",
          { class: "status failed", role: "alert" },
          "Not sent: " + p.error + " ",
          h("button", { type: "button", class: "retry", onclick: () => retrySend(conv, p) }, "Retry"),
          h("button", { type: "button", class: "link", onclick: () => discardPending(conv, p) }, "Discard"),
        )
      : h("span", { class: "status sending", text: "Sending…" });
  const el = h(
    "li",
    { class: "msg mine " + p.status, "data-client-msg-id": p.cmid },
    h("div", { class: "bubble" }, h("div", { class: "meta" }, h("span", { class: "sender", text: state.user.username }), status), h("div", { class: "text", text: p.text })),
  );
  p.el = el;
  return el;
}

function redrawPending(conv, p) {
  const old = p.el;
  const el = pendingEl(conv, p);
  if (old && old.parentNode) old.replaceWith(el);
  else if (conv.pendingEl && conv.id === state.openRoom) conv.pendingEl.appendChild(el);
}

// sendMessage shows the message at once as "sending", then either moves it
// into the conversation at its acknowledged seq or marks it failed with a
// retry that reuses the same client_msg_id (the router drops duplicates).
async function sendMessage(conv, text, p) {
  if (!p) {
    p = { cmid: randomID(), text, status: "sending", error: "" };
    conv.pending.set(p.cmid, p);
  }
  p.status = "sending";
  // The request goes out before the page draws anything, so layout work
  // never delays the send.
  const acked = state.chat
    ? state.chat.send(conv.id, p.text, p.cmid)
    : Promise.reject(Object.assign(new Error("Not connected to the chat server."), { code: "disconnected" }));
  redrawPending(conv, p);
  scrollToBottom();
  try {
    const ack = await acked;
    const a = (ack && (ack.message || ack)) || {};
    if (typeof a.seq !== "number") throw new Error("The server's answer had no sequence number.");
    const stick = nearBottom();
    insertMessages(conv, [
      {
        room_id: conv.id,
        seq: a.seq,
        sender: { id: state.user.id, username: state.user.username },
        text: a.text !== undefined ? a.text : p.text,
        sent_at: a.sent_at || new Date().toISOString(),
        client_msg_id: p.cmid,
      },
    ]);
    // insertMessages dropped the pending copy unless the message was
    // already there (delivered before the ack).
    conv.pending.delete(p.cmid);
    if (p.el) p.el.remove();
    if (stick) {
      scrollToBottom();
      readLatest(conv);
    }
  } catch (e) {
    if (!conv.pending.has(p.cmid)) return; // confirmed by delivery meanwhile
    p.status = "failed";
    p.error = sendErrorText(e);
    redrawPending(conv, p);
  }
}

function sendErrorText(e) {
  switch (e && e.code) {
    case "rate_limited":
      return "you are sending too fast — wait a moment.";
    case "forbidden":
      return e.message || "you may not post in this room.";
    case "timeout":
      return "the server did not answer.";
    case "disconnected":
      return "disconnected from the chat server.";
    case "unavailable":
      return "the chat service is unavailable.";
    default:
      return (e && e.message) || "unknown error.";
  }
}

function retrySend(conv, p) {
  sendMessage(conv, p.text, p);
}
function discardPending(conv, p) {
  conv.pending.delete(p.cmid);
  if (p.el) p.el.remove();
}

// readUpTo marks the open, scrolled-to-bottom conversation as read.
function readUpTo(conv) {
  if (conv.id !== state.openRoom || document.hidden || !nearBottom()) return;
  readLatest(conv);
}

// readLatest marks the conversation read up to its newest message.
function readLatest(conv) {
  const last = conv.seqs[conv.seqs.length - 1];
  if (last) markRead(conv.id, last);
  if (state.unread.get(conv.id)) {
    state.unread.delete(conv.id);
    renderSidebar();
  }
}
// Escape closes the open panel, or on a phone goes back to the room list.
document.addEventListener("keydown", (ev) => {
  if (ev.key !== "Escape" || !state.user || ev.defaultPrevented) return;
  if (state.panel) {
    togglePanel(state.panel);
    ev.preventDefault();
  } else if (state.openRoom && matchMedia("(max-width: 700px)").matches) {
    closeRoom();
    ev.preventDefault();
  }
});

document.addEventListener("visibilitychange", () => {
  if (state.openRoom) readUpTo(getConv(state.openRoom));
});

// ---------------------------------------------------------------- deliveries

// onDelivery dispatches what arrives on chat.user.<uid>.>: messages on
// .msg, events (membership, presence, credential) on .event.
function onDelivery(kind, data) {
  if (!data || typeof data !== "object") return;
  if (kind === "msg" || (typeof data.seq === "number" && typeof data.text === "string")) {
    if (typeof data.seq === "number" && data.room_id) onMessage(data);
    return;
  }
  switch (data.type) {
    case "membership":
      onMembership(data);
      break;
    case "presence":
      onPresence(data);
      break;
    case "credential":
      onCredentialNotice(data);
      break;
    default:
  }
}

function onMessage(m) {
  const conv = getConv(m.room_id);
  const open = m.room_id === state.openRoom;
  const stick = open && nearBottom();
  const added = insertMessages(conv, [m]);
  if (!added) return;
  if (open && stick && !document.hidden) {
    scrollToBottom();
    readLatest(conv);
    return;
  }
  if (open && els.jump) els.jump.hidden = false;
  if (m.sender && m.sender.id !== state.user.id && m.seq > (lastRead.get(m.room_id) || 0)) {
    state.unread.set(m.room_id, (state.unread.get(m.room_id) || 0) + 1);
    renderSidebar();
  }
  if (!state.rooms.has(m.room_id)) loadRooms().catch(() => {});
}

let roomsTimer = 0;
function onMembership(ev) {
  const roomID = ev.room_id;
  const userID = ev.user_id;
  if (userID === state.user.id && (ev.change === "removed" || ev.change === "room_deleted")) {
    const r = state.rooms.get(roomID);
    if (r && roomID === state.openRoom) showError(ev.change === "removed" ? `You were removed from #${r.name}.` : `#${r.name} was deleted.`);
    state.convs.delete(roomID);
    state.unread.delete(roomID);
  }
  clearTimeout(roomsTimer);
  roomsTimer = setTimeout(() => loadRooms().catch(() => {}), 200);
  if (isMember(state.rooms.get(roomID)) && !(userID === state.user.id && ev.change !== "joined")) refreshMembers(roomID);
  if (state.panel === "members" && roomID === state.openRoom) fillMembers(true);
}

// onlineCount is how many members of a room are known to be online, this
// page's user included while connected (0 when the members are not known).
function onlineCount(roomID) {
  const members = state.members.get(roomID);
  if (!members) return 0;
  let n = 0;
  for (const m of members) if (state.online.has(m.user_id) || (m.user_id === state.user.id && state.conn === "connected")) n++;
  return n;
}

function onPresence(ev) {
  if (!ev.user_id) return;
  if (ev.status === "online") state.online.add(ev.user_id);
  else if (ev.status === "offline") state.online.delete(ev.user_id);
  else return;
  renderSidebar();
  renderRoomHeader();
  fillMembers(false);
}

// onCredentialNotice acts on the router's credential notices: after a
// revocation, or a key issued elsewhere, the page asks the API whether its
// own key is still the account's (the server also disconnects a revoked
// key); an expiring credential is renewed now.
function onCredentialNotice(ev) {
  if (!state.chat) return;
  if (ev.change === "revoked" || ev.change === "issued") {
    // "issued" may mean another device took over the account's key.
    state.chat.checkSignedOut(null);
  } else if (ev.change === "expiring") {
    state.chat.renew();
  }
}

// loadMembers fetches a room's members (for presence counts and the panel).
async function loadMembers(roomID) {
  try {
    const res = await state.api.members(roomID);
    state.members.set(roomID, res.members || []);
  } catch {
    state.members.delete(roomID);
  }
  return state.members.get(roomID);
}

// refreshMembers reloads a room's members and the counts that use them.
async function refreshMembers(roomID) {
  await loadMembers(roomID);
  renderSidebar();
  if (roomID === state.openRoom) renderRoomHeader();
  if (roomID === state.openRoom) fillMembers(false);
}

// refreshPresence asks the router who in a room is online
// (chat.api.<uid>.presence, answered {"members": [{"user_id", "username",
// "status"}]}). Presence events only announce changes, so without this the
// page knows only who came or went since it connected; an error answer
// leaves what the page knows unchanged.
async function refreshPresence(roomID) {
  if (!state.chat || !isMember(state.rooms.get(roomID))) return;
  try {
    const res = await state.chat.api2("presence", { room_id: roomID });
    // The answer is a snapshot: it also says who is offline, which corrects
    // an "online" from before a missed offline event.
    for (const [id, online] of presenceStatuses(res)) {
      if (online) state.online.add(id);
      else state.online.delete(id);
    }
    renderSidebar();
    if (roomID === state.openRoom) renderRoomHeader();
  } catch {
    // presence unavailable
  }
}

// refreshUnread counts, for each room of mine, the messages newer than the
// last one read here (at most a page).
async function refreshUnread() {
  const mine = [...state.rooms.values()].filter(isMember);
  await Promise.all(
    mine.map(async (r) => {
      if (r.id === state.openRoom) {
        // Its messages are on screen; who is online may have changed
        // while the page was disconnected.
        refreshPresence(r.id);
        return;
      }
      try {
        const res = await state.api.messages(r.id, 0, PAGE);
        const msgs = res.messages || [];
        const conv = state.convs.get(r.id);
        if (conv && conv.loaded) insertMessages(conv, msgs);
        const seen = lastRead.get(r.id) || 0;
        const n = msgs.filter((m) => m.seq > seen && m.sender && m.sender.id !== state.user.id).length;
        if (n) state.unread.set(r.id, n);
        else state.unread.delete(r.id);
      } catch {
        // counted next time
      }
      await loadMembers(r.id);
      refreshPresence(r.id);
    }),
  );
  renderSidebar();
}

// fillGaps runs after a reconnect: messages delivered while the connection
// was down are fetched from history (by seq, so nothing shows twice), and
// unread counts are recomputed.
async function fillGaps() {
  for (const conv of state.convs.values()) {
    if (!conv.loaded || !isMember(state.rooms.get(conv.id))) continue;
    const newest = conv.seqs[conv.seqs.length - 1] || 0;
    let before = 0;
    for (let page = 0; page < 20; page++) {
      let msgs;
      try {
        msgs = (await state.api.messages(conv.id, before, PAGE)).messages || [];
      } catch {
        break;
      }
      const stick = conv.id === state.openRoom && nearBottom();
      insertMessages(conv, msgs);
      if (stick) scrollToBottom();
      if (msgs.length < PAGE || msgs[0].seq <= newest) break;
      before = msgs[0].seq;
    }
  }
  await refreshUnread();
  // Pending sends that were lost with the connection stay as failed with
  // Retry; those the router did store come back through history above.
}

// ---------------------------------------------------------------- panels

function togglePanel(name) {
  state.panel = state.panel === name ? "" : name;
  els.panel.hidden = !state.panel;
  document.body.classList.toggle("show-panel", Boolean(state.panel));
  if (state.panel === "members") renderMembers();
  else if (state.panel === "sessions") renderSessions();
}

async function renderMembers() {
  const id = state.openRoom;
  const r = state.rooms.get(id);
  if (!r) return;
  const owner = r.role === "owner";
  const list = h("ul", { class: "members", id: "members-list" });
  const err = h("p", { class: "form-error", role: "alert" });
  let form = null;
  if (owner) {
    // Owners add people by name (the only way into a private room).
    const name = h("input", { id: "add-member-name", placeholder: "username", autocapitalize: "none", spellcheck: "false", maxlength: 64, required: true });
    const role = h("select", { id: "add-member-role", "aria-label": "Role" }, h("option", { value: "member" }, "member"), h("option", { value: "reader" }, "reader (read only)"), h("option", { value: "owner" }, "owner"));
    form = h(
      "form",
      {
        class: "add-member",
        id: "add-member-form",
        onsubmit: async (ev) => {
          ev.preventDefault();
          err.textContent = "";
          try {
            await state.api.addMember(id, name.value.trim(), role.value);
            name.value = "";
            fillMembers(true);
          } catch (e) {
            err.textContent = friendlyError(e);
          }
        },
      },
      h("label", { for: "add-member-name" }, "Add a member"),
      h("div", { class: "row" }, name, role, h("button", { type: "submit" }, "Add")),
    );
  }
  replace(
    els.panel,
    panelHeader(`Members of #${r.name}`),
    list,
    form,
    err,
    owner ? h("button", { type: "button", class: "danger", id: "delete-room", onclick: () => deleteRoom(id) }, "Delete room") : null,
  );
  els.membersList = list;
  els.membersErr = err;
  await fillMembers(true);
}

// fillMembers redraws the open members panel's list (after presence or
// membership changes) without touching its form; reload fetches the list.
async function fillMembers(reload) {
  const id = state.openRoom;
  const r = state.rooms.get(id);
  const list = els.membersList;
  const err = els.membersErr;
  if (!r || !list || state.panel !== "members") return;
  const owner = r.role === "owner";
  const members = (reload ? await loadMembers(id) : state.members.get(id)) || [];
  if (state.panel !== "members" || state.openRoom !== id || els.membersList !== list) return;
  list.replaceChildren();
  for (const m of members) {
    const me = m.user_id === state.user.id;
    const on = state.online.has(m.user_id) || me;
    list.appendChild(
      h(
        "li",
        { "data-user": m.user_id },
        h("span", { class: "dot" + (on ? " on" : ""), title: on ? "online" : "offline", "aria-label": on ? "online" : "offline" }),
        h("span", { class: "member-name", text: m.username }),
        m.role !== "member" ? h("span", { class: "tag", text: m.role }) : null,
        me ? h("span", { class: "tag", text: "you" }) : null,
        owner && !me
          ? h(
              "button",
              {
                type: "button",
                class: "link danger",
                "aria-label": `Remove ${m.username}`,
                onclick: async () => {
                  err.textContent = "";
                  try {
                    await state.api.removeMember(id, m.user_id);
                    fillMembers(true);
                  } catch (e) {
                    err.textContent = friendlyError(e);
                  }
                },
              },
              "Remove",
            )
          : null,
      ),
    );
  }
}

async function deleteRoom(id) {
  const r = state.rooms.get(id);
  if (!r || !confirm(`Delete #${r.name} for everyone?`)) return;
  try {
    await state.api.deleteRoom(id);
    state.convs.delete(id);
    state.unread.delete(id);
    await loadRooms();
    closeRoom();
  } catch (e) {
    showError(friendlyError(e));
  }
}

function panelHeader(title) {
  return h(
    "div",
    { class: "panel-header" },
    h("h2", { text: title }),
    h("button", { type: "button", class: "link", "aria-label": "Close", onclick: () => togglePanel(state.panel) }, "×"),
  );
}

async function renderSessions() {
  const list = h("ul", { class: "sessions", id: "sessions-list" });
  replace(
    els.panel,
    panelHeader("Signed-in devices"),
    h("p", { class: "hint", text: "Each open page or chat client is one session. Signing out a device disconnects it." }),
    list,
  );
  try {
    const res = await state.api.sessions();
    if (state.panel !== "sessions") return;
    const me = state.chat && state.chat.clientInfo;
    const mine = me ? `${me.serverID}/${me.cid}` : "";
    const sessions = res.sessions || [];
    if (sessions.length === 0) list.appendChild(h("li", { class: "empty", text: "No active sessions." }));
    for (const s of sessions) {
      const self = s.client_id === mine;
      list.appendChild(
        h(
          "li",
          { "data-session": s.id },
          h("div", { class: "device", text: describeAgent(s.user_agent) + (self ? " — this device" : "") }),
          h("div", { class: "hint", text: `${s.ip_address || "unknown address"} · since ${formatDateTime(s.created_at)} · last active ${formatDateTime(s.last_activity)}` }),
          self
            ? null
            : h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  onclick: async (ev) => {
                    ev.target.disabled = true;
                    try {
                      await state.api.kickSession(s.id);
                      renderSessions();
                      // The tracker records the disconnect (and any
                      // reconnect) a moment later.
                      setTimeout(() => state.panel === "sessions" && renderSessions(), 1500);
                    } catch (e) {
                      ev.target.disabled = false;
                      showError(friendlyError(e));
                    }
                  },
                },
                "Sign out that device",
              ),
        ),
      );
    }
  } catch (e) {
    list.appendChild(h("li", { class: "form-error", text: friendlyError(e) }));
  }
}

// describeAgent turns a session's user agent ("<client name> (<lang>/<version>)")
// into words.
function describeAgent(ua) {
  if (!ua) return "Unknown client";
  const web = /^mulchat-web(?:; ([^()]+?))?\s*(\(|$)/.exec(ua);
  if (web) return web[1] ? `${web[1]} (web page)` : "Web browser";
  return ua.length > 60 ? ua.slice(0, 60) + "…" : ua;
}

// ---------------------------------------------------------------- start

async function boot() {
  const saved = loadSession();
  if (saved && saved.token && saved.seed && saved.user) {
    state.api.token = saved.token;
    try {
      const me = await state.api.me();
      await startSession(saved.token, me && me.id ? { id: me.id, username: me.username } : saved.user, true, saved.seed);
      return;
    } catch (e) {
      clearSession();
      state.api.token = "";
      if (!(e instanceof APIError && e.status === 401)) {
        renderAuth("login", "", friendlyError(e));
        return;
      }
    }
  }
  renderAuth("login");
}

boot();
