// Helpers for the tests in test/ (kept outside test/, where `node --test test/` would run this
// file as a test too): start a real `minipush serve --dev` (the binary named by MINIPUSH_BIN)
// on 127.0.0.1 and call its HTTP API; a fake `wx` whose connectSocket is a real WebSocket (the
// `ws` package) with a network switch; an event recorder; bounded waits.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const WebSocket = require('ws');

/** The absolute path of the minipush binary, from MINIPUSH_BIN. Throws when unusable. */
function binPath() {
  const bin = process.env.MINIPUSH_BIN;
  if (!bin) {
    throw new Error(
      'MINIPUSH_BIN is not set. Build the server (cargo build) and run:\n' +
        '  MINIPUSH_BIN=$PWD/../target/debug/minipush node --test test/'
    );
  }
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch (err) {
    throw new Error(`MINIPUSH_BIN=${bin} is not an executable file (run cargo build first): ${err.message}`);
  }
  return bin;
}

/** Resolves with what `fn` returns once it is truthy; rejects after `timeoutMs`. */
async function waitFor(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what || fn}`);
    await sleep(20);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `minipush serve --dev` and reads its banner. `port` 0 picks a free port; the token
 * and API key are fixed so that a restart on the same port accepts the same tickets.
 */
async function startServer({ port = 0, token = 'test-token-0123456789', apiKey = 'test-key-0123456789', env = {} } = {}) {
  const proc = spawn(binPath(), ['serve', '--dev'], {
    env: Object.assign({}, process.env, {
      MINIPUSH_SERVER_LISTEN: `127.0.0.1:${port}`,
      MINIPUSH_AUTH_TOKENS: token,
      MINIPUSH_API_KEYS: apiKey,
      MINIPUSH_SERVER_SHUTDOWN_GRACE_SECS: '2',
      MINIPUSH_LOG: 'warn',
    }, env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const banner = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no banner from minipush within 20 s; stdout: ${out}; stderr: ${stderr}`)), 20000);
    proc.stdout.on('data', (d) => {
      out += d;
      const listen = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      const tok = /client token: (\S+)/.exec(out);
      const key = /API key:\s+(\S+)/.exec(out);
      if (listen && tok && key) {
        clearTimeout(timer);
        resolve({ port: Number(listen[1]), token: tok[1], apiKey: key[1] });
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`minipush exited (${code ?? signal}) before its banner; stderr: ${stderr}`));
    });
  });
  proc.stdout.resume();
  const http = `http://127.0.0.1:${banner.port}`;
  return {
    port: banner.port,
    token: banner.token,
    apiKey: banner.apiKey,
    http,
    wsUrl: `ws://127.0.0.1:${banner.port}/ws`,
    exited,
    /** POST (or GET without a body) an API route with the API key; resolves with the JSON. */
    async api(path, body) {
      const res = await fetch(http + path, {
        method: body === undefined ? 'GET' : 'POST',
        headers: { authorization: `Bearer ${banner.apiKey}` },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(5000),
      });
      const json = await res.json();
      if (!res.ok) throw new Error(`${path} answered ${res.status}: ${JSON.stringify(json)}`);
      return json;
    },
    /** A ticket signed by the server's dev endpoint. */
    async ticket(uid) {
      const res = await fetch(`${http}/demo/ticket${uid ? `?uid=${uid}` : ''}`, { signal: AbortSignal.timeout(5000) });
      return res.json();
    },
    /** Sends `signal` and waits (at most 15 s) for the process to exit. */
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/**
 * A stand-in for the mini-program's `wx` with what minipush.js uses (wx.login always gives the
 * code 'c0de'; wx.request is fetch). connectSocket opens a real
 * WebSocket and passes `protocols` through, as WeChat does. `net.down()` cuts every socket
 * abruptly (1006) and makes new ones fail until `net.up()`; `net.blackhole()` silently stops
 * delivering frames to the sockets open now (a dead TCP path). `appShow()` and
 * `networkChange(isConnected)` fire the lifecycle callbacks. `stats` counts sockets.
 */
function fakeWx() {
  const live = new Set();
  const stats = { attempts: 0, live: 0, maxLive: 0, protocols: [] };
  const hooks = { appShow: [], network: [] };
  let down = false;

  function connectSocket({ url, protocols }) {
    const handlers = { open: [], message: [], close: [], error: [] };
    const fire = (name, arg) => handlers[name].slice().forEach((fn) => fn(arg));
    let closed = false;
    let muted = false;
    stats.attempts++;
    stats.protocols.push(protocols);
    stats.live++;
    stats.maxLive = Math.max(stats.maxLive, stats.live);
    const finish = (code, reason) => {
      if (closed) return;
      closed = true;
      stats.live--;
      live.delete(task);
      fire('close', { code, reason });
    };
    const task = {
      onOpen: (fn) => handlers.open.push(fn),
      onMessage: (fn) => handlers.message.push(fn),
      onClose: (fn) => handlers.close.push(fn),
      onError: (fn) => handlers.error.push(fn),
      send({ data, fail }) {
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(data);
        else if (fail) setTimeout(() => fail({ errMsg: 'sendSocketMessage:fail socket is not open' }), 0);
      },
      close({ code, reason } = {}) {
        if (ws) ws.close(code, reason);
        else setTimeout(() => finish(code || 1000, reason || ''), 0);
      },
      cut() {
        if (ws) ws.terminate();
      },
      mute() {
        muted = true;
      },
    };
    let ws = null;
    if (down) {
      setTimeout(() => {
        fire('error', { errMsg: 'connectSocket:fail network down' });
        finish(1006, 'network down');
      }, 5);
      return task;
    }
    live.add(task);
    ws = new WebSocket(url, protocols);
    ws.on('open', () => fire('open', {}));
    ws.on('message', (data, isBinary) => {
      if (!muted) fire('message', { data: isBinary ? data : data.toString() });
    });
    ws.on('error', (err) => fire('error', { errMsg: err.message }));
    ws.on('close', (code, reason) => finish(code, reason.toString()));
    return task;
  }

  const wx = {
    connectSocket,
    onAppShow: (fn) => hooks.appShow.push(fn),
    offAppShow: (fn) => (hooks.appShow = hooks.appShow.filter((f) => f !== fn)),
    onNetworkStatusChange: (fn) => hooks.network.push(fn),
    login: ({ success }) => setTimeout(() => success({ code: 'c0de' }), 0),
    offNetworkStatusChange: (fn) => (hooks.network = hooks.network.filter((f) => f !== fn)),
    request({ url, method, data, header, success, fail }) {
      fetch(url, { method, headers: header, body: data === undefined ? undefined : JSON.stringify(data), signal: AbortSignal.timeout(5000) })
        .then(async (res) => success({ statusCode: res.status, data: await res.json() }))
        .catch((err) => fail({ errMsg: `request:fail ${err.message}` }));
    },
  };
  const net = {
    down() {
      down = true;
      live.forEach((t) => t.cut());
    },
    up() {
      down = false;
    },
    blackhole() {
      live.forEach((t) => t.mute());
    },
  };
  return {
    wx,
    net,
    stats,
    appShow: () => hooks.appShow.slice().forEach((fn) => fn({ scene: 1001 })),
    networkChange: (isConnected) => hooks.network.slice().forEach((fn) => fn({ isConnected, networkType: isConnected ? 'wifi' : 'none' })),
    hookCount: () => hooks.appShow.length + hooks.network.length,
  };
}

/**
 * Records a client's events and waits for them: `rec.next('push', (p) => ..., 5000)` resolves
 * with the first matching event not consumed yet (including ones that already happened).
 */
function recorder(client, events = ['state', 'push', 'reply', 'error', 'resume', 'stopped', 'welcome']) {
  const log = [];
  events.forEach((name) => client.on(name, (arg) => log.push({ name, arg })));
  const used = new Set();
  return {
    log,
    of: (name) => log.filter((e) => e.name === name).map((e) => e.arg),
    async next(name, pred = () => true, timeoutMs = 5000) {
      const hit = await waitFor(
        () => log.find((e) => e.name === name && !used.has(e) && pred(e.arg)),
        timeoutMs,
        `a '${name}' event`
      );
      used.add(hit);
      return hit.arg;
    },
  };
}

module.exports = { binPath, startServer, fakeWx, recorder, waitFor, sleep };
