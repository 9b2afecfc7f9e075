// End-to-end test of the chat page in Debian's Chromium, driven by
// playwright-core. internal/web's Go tests start a whole mulchat and run this
// script; it can also be run by hand against a running `mulchat serve`:
//
//   mulchat serve --credential-ttl 2m &
//   MULCHAT_URL=http://127.0.0.1:8080 node web/e2e/chat.e2e.mjs
//
// (The renewal step runs the page's clock 100 s forward, which passes 80% of
// a 2-minute credential's lifetime.)
//
// Environment: MULCHAT_URL (required), MULCHAT_ARTIFACTS (screenshots, default
// ./artifacts), E2E_MODE ("test": the scenario; "bench": send→display
// latency over E2E_BENCH_N messages), CHROMIUM (default /usr/bin/chromium).
//
// The script talks to its Go driver with lines: it prints "@@revoke NAME" and
// waits for "@@ok" (or "@@err MESSAGE") on stdin; it prints "@@result JSON"
// at the end. Without a driver (E2E_DRIVEN unset), revocation goes through
// the API: the user logs in on the side and DELETEs its credential.

import { chromium } from "playwright-core";
import { mkdir } from "node:fs/promises";
import { createInterface } from "node:readline";
import { join } from "node:path";

const BASE = process.env.MULCHAT_URL;
if (!BASE) {
  console.error("MULCHAT_URL is required");
  process.exit(2);
}
const ARTIFACTS = process.env.MULCHAT_ARTIFACTS || "artifacts";
const MODE = process.env.E2E_MODE || "test";
const BENCH_N = Number(process.env.E2E_BENCH_N || 100);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 20000;
const PASSWORD = "correct horse battery";
const RATE_GAP_MS = 60; // the router allows 20 sends a second per user

await mkdir(ARTIFACTS, { recursive: true });

// ------------------------------------------------------------ driver link

const driven = !process.stdin.isTTY && process.env.E2E_DRIVEN === "1";
const lines = driven ? createInterface({ input: process.stdin })[Symbol.asyncIterator]() : null;
async function ask(cmd) {
  if (!driven) return null;
  console.log("@@" + cmd);
  const { value, done } = await lines.next();
  if (done) throw new Error(`driver closed stdin while waiting on ${cmd}`);
  if (!value.startsWith("@@ok")) throw new Error(`driver: ${cmd}: ${value}`);
  return value.slice(4).trim();
}

// ------------------------------------------------------------ helpers

const problems = []; // page errors, CSP violations, unexpected dialogs
let step = "start";
let stepStart = Date.now();
const timings = {};
function setStep(name) {
  timings[step] = Date.now() - stepStart;
  step = name;
  stepStart = Date.now();
}
function log(msg) {
  console.log(`[e2e] ${msg}`);
}
function check(cond, msg) {
  if (!cond) throw new Error(`check failed at "${step}": ${msg}`);
}
async function shot(page, name) {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  log(`screenshot ${path}`);
}

function watch(page, who) {
  page.on("pageerror", (e) => problems.push(`${who}: page error: ${e.message}`));
  page.on("console", (m) => {
    const t = m.text();
    if (process.env.E2E_DEBUG) log(`${who} console.${m.type()}: ${t}`);
    if (/Content.Security.Policy|Refused to/i.test(t)) problems.push(`${who}: CSP: ${t}`);
    if (m.type() === "error" && !/Failed to load resource|WebSocket connection|ERR_|net::/i.test(t)) problems.push(`${who}: console error: ${t}`);
  });
  page.on("dialog", async (d) => {
    if (d.type() === "confirm" && /^Leave #/.test(d.message())) return d.accept();
    problems.push(`${who}: unexpected ${d.type()} dialog: ${d.message()}`);
    await d.dismiss();
  });
}

async function register(page, username, stay) {
  await page.goto(BASE + "/");
  await page.click("text=Register");
  await page.fill("#username", username);
  await page.fill("#password", PASSWORD);
  if (stay) await page.check("#stay");
  await page.click("#auth-submit");
  await connected(page);
}

async function connected(page) {
  await page.waitForSelector('#conn-status[data-state="connected"]', { timeout: TIMEOUT });
}

// messageTexts lists the texts of the confirmed messages shown.
function messageTexts(page) {
  return page.$$eval("#messages .msg .text", (els) => els.map((e) => e.textContent));
}

async function waitText(page, text, timeout = TIMEOUT) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages .msg .text")].some((e) => e.textContent === t),
    text,
    { timeout },
  );
}

async function send(page, text) {
  await page.fill("#composer-input", text);
  await page.press("#composer-input", "Enter");
}

async function sendAndConfirm(page, text) {
  await send(page, text);
  await waitText(page, text);
}

async function openRoom(page, name) {
  await page.click(`#sidebar button.room:has(.room-name:text-is("#${name}"))`);
  await page.waitForSelector(`#room-title:text-is("#${name}")`, { timeout: TIMEOUT });
}

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  return { n: s.length, median_ms: round(q(0.5)), p99_ms: round(q(0.99)), min_ms: round(s[0]), max_ms: round(s[s.length - 1]) };
}
const round = (x) => Math.round(x * 100) / 100;

// measureLatency sends n messages from a to b one at a time and returns the
// time from the send (click in a) to the message's display in b, measured
// on the browser's shared clock.
async function measureLatency(a, b, n, prefix) {
  const observe = (prefix) => {
    window.__seen = {};
    new MutationObserver((recs) => {
      const t = performance.timeOrigin + performance.now();
      for (const r of recs)
        for (const node of r.addedNodes) {
          const el = node.querySelector && node.querySelector(".text");
          if (el && el.textContent.startsWith(prefix) && !(el.textContent in window.__seen)) window.__seen[el.textContent] = t;
        }
    }).observe(document.getElementById("messages"), { childList: true });
  };
  await a.evaluate(observe, prefix);
  await b.evaluate(observe, prefix);
  const lat = [];
  const ack = [];
  for (let i = 0; i < n; i++) {
    const text = `${prefix}${i}`;
    const t0 = await a.evaluate((text) => {
      const ta = document.getElementById("composer-input");
      ta.value = text;
      const t = performance.timeOrigin + performance.now();
      document.getElementById("send-button").click();
      return t;
    }, text);
    await b.waitForFunction((text) => text in window.__seen, text, { timeout: TIMEOUT });
    const t1 = await b.evaluate((text) => window.__seen[text], text);
    lat.push(t1 - t0);
    await a.waitForFunction((text) => text in window.__seen, text, { timeout: TIMEOUT });
    ack.push((await a.evaluate((text) => window.__seen[text], text)) - t0);
    // Stay under the router's per-user send rate (20/s).
    const spent = Date.now() - Math.floor(t0);
    if (spent < RATE_GAP_MS) await a.waitForTimeout(RATE_GAP_MS - spent);
  }
  return { ...stats(lat), ack: stats(ack) };
}

// ------------------------------------------------------------ scenario

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const result = { mode: MODE };
const suffix = Date.now().toString(36).slice(-5);
const alice = "alice" + suffix;
const bob = "bob" + suffix;
const carol = "carol" + suffix;
const room = "general-" + suffix;

let pages = [];
try {
  // Two people in different time zones.
  const ctxA = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US", timezoneId: "America/New_York" });
  const ctxB = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2, locale: "en-US", timezoneId: "Pacific/Auckland" });
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  pages = [a, b];
  watch(a, "alice");
  watch(b, "bob");

  setStep("wrong password");
  await a.goto(BASE + "/");
  await a.fill("#username", "nobody" + suffix);
  await a.fill("#password", "wrong password");
  await a.click("#auth-submit");
  await a.waitForSelector("#auth-error:text-is('Wrong username or password.')", { timeout: TIMEOUT });
  await shot(a, "01-login-error");

  setStep("rate limited logins say so");
  for (let i = 0; i < 15; i++) {
    await a.click("#auth-submit");
    await a.waitForFunction(() => !document.getElementById("auth-submit").disabled, null, { timeout: TIMEOUT });
    if (/Too many login attempts/.test(await a.textContent("#auth-error"))) break;
  }
  check(/Too many login attempts/.test(await a.textContent("#auth-error")), "repeated wrong logins end in a rate-limit message");
  await shot(a, "01b-login-rate-limited");

  setStep("register alice");
  await register(a, alice, true);

  setStep("create room");
  await a.fill("#new-room-name", room);
  await a.fill("#new-room-description", "Everything <b>and</b> nothing");
  await a.click("#create-room-submit");
  await a.waitForSelector(`#room-title:text-is("#${room}")`, { timeout: TIMEOUT });
  check((await a.textContent(".room-desc")) === "Everything <b>and</b> nothing", "room description shown as text");

  setStep("register bob and join");
  await register(b, bob, false);
  await b.waitForSelector(`#public-rooms .room-name:text-is("#${room}")`, { timeout: TIMEOUT });
  await openRoom(b, room);
  await b.click("#join-button");
  await b.waitForSelector("#composer-input", { timeout: TIMEOUT });
  await b.waitForSelector(`#my-rooms .room-name:text-is("#${room}")`, { state: "attached", timeout: TIMEOUT });

  setStep("alice → bob");
  await sendAndConfirm(a, "hello bob");
  await waitText(b, "hello bob");

  setStep("times in each viewer's zone");
  for (const [p, zone] of [[a, "America/New_York"], [b, "Pacific/Auckland"]]) {
    const [iso, shown] = await p.$eval("#messages .msg:last-child time", (t) => [t.getAttribute("datetime"), t.textContent]);
    const want = new Intl.DateTimeFormat("en-US", { hour: "2-digit", minute: "2-digit", timeZone: zone }).format(new Date(iso));
    check(shown === want, `${zone}: shows ${shown} for ${iso}, want ${want}`);
  }

  setStep("bob → alice, Shift+Enter makes a new line");
  await b.click("#composer-input");
  await b.keyboard.type("line one");
  await b.keyboard.press("Shift+Enter");
  await b.keyboard.type("line two");
  await b.keyboard.press("Enter");
  await waitText(a, "line one\nline two");
  await waitText(b, "line one\nline two");

  setStep("markup renders as text");
  const xss = [
    `<img src=x onerror="window.__xss=1;alert(1)">`,
    `<script>window.__xss=2</script><b>bold</b> & "quotes" <a href="javascript:alert(3)">link</a>`,
    `<svg onload="window.__xss=4"></svg><iframe src="javascript:alert(5)"></iframe>`,
  ];
  for (const t of xss) await sendAndConfirm(a, t);
  for (const t of xss) await waitText(b, t);
  for (const p of [a, b]) {
    const tags = await p.$$eval("#messages img, #messages script, #messages b, #messages a, #messages svg, #messages iframe", (e) => e.length);
    check(tags === 0, `markup became elements (${tags})`);
    check((await p.evaluate(() => window.__xss)) === undefined, "injected script ran");
  }

  await shot(a, "02-alice-desktop-conversation");
  await shot(b, "03-bob-phone-conversation");

  setStep("long messages wrap");
  await sendAndConfirm(a, "https://example.com/" + "a".repeat(1500) + " " + "word ".repeat(300));
  for (const p of [a, b]) {
    await p.waitForTimeout(50);
    const overflow = await p.$eval("#scroller", (s) => s.scrollWidth - s.clientWidth);
    check(overflow <= 1, `the conversation scrolls sideways by ${overflow}px`);
  }
  await shot(b, "03b-bob-phone-long-message");

  setStep("members and presence");
  await a.click("#members-button");
  await a.waitForSelector(`#members-list .member-name:text-is("${bob}")`, { timeout: TIMEOUT });
  await a.fill("#add-member-name", "nobody" + suffix);
  await a.click("#add-member-form button[type=submit]");
  await a.waitForSelector("#panel .form-error:text-is('user not found')", { timeout: TIMEOUT });
  await shot(a, "04-alice-members");
  await a.keyboard.press("Escape"); // closes the panel
  await a.waitForSelector("#panel", { state: "hidden", timeout: TIMEOUT });

  setStep("sessions: this device, and signing out another");
  // A duplicated tab carries the tab's sessionStorage, so it connects with
  // the same key: a second session of alice's.
  const saved = await a.evaluate(() => sessionStorage.getItem("mulchat.session"));
  const a2 = await ctxA.newPage();
  pages.push(a2);
  watch(a2, "alice-tab-2");
  await a2.addInitScript((v) => {
    if (!sessionStorage.getItem("mulchat.session")) sessionStorage.setItem("mulchat.session", v);
  }, saved);
  await a2.goto(BASE + "/");
  await connected(a2);
  await a.click("#sessions-button");
  await a.waitForSelector("#sessions-list .device:text-matches('this device$')", { timeout: TIMEOUT });
  await a.waitForFunction(() => document.querySelectorAll("#sessions-list li[data-session]").length === 2, null, { timeout: TIMEOUT });
  await shot(a, "05-alice-sessions");
  const other = await a.$eval("#sessions-list li[data-session]:has(button.danger)", (li) => li.dataset.session);
  await a.click(`#sessions-list li[data-session="${other}"] button.danger`);
  // The other tab is disconnected; its key is still valid, so it comes back
  // as a new session.
  await a2.waitForSelector('#conn-status:not([data-state="connected"])', { timeout: TIMEOUT });
  await connected(a2);
  await a.waitForSelector(`#sessions-list li[data-session="${other}"]`, { state: "detached", timeout: TIMEOUT });
  await a2.close();
  await a.click("#sessions-button");

  if (MODE === "bench") {
    setStep("latency");
    await measureLatency(a, b, 10, "warm-"); // connections, JIT, caches
    result.browser_latency = await measureLatency(a, b, BENCH_N, "lat-");
    log(`browser→browser send→display over ${BENCH_N}: ${JSON.stringify(result.browser_latency)}`);
  } else {
    setStep("many messages");
    // Enough for more than a history page (50) in the room, within the
    // router's per-user rate limit (a burst of 40, then 20/s).
    for (let i = 0; i < 45; i++) {
      await a.evaluate((text) => {
        document.getElementById("composer-input").value = text;
        document.getElementById("send-button").click();
      }, `bulk ${i}`);
      await a.waitForTimeout(25);
    }
    await waitText(a, "bulk 44");
    await waitText(b, "bulk 44");
    await a.waitForSelector("#pending-messages .msg", { state: "detached", timeout: TIMEOUT });
  }

  setStep("unread count");
  await b.click("button.back");
  await b.waitForSelector("#my-rooms", { timeout: TIMEOUT });
  await sendAndConfirm(a, "are you there?");
  await b.waitForSelector(`#my-rooms button.room:has(.room-name:text-is("#${room}")) .unread:text-is("1")`, { timeout: TIMEOUT });
  await shot(b, "06-bob-phone-rooms-unread");
  await openRoom(b, room);
  await waitText(b, "are you there?");
  await b.waitForSelector(`#my-rooms .unread`, { state: "detached", timeout: TIMEOUT });

  setStep("reload keeps the session and shows history");
  const before = await messageTexts(a);
  await a.reload();
  await connected(a);
  await a.waitForSelector(`#room-title:text-is("#${room}")`, { timeout: TIMEOUT });
  await waitText(a, "are you there?");
  // Alice's page reconnected: bob, who shares the room, is told she is
  // online (presence events from the tracker through the router).
  await b.waitForSelector("#online-count:text-is('2 online')", { timeout: TIMEOUT });
  // And alice's new page knows bob is online although no event said so
  // since it connected: it asked the router (chat.api.<uid>.presence).
  await a.waitForSelector("#online-count:text-is('2 online')", { timeout: TIMEOUT });
  const afterReload = await messageTexts(a);
  check(afterReload.length === Math.min(50, before.length), `reload shows the newest page (${afterReload.length} of ${before.length})`);
  check(afterReload.at(-1) === before.at(-1), "reload shows the latest message last");

  setStep("scroll back loads older pages");
  await a.$eval("#scroller", (s) => (s.scrollTop = 0));
  await a.waitForFunction((n) => document.querySelectorAll("#messages .msg").length > n, afterReload.length, { timeout: TIMEOUT });
  const seqs = await a.$$eval("#messages .msg", (els) => els.map((e) => Number(e.dataset.seq)));
  check(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), "messages in seq order without duplicates");
  await shot(a, "07-alice-after-reload");

  setStep("carol: failed send, retry with the same client_msg_id");
  // Carol's WebSocket goes through a relay the test controls, to lose
  // server→page frames and to drop the connection on purpose.
  const ctxC = await browser.newContext({ viewport: { width: 1024, height: 700 }, colorScheme: "dark" });
  let blackhole = false;
  const sockets = [];
  await ctxC.routeWebSocket(/^wss?:/, (ws) => {
    const server = ws.connectToServer();
    sockets.push({ ws, server });
    ws.onMessage((m) => server.send(m));
    server.onMessage((m) => {
      if (!blackhole) ws.send(m);
    });
  });
  const c = await ctxC.newPage();
  pages.push(c);
  watch(c, "carol");
  await register(c, carol, true);
  await c.waitForSelector(`#public-rooms .room-name:text-is("#${room}")`, { timeout: TIMEOUT });
  await openRoom(c, room);
  await c.click("#join-button");
  await c.waitForSelector("#composer-input", { timeout: TIMEOUT });
  await sendAndConfirm(c, "carol here");
  await waitText(a, "carol here");

  blackhole = true;
  await send(c, "retry me");
  await c.waitForSelector("#pending-messages .status.failed", { timeout: TIMEOUT });
  await waitText(a, "retry me"); // the router stored it; only the ack was lost
  await shot(c, "08-carol-failed-send");
  blackhole = false;
  await c.click("#pending-messages .retry");
  await waitText(c, "retry me");
  await c.waitForSelector("#pending-messages .msg", { state: "detached", timeout: TIMEOUT });
  const countIn = async (p, t) => (await messageTexts(p)).filter((x) => x === t).length;
  check((await countIn(c, "retry me")) === 1, "retried message shown once to carol");
  await sendAndConfirm(a, "after retry");
  await waitText(c, "after retry");
  check((await countIn(a, "retry me")) === 1, "retried message delivered once to alice");

  setStep("carol: dropped connection, gap filled from history");
  blackhole = true;
  for (const t of ["gap 1", "gap 2", "gap 3"]) await sendAndConfirm(a, t);
  check((await countIn(c, "gap 1")) === 0, "the relay really dropped frames");
  for (const s of sockets.splice(0)) {
    await s.ws.close({ code: 1001, reason: "test drops the connection" }).catch(() => {});
    await s.server.close().catch(() => {});
  }
  blackhole = false;
  await c.waitForSelector('#conn-status:not([data-state="connected"])', { timeout: TIMEOUT }).catch(() => {});
  await connected(c);
  for (const t of ["gap 1", "gap 2", "gap 3"]) await waitText(c, t);
  await sendAndConfirm(a, "after the gap");
  await waitText(c, "after the gap");
  for (const t of ["carol here", "gap 1", "gap 2", "gap 3", "after the gap"]) check((await countIn(c, t)) === 1, `"${t}" shown once after recovery`);
  const cseqs = await c.$$eval("#messages .msg", (els) => els.map((e) => Number(e.dataset.seq)));
  check(cseqs.every((s, i) => i === 0 || s > cseqs[i - 1]), "carol's messages in seq order without duplicates");
  await shot(c, "09-carol-after-gap");

  setStep("revoke bob");
  if (driven) {
    await ask("revoke " + bob);
  } else {
    const login = await fetch(BASE + "/api/v1/login", { method: "POST", body: JSON.stringify({ username: bob, password: PASSWORD }), headers: { "Content-Type": "application/json" } }).then((r) => r.json());
    const res = await fetch(BASE + "/api/v1/me/credentials", { method: "DELETE", headers: { Authorization: "Bearer " + login.token } });
    check(res.status === 204, `revoke via API: ${res.status}`);
  }
  await b.waitForSelector("#signed-out", { timeout: TIMEOUT });
  const notice = await b.textContent("#signed-out");
  check(/revoked/i.test(notice), `signed-out notice names the revocation: ${notice}`);
  await shot(b, "10-bob-signed-out");
  result.signed_out_notice = notice;

  setStep("alice signs in elsewhere; the new page renews its credential before expiry");
  // One chat key per user: the second sign-in replaces (and revokes) the
  // first page's key, which must say why it was signed out. The new page's
  // clock is run forward past 80% of the credential's lifetime (the server
  // issues 2-minute credentials in these tests) to trigger the renewal.
  const ctxD = await browser.newContext({ viewport: { width: 1024, height: 700 } });
  await ctxD.clock.install();
  const d = await ctxD.newPage();
  pages.push(d);
  watch(d, "alice-2");
  await d.goto(BASE + "/");
  await d.fill("#username", alice);
  await d.fill("#password", PASSWORD);
  await d.click("#auth-submit");
  await connected(d);
  await a.waitForSelector("#signed-out", { timeout: TIMEOUT });
  const replacedNotice = await a.textContent("#signed-out");
  check(/another device/i.test(replacedNotice), `first page names the other device: ${replacedNotice}`);
  await shot(a, "11-alice-replaced-by-another-device");
  const me = async () =>
    d.evaluate(async () => {
      const token = JSON.parse(sessionStorage.getItem("mulchat.session") || "null");
      return token;
    });
  check((await me()) === null, "a page without 'stay signed in' stores nothing");
  const renewed = d.waitForResponse((r) => r.url().endsWith("/api/v1/me/credentials/renew"), { timeout: TIMEOUT });
  await d.clock.fastForward("01:40");
  const renewRes = await renewed;
  check(renewRes.status() === 200, `renew answered ${renewRes.status()}`);
  await connected(d);
  await openRoom(d, room);
  await sendAndConfirm(d, "still here after renewal");
  await waitText(c, "still here after renewal");

  setStep("carol leaves the room; her login token ends elsewhere");
  await c.click("#leave-button"); // the confirm() is accepted by watch()
  await c.waitForSelector(`#public-rooms .room-name:text-is("#${room}")`, { timeout: TIMEOUT });
  check((await c.$$(`#my-rooms .room-name:text-is("#${room}")`)).length === 0, "the room left My rooms");
  const carolToken = await c.evaluate(() => JSON.parse(sessionStorage.getItem("mulchat.session")).token);
  const out = await fetch(BASE + "/api/v1/logout", { method: "POST", headers: { Authorization: "Bearer " + carolToken } });
  check(out.status === 204, `logout of carol's token: ${out.status}`);
  // Any API call now answers 401: the page may already have made one (a
  // room list refresh after leaving); otherwise refresh by hand.
  await c.evaluate(() => {
    const b = document.getElementById("refresh-rooms");
    if (b) b.click();
  });
  await c.waitForSelector("#signed-out:text-is('Your session has ended. Please log in again.')", { timeout: TIMEOUT });
  check((await c.evaluate(() => sessionStorage.length)) === 0, "nothing left in sessionStorage after being signed out");

  setStep("alice logs out");
  await d.click("#logout-button");
  await d.waitForSelector("#signed-out:text-is('You have logged out.')", { timeout: TIMEOUT });

  setStep("no problems");
  check(problems.length === 0, "problems:\n  " + problems.join("\n  "));
  setStep("end");
  result.ok = true;
  result.timings_ms = timings;
} catch (e) {
  result.ok = false;
  result.error = e.message;
  result.step = step;
  result.problems = problems;
  for (const [i, p] of pages.entries()) await shot(p, `failure-${i}`).catch(() => {});
} finally {
  await browser.close();
}
console.log("@@result " + JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
