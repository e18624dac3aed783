// pages/index: the demo page. It listens to the app's minipush client (getApp().client()) and
// shows the connection state, a chat room (join a group, send chat), an echo button, the last
// pushes from the backend, every frame in the message list (components/message-list), and
// the settings (server URL, uid, ticket source).
const app = getApp();

const MAX_LOG = 60;
const MAX_PUSHES = 5;
const MAX_CHAT = 30;
const UID_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const GROUP_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const SOURCES = [
  { value: 'demo', label: 'Dev server /demo/ticket' },
  { value: 'dev', label: 'Sign here with the dev token (sha1.js)' },
  { value: 'login', label: 'wx.login + POST /api/login' },
];

Page({
  data: {
    state: 'idle',
    detail: '',
    conn: '',
    uid: '',
    epoch: '',
    notice: '',
    log: [],
    pushes: [],
    group: 'room1',
    joined: '',
    chatText: '',
    chat: [],
    echoCount: 0,
    echoResult: '',
    sources: SOURCES,
    draft: {},
    pushHint: '',
  },

  onLoad() {
    this.nextId = 0;
    this.setData({ draft: Object.assign({}, app.settings) });
    this.attach();
  },

  onUnload() {
    this.detach();
  },

  /** Subscribes to the app's client and connects it. */
  attach() {
    const client = app.client();
    this.client = client;
    const target = app.settings.uid ? `"uid":"${app.settings.uid}"` : '"all":true';
    const body = `{${target},"data":{"hello":"world"}}`;
    this.setData({ pushHint: `curl -H 'Authorization: Bearer <API key>' -d '${body}' ${app.apiBase()}/api/push` });
    this.offs = [
      client.on('state', (s) => this.onState(s)),
      client.on('frame', (f) => {
        const type = f.frame.type;
        if (type !== 'push' && type !== 'ping' && type !== 'pong') this.addLog({ kind: f.dir, frame: f.frame });
      }),
      client.on('push', (p) => this.onPush(p)),
      client.on('error', (e) => this.addLog({ kind: 'error', text: e.code + ': ' + e.message })),
      client.on('resume', (r) => this.onResume(r)),
      client.on('stopped', (s) => this.setData({ notice: 'Stopped by the server (' + s.code + '): ' + s.reason + '. Tap Connect to try again.' })),
    ];
    this.onState({ state: client.state });
    client.connect();
  },

  detach() {
    (this.offs || []).forEach((off) => off());
    this.offs = [];
  },

  onState(s) {
    const c = this.client;
    let detail = '';
    if (s.state === 'reconnecting') {
      detail = 'retry in ' + (s.delayMs / 1000).toFixed(1) + ' s' + (s.code ? ' (closed ' + s.code + (s.reason ? ': ' + s.reason : '') + ')' : '');
    }
    this.setData({ state: s.state, detail: detail, conn: c.conn || '', uid: c.uid || '', epoch: c.epoch || '' });
    if (s.prev) this.addLog({ kind: 'state', text: s.prev + ' → ' + s.state + (detail ? ', ' + detail : '') });
    if (s.state === 'open' && this.data.joined && c.groups.indexOf(this.data.joined) < 0) this.setData({ joined: '' });
  },

  onPush(p) {
    this.addLog({ kind: 'push', frame: p }); // also gives this.nextId, a unique wx:key
    if (this.data.joined && p.stream === 'g:' + this.data.joined && p.data && typeof p.data.text === 'string') {
      const line = { key: this.nextId, from: String(p.data.from), text: p.data.text, mine: p.data.from === (this.client.uid || this.client.conn) };
      this.setData({ chat: this.data.chat.concat([line]).slice(-MAX_CHAT) });
    } else if (p.stream.indexOf('g:') !== 0) {
      const entry = { key: this.nextId, stream: p.stream, seq: p.seq, data: JSON.stringify(p.data) };
      this.setData({ pushes: [entry].concat(this.data.pushes).slice(0, MAX_PUSHES) });
    }
  },

  onResume(r) {
    if (r.complete) return;
    // A real app reloads its state from its backend here.
    this.setData({
      notice: r.epochChanged
        ? 'The server restarted: pushes sent while it was down may be missing. Reload your data from your backend.'
        : 'Some pushes are too old for the server history. Reload your data from your backend.',
    });
  },

  addLog(entry) {
    entry.id = ++this.nextId;
    entry.at = Date.now();
    this.setData({ log: this.data.log.concat([entry]).slice(-MAX_LOG) });
  },

  /** bindinput on inputs with data-field="group" (or "draft.url"...): keeps data in step. */
  onInput(e) {
    this.setData({ [e.currentTarget.dataset.field]: e.detail.value });
  },

  onSourceChange(e) {
    this.setData({ 'draft.ticketSource': e.detail.value });
  },

  onConnect() {
    this.setData({ notice: '' });
    this.client.connect();
  },

  onDisconnect() {
    this.client.close();
  },

  onDismiss() {
    this.setData({ notice: '' });
  },

  onEcho() {
    const n = this.data.echoCount + 1;
    const started = Date.now();
    this.setData({ echoCount: n, echoResult: 'echo #' + n + '…' });
    this.client
      .echo({ n: n, from: 'mini-program' })
      .then((r) => this.setData({ echoResult: 'echo #' + r.echo.n + ' came back in ' + (Date.now() - started) + ' ms' }))
      .catch((e) => this.setData({ echoResult: 'echo #' + n + ' failed: ' + e.code }));
  },

  onJoin() {
    const group = this.data.group.trim();
    if (!GROUP_RE.test(group)) return this.toast('A group is 1-64 of A-Z a-z 0-9 _ . : -');
    const previous = this.data.joined;
    const leave = previous && previous !== group ? this.client.leave(previous) : Promise.resolve();
    leave
      .then(() => this.client.join(group))
      .then(() => this.setData({ joined: group, chat: [] }))
      .catch((e) => this.toast('join failed: ' + e.code));
  },

  onLeave() {
    const group = this.data.joined;
    if (!group) return;
    this.client
      .leave(group)
      .then(() => this.setData({ joined: '' }))
      .catch((e) => this.toast('leave failed: ' + e.code));
  },

  onSend() {
    const text = this.data.chatText.trim();
    if (!text || !this.data.joined) return;
    this.client
      .chat(this.data.joined, text)
      .then(() => this.setData({ chatText: '' }))
      .catch((e) => this.toast('send failed: ' + e.code));
  },

  onSave() {
    const d = this.data.draft;
    if (!/^wss?:\/\/[^/]+/.test(d.url)) return this.toast('The URL starts with ws:// or wss://');
    if (d.uid && !UID_RE.test(d.uid)) return this.toast('A uid is 1-64 of A-Z a-z 0-9 _ . -');
    if (d.ticketSource === 'dev' && !d.token) return this.toast('Paste the client token printed by serve --dev');
    this.detach();
    this.setData({ log: [], pushes: [], chat: [], joined: '', notice: '', echoResult: '' });
    app.saveSettings(d).then(() => this.attach());
  },

  toast(title) {
    wx.showToast({ title: title, icon: 'none' });
  },
});
