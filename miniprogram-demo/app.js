// app.js: the demo's App. It owns the mini-program's one minipush client (pages come and go,
// the socket should not) and the settings the client is made from, kept in wx storage.
// Pages call getApp().client() for the client and getApp().saveSettings() to change them.
const MiniPush = require('./utils/minipush.js');
const sha1 = require('./utils/sha1.js');

const SETTINGS_KEY = 'minipush.settings';

const DEFAULT_SETTINGS = {
  url: 'ws://127.0.0.1:9501/ws', // `minipush serve --dev`; in production wss://your-domain/ws
  uid: 'demo', // empty: an anonymous connection
  ticketSource: 'demo', // 'demo' | 'dev' | 'login', see ticketSource() below
  token: '', // only for 'dev': the server's client token, printed by serve --dev
};

/** http(s)://host[:port] of a ws(s):// URL. */
function httpBase(wsUrl) {
  return wsUrl.replace(/^ws/, 'http').replace(/^(https?:\/\/[^/?#]+).*$/, '$1');
}

/** The ticket source the settings ask for. */
function ticketSource(s) {
  const base = httpBase(s.url);
  if (s.ticketSource === 'login') {
    // Production: wx.login() code -> POST /api/login (minipush's, or your backend's) -> ticket.
    return MiniPush.loginTicket({ url: base + '/api/login' });
  }
  if (s.ticketSource === 'dev') {
    // DEVELOPMENT ONLY: signs on the device with the server token. Never ship a token.
    return MiniPush.devTicket({ token: s.token, uid: s.uid, sha1: sha1 });
  }
  // Development: the dev server signs tickets at /demo/ticket (serve --dev only).
  return MiniPush.httpTicket(base + '/demo/ticket' + (s.uid ? '?uid=' + encodeURIComponent(s.uid) : ''));
}

App({
  onLaunch() {
    this.settings = Object.assign({}, DEFAULT_SETTINGS, wx.getStorageSync(SETTINGS_KEY) || {});
    this._client = null;
  },

  /** The minipush client for the current settings, made on first use. */
  client() {
    if (!this._client) {
      this._client = MiniPush.createClient({ url: this.settings.url, ticket: ticketSource(this.settings) });
    }
    return this._client;
  },

  /** http(s)://host[:port] of the server, for its HTTP routes. */
  apiBase() {
    return httpBase(this.settings.url);
  },

  /**
   * Stores new settings and closes the current client. Resolves once its socket is gone; the
   * next client() then makes one for the new settings (one socket at a time).
   */
  saveSettings(settings) {
    this.settings = Object.assign({}, DEFAULT_SETTINGS, settings);
    wx.setStorageSync(SETTINGS_KEY, this.settings);
    const closing = this._client ? this._client.close() : Promise.resolve();
    this._client = null;
    return closing;
  },
});
