// utils/minipush.js as a mini-program runs it: a global `wx` whose connectSocket is a real
// WebSocket (testing/helpers.js), against a real `minipush serve --dev`. Connect, the login
// ticket source, pushes, request/reply, kicks and bad tickets that stop it, expired tickets
// that are refreshed, drops and server restarts healed by reconnect + resume, wake-ups on
// onAppShow and network changes, and never more than one socket. The last test scripts the
// server's side of a resume to pin down ordering and de-duplication exactly.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const MiniPush = require('../utils/minipush.js');
const { startServer, fakeWx, recorder, waitFor, sleep } = require('../testing/helpers.js');

let server;
test.before(async () => {
  server = await startServer();
});
test.after(async () => {
  if (server) await server.stop();
});

/**
 * A client on a fresh fake `wx` (installed as the global, as in a mini-program), with a
 * ticket from the server's /demo/ticket through wx.request; `options` (or options(env))
 * override. Closed after the test, which also checks that it never held two sockets at once.
 */
function setup(t, { uid, options = {}, srv = server } = {}) {
  const env = fakeWx();
  global.wx = env.wx;
  if (typeof options === 'function') options = options(env);
  const client = MiniPush.createClient(
    Object.assign(
      {
        url: srv.wsUrl,
        ticket: MiniPush.httpTicket(`${srv.http}/demo/ticket${uid ? `?uid=${uid}` : ''}`),
        minDelayMs: 100,
        maxDelayMs: 1000,
      },
      options
    )
  );
  const rec = recorder(client);
  t.after(() => {
    client.close();
    delete global.wx;
    assert.ok(env.stats.maxLive <= 1, `at most one socket at a time (saw ${env.stats.maxLive})`);
  });
  return { env, client, rec };
}

const pushesOn = (rec, stream) => rec.of('push').filter((p) => p.stream === stream);

test('connects with protocols [sig, ts, uid] and gets a welcome', async (t) => {
  const { env, client, rec } = setup(t, { uid: 'u-hello' });
  assert.equal(client.state, 'idle');
  client.connect();
  const welcome = await rec.next('welcome');
  await rec.next('state', (s) => s.state === 'open');
  assert.equal(welcome.uid, 'u-hello');
  assert.equal(client.uid, 'u-hello');
  assert.equal(client.conn, welcome.conn);
  assert.equal(client.epoch, welcome.epoch);
  const [protocols] = env.stats.protocols;
  assert.equal(protocols.length, 3);
  assert.match(protocols[0], /^[0-9a-f]{40}$/);
  assert.match(protocols[1], /^\d+$/);
  assert.equal(protocols[2], 'u-hello');
  assert.deepEqual(
    rec.of('state').map((s) => s.state),
    ['connecting', 'open']
  );
});

test('an anonymous ticket connects with [sig, ts]', async (t) => {
  const { env, client, rec } = setup(t);
  client.connect();
  const welcome = await rec.next('welcome');
  assert.equal(welcome.uid, null);
  assert.equal(client.uid, null);
  assert.equal(env.stats.protocols[0].length, 2);
});

test('loginTicket: wx.login, then POST {code} to a login endpoint for the ticket', async (t) => {
  // A stand-in for POST /api/login (the real one needs WeChat): the code becomes a uid.
  const codes = [];
  const login = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', async () => {
      const { code } = JSON.parse(body);
      codes.push(`${req.method} ${req.url} ${code}`);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(await server.ticket(`openid-${code}`)));
    });
  });
  await new Promise((resolve) => login.listen(0, '127.0.0.1', resolve));
  t.after(() => login.close());
  const { client, rec } = setup(t, {
    options: () => ({ ticket: MiniPush.loginTicket({ url: `http://127.0.0.1:${login.address().port}/api/login` }) }),
  });
  client.connect();
  const welcome = await rec.next('welcome');
  assert.equal(welcome.uid, 'openid-c0de');
  assert.deepEqual(codes, ['POST /api/login c0de']);
});

test('receives a push sent through the HTTP API', async (t) => {
  const { client, rec } = setup(t, { uid: 'u-push' });
  client.connect();
  await rec.next('state', (s) => s.state === 'open');
  const answer = await server.api('/api/push', { uid: 'u-push', data: { hello: 'world', list: [1, 2] } });
  assert.equal(answer.delivered, 1);
  const push = await rec.next('push');
  assert.equal(push.stream, 'u:u-push');
  assert.equal(push.seq, answer.seq);
  assert.deepEqual(push.data, { hello: 'world', list: [1, 2] });
  assert.equal(typeof push.time, 'number');

  await server.api('/api/push', { all: true, data: 'to everyone' });
  assert.equal((await rec.next('push', (p) => p.stream === 'all')).data, 'to everyone');
});

test('request/reply: ids, concurrent echoes, queued before open, server errors, chat', async (t) => {
  const { env, client, rec } = setup(t, { uid: 'u-req' });
  const sent = [];
  client.on('frame', (f) => f.dir === 'out' && sent.push(f.frame));
  client.connect();
  const early = client.echo('queued before the welcome'); // queued, sent after the welcome
  const answers = await Promise.all([early, client.echo({ a: 1 }), client.echo([2]), client.echo('three')]);
  assert.deepEqual(answers, [{ echo: 'queued before the welcome' }, { echo: { a: 1 } }, { echo: [2] }, { echo: 'three' }]);
  const ids = sent.filter((f) => f.type === 'echo').map((f) => f.id);
  assert.equal(ids.length, 4);
  assert.equal(new Set(ids).size, 4, 'every request has its own id');
  ids.forEach((id) => assert.equal(typeof id, 'string'));

  await assert.rejects(client.request({ type: 'no.such.type' }), { code: 'unknown_type' });
  await assert.rejects(client.chat('room-req', 'not a member yet'), { code: 'not_member' });
  assert.ok(rec.of('error').some((e) => e.code === 'not_member' && e.fromServer));

  assert.deepEqual(await client.join('room-req'), { joined: 'room-req', seq: 0 });
  assert.deepEqual(client.groups, ['room-req']);
  const sentChat = await client.chat('room-req', 'hello room');
  assert.equal(sentChat.sent, true);
  const chat = await rec.next('push', (p) => p.stream === 'g:room-req');
  assert.equal(chat.seq, sentChat.seq);
  assert.equal(chat.data.from, 'u-req');
  assert.equal(chat.data.text, 'hello room');
  assert.deepEqual(await client.leave('room-req'), { left: 'room-req' });
  assert.deepEqual(client.groups, []);

  env.net.blackhole(); // answers stop arriving
  await assert.rejects(client.request({ type: 'echo', data: 'lost' }, { timeoutMs: 300 }), { code: 'timeout' });
  client.close();
  await assert.rejects(client.echo(1), { code: 'not_connected' });
});

test('a kick (4010) stops the client: no reconnect, the page is told why', async (t) => {
  const { env, client, rec } = setup(t, { uid: 'u-kick' });
  client.connect();
  await rec.next('state', (s) => s.state === 'open');
  assert.equal(env.hookCount(), 2, 'listens to onAppShow and onNetworkStatusChange');
  assert.deepEqual(await server.api('/api/kick', { uid: 'u-kick', reason: 'bye now' }), { ok: true, kicked: 1 });
  const stopped = await rec.next('stopped');
  assert.deepEqual(stopped, { code: 4010, reason: 'bye now' });
  assert.equal(client.state, 'stopped');
  await sleep(1500); // ten times the first backoff delay
  assert.equal(env.stats.attempts, 1);
  assert.equal(env.hookCount(), 0, 'a stopped client stops listening to wake-ups');
  env.appShow();
  await sleep(200);
  assert.equal(env.stats.attempts, 1, 'onAppShow does not revive a kicked client');
});

test('a bad ticket (4001) does not loop', async (t) => {
  let calls = 0;
  const { env, client, rec } = setup(t, {
    options: {
      ticket: async () => {
        calls++;
        return { sig: 'f'.repeat(40), ts: Math.floor(Date.now() / 1000), uid: 'u-bad' };
      },
    },
  });
  client.connect();
  const stopped = await rec.next('stopped');
  assert.equal(stopped.code, 4001);
  await sleep(1500);
  assert.equal(env.stats.attempts, 1);
  assert.equal(calls, 1);
  assert.equal(client.state, 'stopped');
  assert.equal(rec.of('welcome').length, 0);
});

test('an expired ticket (4002) is replaced by a fresh one', async (t) => {
  let calls = 0;
  const sign = (token, ts, uid) => crypto.createHash('sha1').update(token + ts + uid).digest('hex');
  const { env, client, rec } = setup(t, {
    options: {
      ticket: async () => {
        calls++;
        if (calls === 1) {
          const ts = Math.floor(Date.now() / 1000) - 3600; // correctly signed, an hour old
          return { sig: sign(server.token, ts, 'u-old'), ts, uid: 'u-old' };
        }
        return server.ticket('u-old');
      },
    },
  });
  client.connect();
  await rec.next('state', (s) => s.state === 'reconnecting' && s.code === 4002);
  await rec.next('state', (s) => s.state === 'open');
  assert.equal(calls, 2);
  assert.equal(env.stats.attempts, 2);
  assert.equal(client.uid, 'u-old');
});

test('an abrupt drop: pushes sent meanwhile are resumed in order, no duplicates, group joined again', async (t) => {
  // A broadcast from before this client existed: in the 'all' history, never delivered to it.
  // The welcome's `seqs` say 'all' starts after it, so no resume replays it.
  await server.api('/api/push', { all: true, data: 'old news' });
  // A long backoff: only the network-change wake-up can bring it back within the test.
  const { env, client, rec } = setup(t, { uid: 'u-drop', options: { minDelayMs: 20000, maxDelayMs: 30000 } });
  client.connect();
  await rec.next('state', (s) => s.state === 'open');
  await client.join('room-drop');
  await server.api('/api/push', { uid: 'u-drop', data: 'p1' });
  await server.api('/api/push', { group: 'room-drop', data: 'g1' });
  await rec.next('push', (p) => p.data === 'g1');
  const firstConn = client.conn;

  env.net.down();
  await rec.next('state', (s) => s.state === 'reconnecting' && s.code === 1006);
  for (const data of ['p2', 'p3', 'p4']) await server.api('/api/push', { uid: 'u-drop', data });
  await server.api('/api/push', { group: 'room-drop', data: 'g2' });

  env.net.up();
  env.networkChange(true);
  const resume = await rec.next('resume', () => true, 5000);
  assert.equal(resume.complete, true);
  assert.equal(resume.epochChanged, false);
  // The server replayed exactly p2-p4 and g2: 'all' was resumed from the welcome's seq.
  assert.equal(resume.resumed, 4);
  assert.notEqual(client.conn, firstConn);
  assert.equal(client.state, 'open');
  await server.api('/api/push', { uid: 'u-drop', data: 'p5' });
  await server.api('/api/push', { group: 'room-drop', data: 'g3' });
  await rec.next('push', (p) => p.data === 'p5');
  await rec.next('push', (p) => p.data === 'g3');

  assert.deepEqual(
    pushesOn(rec, 'u:u-drop').map((p) => `${p.seq}:${p.data}`),
    ['1:p1', '2:p2', '3:p3', '4:p4', '5:p5']
  );
  assert.deepEqual(
    pushesOn(rec, 'g:room-drop').map((p) => `${p.seq}:${p.data}`),
    ['1:g1', '2:g2', '3:g3']
  );
  // The broadcast predates this client: never replayed.
  assert.deepEqual(pushesOn(rec, 'all'), []);
  assert.equal(env.stats.attempts, 2, 'one reconnect, right when the network came back');
});

test('onAppShow reconnects at once while waiting, and probes a socket that looks open', async (t) => {
  const { env, client, rec } = setup(t, {
    uid: 'u-show',
    options: { minDelayMs: 20000, maxDelayMs: 30000, probeTimeoutMs: 1000 },
  });
  client.connect();
  await rec.next('state', (s) => s.state === 'open');

  // Healthy socket: the probe's pong comes back, nothing changes.
  const conn1 = client.conn;
  env.appShow();
  await sleep(1500);
  assert.equal(client.conn, conn1);
  assert.equal(env.stats.attempts, 1);

  // Waiting out a long backoff: onAppShow connects now.
  env.net.down();
  await rec.next('state', (s) => s.state === 'reconnecting');
  env.net.up();
  env.appShow();
  await rec.next('resume', () => true, 3000);
  const conn2 = client.conn;
  assert.notEqual(conn2, conn1);

  // A socket that died silently while the app was hidden: the probe finds out and reconnects.
  env.net.blackhole();
  env.appShow();
  await rec.next('error', (e) => e.code === 'heartbeat_timeout', 3000);
  await rec.next('resume', () => true, 5000);
  assert.notEqual(client.conn, conn2);
  assert.equal(client.state, 'open');
});

test('reconnect() called many times in a row still holds one socket at a time', async (t) => {
  const { env, client, rec } = setup(t, { uid: 'u-many' });
  client.connect();
  await rec.next('state', (s) => s.state === 'open');
  for (let i = 0; i < 5; i++) {
    client.reconnect();
    await sleep(i * 5);
  }
  await waitFor(() => client.state === 'open', 5000, 'open again');
  await sleep(300);
  assert.equal(client.state, 'open');
  assert.equal(env.stats.live, 1);
});

test('a server restart (SIGTERM, new process on the same port) is healed, the epoch change reported', async (t) => {
  let srv = await startServer();
  const { env, client, rec } = setup(t, { uid: 'u-restart', srv, options: { minDelayMs: 100, maxDelayMs: 400 } });
  t.after(() => srv.stop());
  client.connect();
  await rec.next('state', (s) => s.state === 'open');
  await client.join('room-restart');
  await srv.api('/api/push', { uid: 'u-restart', data: 'before' });
  await rec.next('push', (p) => p.data === 'before');
  const oldEpoch = client.epoch;

  assert.deepEqual(await srv.stop('SIGTERM'), { code: 0, signal: null });
  await rec.next('state', (s) => s.state === 'reconnecting' && s.code === 1001);
  env.net.down(); // keep the client away until the new server has pushes to resume
  srv = await startServer({ port: srv.port });
  await srv.api('/api/push', { uid: 'u-restart', data: 'during 1' });
  await srv.api('/api/push', { uid: 'u-restart', data: 'during 2' });
  await srv.api('/api/push', { group: 'room-restart', data: 'group during' });
  env.net.up();
  env.networkChange(true);

  const resume = await rec.next('resume', () => true, 10000);
  assert.equal(resume.complete, false);
  assert.equal(resume.epochChanged, true);
  assert.notEqual(resume.epoch, oldEpoch);
  assert.deepEqual(client.groups, ['room-restart']);
  await srv.api('/api/push', { uid: 'u-restart', data: 'after' });
  await srv.api('/api/push', { group: 'room-restart', data: 'group after' });
  await rec.next('push', (p) => p.data === 'after');
  await rec.next('push', (p) => p.data === 'group after');
  // The new epoch numbers from 1 again; nothing was dropped as a "duplicate" of the old seqs.
  assert.deepEqual(
    pushesOn(rec, 'u:u-restart').map((p) => `${p.seq}:${p.data}`),
    ['1:before', '1:during 1', '2:during 2', '3:after']
  );
  assert.deepEqual(
    pushesOn(rec, 'g:room-restart').map((p) => `${p.seq}:${p.data}`),
    ['1:group during', '2:group after']
  );
});

test('resume ordering, exactly: live pushes held, replay sorted, duplicates and pre-follow history dropped', async (t) => {
  // A scripted server: `sockets[i].serverSends(frame)` and `.sent` (the client's frames).
  const sockets = [];
  const scriptedWx = {
    connectSocket() {
      const h = { message: [], close: [], error: [] };
      const sock = {
        sent: [],
        serverSends: (frame) => h.message.forEach((fn) => fn({ data: JSON.stringify(frame) })),
        serverCloses: (code) => h.close.forEach((fn) => fn({ code, reason: '' })),
      };
      sockets.push(sock);
      return {
        onOpen() {},
        onMessage: (fn) => h.message.push(fn),
        onClose: (fn) => h.close.push(fn),
        onError: (fn) => h.error.push(fn),
        send: ({ data }) => sock.sent.push(JSON.parse(data)),
        close: () => setTimeout(() => sock.serverCloses(1000), 0),
      };
    },
    onAppShow() {},
    onNetworkStatusChange() {},
  };
  const client = MiniPush.createClient({
    url: 'ws://scripted/ws',
    adapter: MiniPush.wxAdapter(scriptedWx),
    ticket: async () => ({ sig: 'a'.repeat(40), ts: 1700000000, uid: 'u1' }),
    minDelayMs: 10,
    maxDelayMs: 20,
  });
  t.after(() => client.close());
  const rec = recorder(client);
  const now = Date.now();
  const welcome = { type: 'welcome', conn: 'c1', uid: 'u1', node: 'n', epoch: 'e1', time: Math.floor(now / 1000), heartbeat: 25 };
  const push = (stream, seq, data, time = Date.now()) => ({ type: 'push', stream, seq, data, time });

  client.connect();
  await waitFor(() => sockets.length === 1, 2000, 'the first socket');
  sockets[0].serverSends(welcome);
  sockets[0].serverSends(push('u:u1', 1, 'a'));
  sockets[0].serverCloses(1006);

  await waitFor(() => sockets.length === 2, 2000, 'the second socket');
  const s = sockets[1];
  s.serverSends(Object.assign({}, welcome, { conn: 'c2' }));
  await waitFor(() => s.sent.find((f) => f.type === 'resume'), 2000, 'the resume frame');
  const resumeFrame = s.sent.find((f) => f.type === 'resume');
  assert.deepEqual(resumeFrame.streams, { all: 0, 'u:u1': 1 });
  assert.equal(resumeFrame.epoch, 'e1');
  assert.equal(client.state, 'resuming');

  s.serverSends(push('u:u1', 4, 'd')); // live, arrives before the replay
  s.serverSends(push('c:c2', null, 'direct')); // no seq: cannot be ordered, delivered as it came
  s.serverSends(push('u:u1', 2, 'b')); // replayed
  s.serverSends(push('u:u1', 1, 'a')); // already delivered
  s.serverSends(push('u:u1', 3, 'c'));
  s.serverSends(push('u:u1', 3, 'c'));
  s.serverSends(push('all', 7, 'old broadcast', now - 3600 * 1000)); // before this client followed 'all'
  s.serverSends(push('all', 8, 'new broadcast'));
  assert.equal(rec.of('push').length, 1, 'nothing delivered before the resume reply');
  s.serverSends({ type: 'reply', ref: resumeFrame.id, data: { resumed: 5, complete: true } });
  await rec.next('resume', () => true, 2000);

  assert.deepEqual(
    rec.of('push').map((p) => `${p.stream}/${p.seq}/${p.data}`),
    ['u:u1/1/a', 'c:c2/null/direct', 'u:u1/2/b', 'u:u1/3/c', 'u:u1/4/d', 'all/8/new broadcast']
  );
  assert.deepEqual(rec.of('resume'), [{ resumed: 5, complete: true, epochChanged: false, epoch: 'e1' }]);
  s.serverSends(push('u:u1', 4, 'd')); // a late duplicate
  s.serverSends(push('u:u1', 5, 'e'));
  assert.deepEqual(rec.of('push').slice(6).map((p) => p.data), ['e']);
});
