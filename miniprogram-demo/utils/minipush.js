/*
 * minipush.js: the client library for the minipush push gateway, for WeChat mini-programs
 * (wx.connectSocket) and browsers (WebSocket). One file, plain ES2017, no build step.
 *
 *   Mini-program:  const MiniPush = require('../../utils/minipush.js')
 *   Browser:       <script src="minipush.js"></script>   then   window.MiniPush
 *
 *   const client = MiniPush.createClient({
 *     url: 'wss://push.example.com/ws',
 *     ticket: MiniPush.loginTicket({ url: 'https://push.example.com/api/login' }),
 *   })
 *   client.on('push', (p) => console.log(p.stream, p.seq, p.data))
 *   client.on('resume', (r) => { if (!r.complete) reloadFromYourBackend() })
 *   client.connect()
 *   client.join('room1').then(() => client.chat('room1', 'hello'))
 *
 * MiniPush.createClient(options) -> client
 *   url               the gateway's WebSocket URL, e.g. 'wss://push.example.com/ws' (required)
 *   ticket            function () -> Promise<{ sig, ts, uid }>: a ticket source (below) (required)
 *   adapter           the transport (below); default: wxAdapter() when `wx` exists, else browserAdapter()
 *   heartbeatMs       interval of the app-level {"type":"ping"} (20000, or the welcome's
 *                     `heartbeat` if that is shorter; the server drops a client that sends
 *                     nothing for 60 s)
 *   pongTimeoutMs     no frame at all this long after a ping: the socket is dead, reconnect (10000)
 *   probeTimeoutMs    the same after the app comes back to the foreground or the network
 *                     changes, when a socket that looks open is checked with a ping (3000)
 *   connectTimeoutMs  from opening a socket to its `welcome` frame (10000)
 *   closeTimeoutMs    how long a socket we are closing may take to report it closed before
 *                     we stop waiting for it (3000)
 *   requestTimeoutMs  default timeout of request() (10000)
 *   minDelayMs, maxDelayMs  reconnect backoff: attempt n waits a random 50-100 % of
 *                     min(maxDelayMs, minDelayMs * 2^n) (1000, 30000)
 *   ticketMaxAgeMs    a ticket is reused for reconnects while younger than this (240000; the
 *                     server accepts tickets up to auth.max_skew_secs = 300 s old)
 *
 * client
 *   connect()         start connecting; also restarts a client that is 'stopped' or 'closed'.
 *                     Watch the 'state' event; every failure is retried except the ones that
 *                     stop the client (see 'stopped').
 *   close()           close for good: no reconnect; requests not answered reject with 'closed'.
 *                     Returns a Promise that resolves once the socket is really gone (at most
 *                     closeTimeoutMs): wait for it before making another client, to hold one
 *                     socket at a time.
 *   reconnect()       drop the socket (if any) and connect again now.
 *   request(msg, { timeoutMs })  -> Promise of the reply's `data`. `msg` is a client frame such
 *                     as { type: 'echo', data: 1 }; the library sets its `id`. Sent at once when
 *                     connected, otherwise queued until the next welcome (the timeout runs from
 *                     the call). Rejects with an Error whose `code` is the server's error code
 *                     ('not_member', 'unknown_type', 'rate_limited', ...; then `fromServer` is
 *                     true) or one of 'bad_request' (msg has no string type), 'timeout',
 *                     'connection_lost' (the socket closed before the answer: the message may or
 *                     may not have been handled), 'not_connected' (the client is idle, stopped
 *                     or closed), 'closed' (close() was called), 'stopped'.
 *   join(group), leave(group)  -> Promise; a group joined here is joined again after every
 *                     reconnect, before the resume, so its pushes are resumed too.
 *   chat(group, text) -> Promise<{ sent: true, seq }>
 *   echo(data)        -> Promise<{ echo: data }>
 *   on(event, fn)     -> a function that removes the listener; off(event, fn) does the same.
 *   state, conn, uid, epoch, groups   read-only: the state, and what the last welcome said.
 *
 * events (listener argument)
 *   'state'    { state, prev, code, reason, delayMs }; states:
 *                'idle' (not started) -> 'connecting' (getting a ticket, opening the socket)
 *                -> 'resuming' (after a reconnect, until the resume reply) -> 'open';
 *                'reconnecting' (waiting delayMs before the next attempt; code and reason say
 *                why the last socket closed); 'stopped' (the server refused this client, see
 *                'stopped'); 'closed' (close() was called).
 *   'welcome'  the server's welcome frame { conn, uid, node, epoch, time, heartbeat }.
 *   'push'     a push frame { stream, seq, data, time }. Each push on a stream is delivered
 *              once and in seq order, across reconnects (see below).
 *   'reply'    every reply frame { ref, data } (also those that settle a request()).
 *   'error'    an Error with a `code`: the server's error frames (`fromServer` true, and
 *              `ref`, the id of the request it answers), and local trouble: 'ticket_failed', 'socket_error', 'connect_timeout',
 *              'heartbeat_timeout', 'bad_frame', 'resume_failed', 'rejoin_failed'.
 *              Informational: the client recovers by itself.
 *   'resume'   { resumed, complete, epochChanged, epoch } after each reconnect. complete is
 *              false when the server's history no longer reaches back to what this client
 *              last saw, or the server restarted (epochChanged: its seq numbers started
 *              again): some pushes may be lost, so reload the page's state from your backend.
 *   'stopped'  { code, reason }: no more reconnects, because of close code 4001 (bad ticket
 *              signature), 4003 (malformed ticket), 4004 (replaced by a newer connection of
 *              the same uid), 4010 (kicked), three 4002 (ticket expired) in a row even with
 *              fresh tickets (check the device clock), or a socket that cannot even be
 *              created (code null). connect() tries again.
 *   'frame'    { dir: 'in' | 'out', frame } every frame received or sent, for logs.
 *
 * Ticket sources: functions returning Promise<{ sig, ts, uid }> (uid null for anonymous)
 *   MiniPush.loginTicket({ url, wx })  wx.login(), then POST url {"code"} -> {"uid","ts","sig"}:
 *                     minipush's POST /api/login, or your backend's equivalent. For production.
 *   MiniPush.httpTicket(url, { wx })   GET url -> {"uid","ts","sig"}, e.g. the dev server's
 *                     /demo/ticket?uid=u1, or your own backend's endpoint.
 *   MiniPush.devTicket({ token, uid, sha1 })  signs on the device with the server's token and
 *                     utils/sha1.js. DEVELOPMENT ONLY: whoever has the app has the token.
 *   The ticket is fetched before the first connect and again when it is older than
 *   ticketMaxAgeMs or the server said 4002 (expired). A source that fails is retried with the
 *   same backoff. HTTP goes through wx.request in a mini-program, fetch in a browser.
 *
 * Adapters: the core talks to the network only through an adapter
 *   { open(url, protocols, { message(text), close(code, reason), error(err) }) -> { send(text), close(code, reason) },
 *     watch(wake) -> unwatch }
 *   open() must call close() exactly once, whatever happens. watch() calls wake() when the app
 *   comes back to the foreground or the network comes back.
 *   MiniPush.wxAdapter(wx)      wx.connectSocket + SocketTask; wake on wx.onAppShow and
 *                               wx.onNetworkStatusChange (isConnected).
 *   MiniPush.browserAdapter(WebSocket)  new WebSocket(url, protocols); wake on the window's
 *                               'online' event and when the page becomes visible.
 *
 * Delivery across reconnects. The client remembers the last seq it delivered on each stream
 * (its u:<uid> stream, 'all', the groups it joined, and any stream a push came on) and the
 * epoch of the last welcome. After every reconnect it joins its groups again, sends
 *   {"type":"resume","streams":{"u:u1":17,"all":3,"g:room1":0},"epoch":"<previous>"}
 * and holds live pushes until the reply; then it delivers the replayed and held pushes of each
 * stream sorted by seq, dropping any it already delivered. Each stream starts at the seq the
 * server gave when the client began following it (the welcome's `seqs` for its u: stream and
 * 'all', the join reply's `seq` for a group), so a reconnect replays exactly what was missed
 * and nothing from before the user was there. (With a server that gives no seqs, pushes older
 * than the moment of following are skipped instead, to within the welcome clock's second.)
 * When the epoch changed, the seqs are reset for the new epoch. Pushes without a seq
 * (c: streams, "store":false) cannot be resumed; those sent while disconnected are lost.
 * The first connection does not resume: load the initial state from your backend.
 *
 * One socket at a time: a new socket is opened only after the previous one reported its
 * close (or closeTimeoutMs passed), so a reconnecting client never holds two of the five
 * sockets a mini-program may have.
 *
 * Numbers: frames are parsed with JSON.parse, so integers beyond 2^53 in `data` lose
 * precision; send such ids as strings.
 */
(function (root, factory) {
  if (typeof module === 'object' && module && module.exports) {
    module.exports = factory(root);
  } else {
    root.MiniPush = factory(root);
  }
})(typeof self !== 'undefined' ? self : this, function (root) {
  'use strict';

  /** Close codes after which reconnecting cannot help: the client stops. */
  const STOP_CODES = {
    4001: 'invalid ticket signature',
    4003: 'malformed or missing credentials',
    4004: 'replaced by a newer connection of the same uid',
    4010: 'kicked by an operator',
  };
  const TICKET_EXPIRED = 4002;
  const MAX_EXPIRED_IN_A_ROW = 3;

  const DEFAULTS = {
    heartbeatMs: 20000,
    pongTimeoutMs: 10000,
    probeTimeoutMs: 3000,
    connectTimeoutMs: 10000,
    closeTimeoutMs: 3000,
    requestTimeoutMs: 10000,
    minDelayMs: 1000,
    maxDelayMs: 30000,
    ticketMaxAgeMs: 240000,
  };

  /** An Error with a machine-readable `code` (and any extra fields). */
  function mpError(code, message, extra) {
    const err = new Error(message || code);
    err.name = 'MiniPushError';
    err.code = code;
    return Object.assign(err, extra);
  }

  function globalWx() {
    return typeof wx === 'object' && wx && typeof wx.connectSocket === 'function' ? wx : null;
  }

  // ---------------------------------------------------------------- the client

  class Client {
    constructor(options) {
      if (!options || typeof options.url !== 'string') throw new TypeError('minipush: options.url is required');
      if (typeof options.ticket !== 'function') throw new TypeError('minipush: options.ticket must be a function');
      this._opt = Object.assign({}, DEFAULTS, options);
      this._adapter = options.adapter || defaultAdapter();
      this._listeners = {};
      this._state = 'idle';
      this._socket = null; // { io, phase: 'opening' | 'open' | 'closing', closeTimer }: the only socket
      this._openWhenClosed = false; // open a new socket as soon as the current one has closed
      this._attemptGen = 0; // bumped to abandon a ticket fetch in progress
      this._attempt = 0; // failed attempts since the last welcome, for the backoff
      this._expiredInARow = 0;
      this._ticket = null;
      this._ticketAt = 0;
      this._timers = {}; // retry, connect, heartbeat, pong
      this._pending = new Map(); // request id -> { frame, sent, resolve, reject, timer }
      this._nextId = 0;
      this._unwatch = null;
      this._conn = null;
      this._uid = null;
      this._epoch = null;
      this._clockOffsetMs = 0; // server clock minus ours, from the welcome (1 s resolution)
      this._streams = {}; // stream -> { seq: last delivered, since: server ms when we began following it }
      this._groups = []; // joined through join(): joined again after each reconnect
      this._held = null; // pushes held while a resume is in flight
      this._closeWaiters = []; // close() promises, resolved when the socket is gone
    }

    get state() { return this._state; }
    get conn() { return this._conn; }
    get uid() { return this._uid; }
    get epoch() { return this._epoch; }
    get groups() { return this._groups.slice(); }

    on(event, fn) {
      (this._listeners[event] || (this._listeners[event] = [])).push(fn);
      return () => this.off(event, fn);
    }

    off(event, fn) {
      const list = this._listeners[event];
      const i = list ? list.indexOf(fn) : -1;
      if (i >= 0) list.splice(i, 1);
    }

    connect() {
      if (this._state === 'connecting' || this._state === 'resuming' || this._state === 'open') return;
      if (!this._unwatch && this._adapter.watch) this._unwatch = this._adapter.watch(() => this._wake());
      this._attempt = 0;
      this._expiredInARow = 0;
      this._open();
    }

    reconnect() {
      if (this._state === 'idle' || this._state === 'stopped' || this._state === 'closed') {
        this.connect();
      } else {
        this._attempt = 0;
        this._open();
      }
    }

    close() {
      if (this._state !== 'closed') {
        this._setState('closed');
        this._attemptGen++;
        this._openWhenClosed = false;
        this._shutdown(mpError('closed', 'the client was closed'));
        this._drop('client closed');
      }
      if (!this._socket) return Promise.resolve();
      return new Promise((resolve) => this._closeWaiters.push(resolve));
    }

    request(msg, opts) {
      if (!msg || typeof msg.type !== 'string') {
        return Promise.reject(mpError('bad_request', 'request(msg): msg.type must be a string'));
      }
      if (this._state === 'idle' || this._state === 'stopped' || this._state === 'closed') {
        return Promise.reject(mpError('not_connected', 'the client is ' + this._state + ': call connect() first'));
      }
      const timeoutMs = (opts && opts.timeoutMs) || this._opt.requestTimeoutMs;
      return this._call(Object.assign({}, msg), timeoutMs);
    }

    join(group) {
      return this.request({ type: 'join', group: group }).then((data) => {
        this._joined(group, data && data.seq);
        return data;
      });
    }

    leave(group) {
      return this.request({ type: 'leave', group: group }).then((data) => {
        this._groups = this._groups.filter((g) => g !== group);
        delete this._streams['g:' + group];
        return data;
      });
    }

    chat(group, text) {
      return this.request({ type: 'chat', group: group, text: text });
    }

    echo(data) {
      return this.request({ type: 'echo', data: data });
    }

    // ------------------------------------------------------------ connecting

    /** Opens a new socket now (after the current one, if any, has closed). */
    _open() {
      this._clearTimer('retry');
      this._setState('connecting');
      const gen = ++this._attemptGen;
      if (this._socket) {
        this._openWhenClosed = true;
        this._drop('reconnecting');
        return;
      }
      this._getTicket().then(
        (ticket) => {
          if (gen === this._attemptGen) this._attach(ticket);
        },
        (err) => {
          if (gen !== this._attemptGen) return;
          this._emit('error', mpError('ticket_failed', 'could not get a ticket: ' + (err && err.message), { cause: err }));
          this._scheduleRetry(null, 'no ticket');
        }
      );
    }

    _getTicket() {
      if (this._ticket && Date.now() - this._ticketAt < this._opt.ticketMaxAgeMs) return Promise.resolve(this._ticket);
      return Promise.resolve()
        .then(() => this._opt.ticket())
        .then((t) => {
          checkTicket(t);
          this._ticket = t;
          this._ticketAt = Date.now();
          return t;
        });
    }

    _attach(ticket) {
      const protocols = [String(ticket.sig), String(ticket.ts)];
      if (ticket.uid) protocols.push(String(ticket.uid));
      const rec = { io: null, phase: 'opening', closeTimer: null };
      this._socket = rec;
      this._armTimer('connect', this._opt.connectTimeoutMs, () => {
        this._emit('error', mpError('connect_timeout', 'no welcome within ' + this._opt.connectTimeoutMs + ' ms'));
        this._drop('connect timeout');
      });
      try {
        rec.io = this._adapter.open(this._opt.url, protocols, {
          message: (text) => {
            if (this._socket === rec && rec.phase !== 'closing') this._onText(text);
          },
          close: (code, reason) => this._socketGone(rec, code, reason),
          error: (err) => {
            if (this._socket !== rec) return;
            this._emit('error', mpError('socket_error', (err && (err.errMsg || err.message)) || 'socket error'));
            this._drop('socket error');
          },
        });
      } catch (err) {
        // The socket cannot even be created (a malformed URL, say): retrying will not help.
        this._socket = null;
        this._clearTimer('connect');
        this._stop(null, 'cannot open a socket: ' + (err && err.message));
      }
    }

    /** Asks the current socket to close; _socketGone follows (or the close timeout does). */
    _drop(reason) {
      const rec = this._socket;
      if (!rec || rec.phase === 'closing') return;
      rec.phase = 'closing';
      rec.closeTimer = setTimeout(() => this._socketGone(rec, 1006, 'closed (timed out waiting for the close)'), this._opt.closeTimeoutMs);
      try {
        if (rec.io) rec.io.close(1000, reason);
      } catch (err) {
        this._socketGone(rec, 1006, reason);
      }
    }

    _socketGone(rec, code, reason) {
      if (this._socket !== rec) return;
      clearTimeout(rec.closeTimer);
      this._socket = null;
      this._closeWaiters.splice(0).forEach((resolve) => resolve());
      ['connect', 'heartbeat', 'pong'].forEach((t) => this._clearTimer(t));
      this._held = null; // not delivered: the next resume asks for them again
      this._conn = null;
      this._pending.forEach((entry, id) => {
        if (entry.sent) this._settle(id, mpError('connection_lost', 'the connection closed before the answer'));
      });

      if (this._state === 'closed') return;
      if (this._openWhenClosed) {
        this._openWhenClosed = false;
        this._open();
        return;
      }
      if (STOP_CODES[code]) {
        this._stop(code, reason || STOP_CODES[code]);
        return;
      }
      if (code === TICKET_EXPIRED) {
        this._ticket = null;
        if (++this._expiredInARow >= MAX_EXPIRED_IN_A_ROW) {
          this._stop(code, 'the ticket keeps expiring (4002): check the device clock and the ticket source');
          return;
        }
      }
      this._scheduleRetry(code, reason);
    }

    _scheduleRetry(code, reason) {
      const base = Math.min(this._opt.maxDelayMs, this._opt.minDelayMs * Math.pow(2, this._attempt));
      const delayMs = Math.round(base / 2 + (Math.random() * base) / 2);
      this._attempt++;
      this._setState('reconnecting', { code: code, reason: reason, delayMs: delayMs });
      this._armTimer('retry', delayMs, () => this._open());
    }

    _stop(code, reason) {
      this._ticket = null;
      this._setState('stopped', { code: code, reason: reason });
      this._shutdown(mpError('stopped', 'the client stopped: ' + reason));
      this._emit('stopped', { code: code, reason: reason });
    }

    /** Ends everything but the socket: timers, lifecycle hooks, waiting requests. */
    _shutdown(err) {
      Object.keys(this._timers).forEach((t) => this._clearTimer(t));
      if (this._unwatch) this._unwatch();
      this._unwatch = null;
      this._pending.forEach((entry, id) => this._settle(id, err));
    }

    /** The app came back to the foreground, or the network came back. */
    _wake() {
      if (this._state === 'reconnecting') {
        this._attempt = 0;
        this._open();
      } else if (this._state === 'open' || this._state === 'resuming') {
        this._ping(this._opt.probeTimeoutMs, true); // the socket may have died while we were away
      }
    }

    // ------------------------------------------------------------ frames in

    _onText(text) {
      this._clearTimer('pong'); // any frame proves the socket alive
      let f;
      try {
        f = JSON.parse(text);
      } catch (err) {
        f = null;
      }
      if (!f || typeof f.type !== 'string') {
        this._emit('error', mpError('bad_frame', 'not a minipush frame: ' + String(text).slice(0, 100)));
        return;
      }
      this._emit('frame', { dir: 'in', frame: f });
      if (f.type === 'welcome') {
        this._onWelcome(f);
      } else if (f.type === 'push') {
        if (this._held) this._held.push(f);
        else this._deliver(f);
      } else if (f.type === 'reply') {
        if (f.ref != null) this._settle(f.ref, null, f.data);
        this._emit('reply', f);
      } else if (f.type === 'error') {
        const err = mpError(f.code, f.message, { ref: f.ref, fromServer: true });
        this._emit('error', err);
        if (f.ref != null) this._settle(f.ref, err);
      }
      // 'pong' needs nothing more; unknown types are ignored, for newer servers.
    }

    _onWelcome(f) {
      const rec = this._socket;
      rec.phase = 'open';
      this._clearTimer('connect');
      this._attempt = 0;
      this._expiredInARow = 0;
      this._conn = f.conn;
      this._uid = f.uid || null;
      this._clockOffsetMs = f.time * 1000 - Date.now();
      const prevEpoch = this._epoch;
      this._epoch = f.epoch;
      const seqs = f.seqs || {};
      this._follow('all', seqs.all);
      if (this._uid) this._follow('u:' + this._uid, seqs['u:' + this._uid]);
      this._emit('welcome', f);
      this._scheduleHeartbeat(Math.min(this._opt.heartbeatMs, f.heartbeat > 0 ? f.heartbeat * 1000 : Infinity));

      if (prevEpoch === null) {
        this._setState('open');
        this._flushQueue();
        return;
      }
      // A reconnect: join the groups again, then resume every stream, holding live pushes.
      this._held = [];
      this._setState('resuming');
      this._groups.forEach((group) => {
        this._call({ type: 'join', group: group }, this._opt.requestTimeoutMs).catch((err) => {
          if (!err.fromServer) return; // the connection failed: try again after the next reconnect
          this._groups = this._groups.filter((g) => g !== group);
          this._emit('error', mpError('rejoin_failed', 'could not join ' + group + ' again: ' + err.message, { group: group, cause: err }));
        });
      });
      const streams = {};
      Object.keys(this._streams).forEach((name) => {
        streams[name] = this._streams[name].seq;
      });
      const epochChanged = prevEpoch !== f.epoch;
      if (epochChanged) {
        // The server's numbering started again: what we saw says nothing about the new seqs.
        Object.keys(this._streams).forEach((name) => {
          this._streams[name] = { seq: 0, since: 0 };
        });
      }
      this._call({ type: 'resume', streams: streams, epoch: prevEpoch }, this._opt.requestTimeoutMs).then(
        (r) => this._resumed(rec, (r && r.resumed) || 0, !!(r && r.complete) && !epochChanged, epochChanged),
        (err) => {
          if (this._socket !== rec) return;
          this._emit('error', mpError('resume_failed', 'resume failed: ' + err.message, { cause: err }));
          this._resumed(rec, 0, false, epochChanged);
        }
      );
      this._flushQueue();
    }

    /** The resume reply came: deliver what was replayed and held, per stream in seq order. */
    _resumed(rec, resumed, complete, epochChanged) {
      if (this._socket !== rec || !this._held) return;
      const held = this._held;
      this._held = null;
      const byStream = {};
      const order = [];
      held.forEach((p) => {
        if (typeof p.seq !== 'number') {
          this._deliver(p); // no seq (c: streams, store:false): as they came
          return;
        }
        if (!byStream[p.stream]) {
          byStream[p.stream] = [];
          order.push(p.stream);
        }
        byStream[p.stream].push(p);
      });
      order.forEach((name) => {
        const s = this._streams[name];
        byStream[name]
          .sort((a, b) => a.seq - b.seq)
          .forEach((p) => {
            // Nothing delivered on this stream yet: skip what predates our following it.
            if (s && s.seq === 0 && p.time < s.since) return;
            this._deliver(p);
          });
      });
      this._setState('open');
      this._emit('resume', { resumed: resumed, complete: complete, epochChanged: epochChanged, epoch: this._epoch });
    }

    _deliver(p) {
      if (typeof p.seq === 'number' && p.stream) {
        const s = this._streams[p.stream] || (this._streams[p.stream] = { seq: 0, since: 0 });
        if (p.seq <= s.seq) return; // delivered already
        s.seq = p.seq;
      }
      this._emit('push', p);
    }

    /**
     * Starts tracking `stream`, unless it is tracked already: from `seq` when the server said
     * where its live pushes start (welcome `seqs`, the join reply's `seq`), else from now
     * (server time) for servers that do not say.
     */
    _follow(stream, seq) {
      if (this._streams[stream]) return;
      this._streams[stream] =
        typeof seq === 'number' ? { seq: seq, since: 0 } : { seq: 0, since: Date.now() + this._clockOffsetMs };
    }

    _joined(group, seq) {
      if (this._groups.indexOf(group) < 0) this._groups.push(group);
      this._follow('g:' + group, seq);
    }

    // ------------------------------------------------------------ frames out

    _isOpen() {
      return !!this._socket && this._socket.phase === 'open';
    }

    _send(frame) {
      try {
        this._socket.io.send(JSON.stringify(frame));
      } catch (err) {
        this._emit('error', mpError('socket_error', 'send failed: ' + (err && err.message)));
        this._drop('send failed');
        return;
      }
      this._emit('frame', { dir: 'out', frame: frame });
    }

    _call(frame, timeoutMs) {
      const id = String(++this._nextId);
      frame.id = id;
      return new Promise((resolve, reject) => {
        const entry = { frame: frame, sent: false, resolve: resolve, reject: reject, timer: null };
        entry.timer = setTimeout(() => this._settle(id, mpError('timeout', frame.type + ': no answer within ' + timeoutMs + ' ms')), timeoutMs);
        this._pending.set(id, entry);
        if (this._isOpen()) this._sendRequest(entry);
      });
    }

    _sendRequest(entry) {
      entry.sent = true;
      this._send(entry.frame);
    }

    _flushQueue() {
      this._pending.forEach((entry) => {
        if (!entry.sent && this._isOpen()) this._sendRequest(entry);
      });
    }

    _settle(id, err, data) {
      const entry = this._pending.get(id);
      if (!entry) return;
      this._pending.delete(id);
      clearTimeout(entry.timer);
      if (err) entry.reject(err);
      else entry.resolve(data);
    }

    // ------------------------------------------------------------ heartbeat

    _scheduleHeartbeat(intervalMs) {
      this._armTimer('heartbeat', intervalMs, () => {
        this._ping(this._opt.pongTimeoutMs);
        this._scheduleHeartbeat(intervalMs);
      });
    }

    /**
     * Sends a ping; if no frame at all arrives within `timeoutMs`, the socket is dead: drop it
     * and reconnect, at once when `now` (a wake-up probe), else after the usual backoff.
     */
    _ping(timeoutMs, now) {
      if (!this._isOpen()) return;
      this._send({ type: 'ping' });
      this._armTimer('pong', timeoutMs, () => {
        this._emit('error', mpError('heartbeat_timeout', 'no answer to a ping within ' + timeoutMs + ' ms'));
        if (now) this._open();
        else this._drop('heartbeat timeout');
      });
    }

    // ------------------------------------------------------------ plumbing

    _setState(state, detail) {
      const prev = this._state;
      if (state === prev && state !== 'reconnecting') return;
      this._state = state;
      this._emit('state', Object.assign({ state: state, prev: prev, code: null, reason: null, delayMs: null }, detail));
    }

    _emit(event, payload) {
      (this._listeners[event] || []).slice().forEach((fn) => {
        try {
          fn(payload);
        } catch (err) {
          console.error('[minipush] a "' + event + '" listener threw:', err);
        }
      });
    }

    _armTimer(name, ms, fn) {
      this._clearTimer(name);
      this._timers[name] = setTimeout(() => {
        delete this._timers[name];
        fn();
      }, ms);
    }

    _clearTimer(name) {
      if (this._timers[name] === undefined) return;
      clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  }

  function checkTicket(t) {
    const ok =
      t &&
      /^[0-9a-fA-F]{40}$/.test(String(t.sig)) &&
      /^[0-9]+$/.test(String(t.ts)) &&
      (t.uid == null || t.uid === '' || /^[A-Za-z0-9_.-]{1,64}$/.test(String(t.uid)));
    if (!ok) throw mpError('bad_ticket', 'a ticket is { sig: 40 hex digits, ts: Unix seconds, uid: null or 1-64 of [A-Za-z0-9_.-] }, got ' + JSON.stringify(t));
  }

  // ---------------------------------------------------------------- adapters

  /** The mini-program transport: wx.connectSocket and its SocketTask. */
  function wxAdapter(wxApi) {
    wxApi = wxApi || globalWx();
    if (!wxApi) throw new TypeError('minipush: wxAdapter needs the wx object');
    return {
      open: function (url, protocols, on) {
        let closed = false;
        function close(code, reason) {
          if (closed) return;
          closed = true;
          on.close(code, reason);
        }
        const task = wxApi.connectSocket({
          url: url,
          protocols: protocols,
          fail: function (res) {
            on.error(res);
            close(1006, (res && res.errMsg) || 'connectSocket failed');
          },
        });
        task.onMessage(function (res) {
          on.message(res.data);
        });
        task.onError(function (res) {
          on.error(res);
        });
        task.onClose(function (res) {
          close(res && res.code, res && res.reason);
        });
        return {
          send: function (text) {
            task.send({
              data: text,
              fail: function (res) {
                on.error(res);
              },
            });
          },
          close: function (code, reason) {
            task.close({ code: code, reason: reason });
          },
        };
      },
      watch: function (wake) {
        function onShow() {
          wake();
        }
        function onNetwork(res) {
          if (res && res.isConnected) wake();
        }
        wxApi.onAppShow(onShow);
        wxApi.onNetworkStatusChange(onNetwork);
        return function () {
          if (wxApi.offAppShow) wxApi.offAppShow(onShow);
          if (wxApi.offNetworkStatusChange) wxApi.offNetworkStatusChange(onNetwork);
        };
      },
    };
  }

  /** The browser transport: new WebSocket(url, protocols). */
  function browserAdapter(WebSocketImpl) {
    const WS = WebSocketImpl || root.WebSocket;
    if (typeof WS !== 'function') throw new TypeError('minipush: browserAdapter needs WebSocket');
    return {
      open: function (url, protocols, on) {
        const ws = new WS(url, protocols);
        ws.onmessage = function (e) {
          on.message(e.data);
        };
        ws.onerror = function () {
          on.error({ errMsg: 'WebSocket error' });
        };
        ws.onclose = function (e) {
          on.close(e.code, e.reason);
        };
        return {
          send: function (text) {
            ws.send(text);
          },
          close: function (code, reason) {
            ws.close(code, reason);
          },
        };
      },
      watch: function (wake) {
        if (typeof root.addEventListener !== 'function' || typeof document === 'undefined') return function () {};
        function onVisible() {
          if (document.visibilityState === 'visible') wake();
        }
        root.addEventListener('online', wake);
        document.addEventListener('visibilitychange', onVisible);
        return function () {
          root.removeEventListener('online', wake);
          document.removeEventListener('visibilitychange', onVisible);
        };
      },
    };
  }

  function defaultAdapter() {
    return globalWx() ? wxAdapter() : browserAdapter();
  }

  // ---------------------------------------------------------------- ticket sources

  /** JSON over HTTP: wx.request when a wx object is given or global, else fetch. */
  function httpJson(method, url, body, wxApi) {
    wxApi = wxApi || globalWx();
    if (wxApi) {
      return new Promise(function (resolve, reject) {
        wxApi.request({
          url: url,
          method: method,
          data: body,
          header: { 'content-type': 'application/json' },
          success: function (res) {
            if (res.statusCode < 200 || res.statusCode > 299) {
              reject(mpError('http_error', method + ' ' + url + ' answered ' + res.statusCode));
            } else {
              resolve(typeof res.data === 'string' ? JSON.parse(res.data) : res.data);
            }
          },
          fail: function (res) {
            reject(mpError('http_error', method + ' ' + url + ' failed: ' + (res && res.errMsg)));
          },
        });
      });
    }
    return fetch(url, {
      method: method,
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    }).then(function (res) {
      if (!res.ok) throw mpError('http_error', method + ' ' + url + ' answered ' + res.status);
      return res.json();
    });
  }

  /** Production: wx.login(), then POST {code} to your login endpoint for a bound ticket. */
  function loginTicket(opts) {
    const wxApi = (opts && opts.wx) || globalWx();
    if (!opts || typeof opts.url !== 'string' || !wxApi) throw new TypeError('minipush: loginTicket({ url, wx }) runs in a mini-program');
    return function () {
      return new Promise(function (resolve, reject) {
        wxApi.login({
          success: function (res) {
            resolve(res.code);
          },
          fail: function (res) {
            reject(mpError('login_failed', 'wx.login failed: ' + (res && res.errMsg)));
          },
        });
      }).then(function (code) {
        return httpJson('POST', opts.url, { code: code }, wxApi);
      });
    };
  }

  /** A ticket from a GET endpoint answering {uid, ts, sig} (such as /demo/ticket in dev mode). */
  function httpTicket(url, opts) {
    if (typeof url !== 'string') throw new TypeError('minipush: httpTicket(url) needs a URL');
    return function () {
      return httpJson('GET', url, undefined, opts && opts.wx);
    };
  }

  /**
   * DEVELOPMENT ONLY: signs tickets on the device with the server's token.
   * sig = sha1(token + ts + uid); pass utils/sha1.js as `sha1`.
   */
  function devTicket(opts) {
    if (!opts || typeof opts.token !== 'string' || typeof opts.sha1 !== 'function') {
      throw new TypeError('minipush: devTicket({ token, uid, sha1 }) needs the token and a sha1 function');
    }
    console.warn(
      '[minipush] WARNING: devTicket signs tickets on the device with the server token.\n' +
        'Anyone who has this app can read that token and connect as any user.\n' +
        'This is for development only: a production app must never ship the token; get the ticket\n' +
        'from your backend (for example POST /api/login after wx.login) with loginTicket().'
    );
    const uid = opts.uid || null;
    return function () {
      const ts = Math.floor(Date.now() / 1000);
      return Promise.resolve({ sig: opts.sha1(opts.token + ts + (uid || '')), ts: ts, uid: uid });
    };
  }

  return {
    createClient: function (options) {
      return new Client(options);
    },
    wxAdapter: wxAdapter,
    browserAdapter: browserAdapter,
    loginTicket: loginTicket,
    httpTicket: httpTicket,
    devTicket: devTicket,
    STOP_CODES: STOP_CODES,
  };
});
