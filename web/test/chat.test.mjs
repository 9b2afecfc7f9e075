// Unit tests of the page's pure helpers, run with node's test runner by
// internal/web's Go tests (TestPageUnits) or by hand: node --test web/test
import { test } from "node:test";
import assert from "node:assert/strict";
import { createUser } from "@nats-io/nkeys";
import { pickWebSocketURL, jwtClaims, newSeed, clientName, presenceStatuses } from "../src/chat.js";
import { APIError, friendlyError } from "../src/api.js";

const page = (protocol, hostname) => ({ protocol, hostname });

test("pickWebSocketURL chooses the WebSocket URL", () => {
  const cases = [
    [["nats://127.0.0.1:4222", "ws://127.0.0.1:8222"], page("http:", "127.0.0.1"), "ws://127.0.0.1:8222"],
    [["ws://h:1", "wss://h:2"], page("https:", "h"), "wss://h:2"],
    [["wss://h:2", "ws://h:1"], page("http:", "h"), "ws://h:1"],
    [["nats://127.0.0.1:4222"], page("http:", "x"), ""],
    [[], page("http:", "x"), ""],
    [null, page("http:", "x"), ""],
    [["ws://0.0.0.0:8222"], page("http:", "chat.example"), "ws://chat.example:8222"],
    [["ws://[::]:8222"], page("http:", "chat.example"), "ws://chat.example:8222"],
  ];
  for (const [urls, loc, want] of cases) assert.equal(pickWebSocketURL(urls, loc), want, JSON.stringify(urls));
});

test("jwtClaims decodes the payload and survives garbage", () => {
  const claims = { sub: "UABC", exp: 1700000000, nats: { pub: {} } };
  const b64 = Buffer.from(JSON.stringify(claims)).toString("base64url");
  assert.deepEqual(jwtClaims(`x.${b64}.y`), claims);
  assert.deepEqual(jwtClaims("not a jwt"), {});
  assert.deepEqual(jwtClaims(""), {});
});

test("newSeed makes a user seed that is never the same twice", () => {
  const a = new TextDecoder().decode(newSeed());
  const b = new TextDecoder().decode(newSeed());
  assert.match(a, /^SU[A-Z2-7]{56}$/);
  assert.notEqual(a, b);
  assert.ok(createUser().getPublicKey().startsWith("U"));
});

test("friendlyError words errors for people", () => {
  const cases = [
    [new APIError(401, "unauthorized", "invalid credentials"), "login", "Wrong username or password."],
    [new APIError(401, "unauthorized", "token expired"), undefined, "Your session has ended. Please log in again."],
    [new APIError(429, "rate_limited", "slow down", "12"), "login", "Too many login attempts. Try again in 12 s."],
    [new APIError(429, "rate_limited", "slow down", null), "register", "Too many registrations from this address. Wait a moment and try again."],
    [new APIError(0, "network", "x"), undefined, "Cannot reach the server. Check your connection and try again."],
    [new APIError(409, "conflict", "a room with this name already exists"), undefined, "a room with this name already exists"],
    [new Error("boom"), undefined, "boom"],
  ];
  for (const [err, ctx, want] of cases) assert.equal(friendlyError(err, ctx), want);
});

test("clientName names browser and system", () => {
  const cases = [
    ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36", "mulchat-web; Chrome on Linux"],
    ["Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1", "mulchat-web; Safari on iOS"],
    ["Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0", "mulchat-web; Firefox on Windows"],
    ["Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Mobile Safari/537.36 Edg/120", "mulchat-web; Edge on Android"],
    ["", "mulchat-web"],
  ];
  for (const [ua, want] of cases) assert.equal(clientName(ua), want);
});

test("presenceStatuses reads the router's presence answer", () => {
  const cases = [
    [
      {
        members: [
          { user_id: 1, username: "alice", status: "online" },
          { user_id: 2, username: "bob", status: "offline" },
          { user_id: "3", username: "bad id", status: "online" },
          { user_id: 4, username: "odd", status: "away" },
          null,
        ],
      },
      [
        [1, true],
        [2, false],
      ],
    ],
    [{ members: [] }, []],
    [{ online: [1, 2] }, []],
    [null, []],
    [{ members: "x" }, []],
  ];
  for (const [res, want] of cases) assert.deepEqual(presenceStatuses(res), want, JSON.stringify(res));
});
