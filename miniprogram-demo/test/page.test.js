// The demo's own code, app.js and pages/index/index.js, run on a minimal stand-in for the
// mini-program runtime (App, Page, getApp, setData, wx storage and toasts; sockets from
// testing/helpers.js) against a real server: the page connects with the stored settings, shows
// pushes, echoes, chats, switches to the dev signer (utils/sha1.js, checked by the real
// server), and shows why it stopped after a kick. The page's template is rendered with its
// data by miniprogram-simulate, and the whole project compiles with WeChat's own WXML and
// WXSS compilers (from miniprogram-compiler), as the developer tools would compile it.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { JSDOM } = require('jsdom');
const { startServer, fakeWx, waitFor } = require('../testing/helpers.js');

const { window } = new JSDOM('<!doctype html><html><head></head><body></body></html>');
global.window = window;
global.document = window.document;
const simulate = require('miniprogram-simulate');
const compiler = require('miniprogram-compiler');

const ROOT = path.join(__dirname, '..');
const readJson = (file) => JSON.parse(fs.readFileSync(path.join(ROOT, file), 'utf8'));

/** The text a user would read: pages/index/index.wxml rendered with `data`, message-list inside. */
function renderPage(data) {
  const list = simulate.load(path.join(ROOT, 'components/message-list/index'));
  const id = simulate.load({
    template: fs.readFileSync(path.join(ROOT, 'pages/index/index.wxml'), 'utf8'),
    usingComponents: { 'message-list': list },
    data: JSON.parse(JSON.stringify(data)),
  });
  const page = simulate.render(id);
  page.attach(document.createElement('parent-wrapper'));
  return page.dom.textContent;
}

/** setData as the runtime does it: keys may be paths such as 'draft.url'. */
function setData(target, changes) {
  Object.keys(changes).forEach((key) => {
    const parts = key.split('.');
    let obj = target;
    parts.slice(0, -1).forEach((p) => {
      obj = obj[p];
    });
    obj[parts[parts.length - 1]] = changes[key];
  });
}

/** Loads app.js and the page on a fresh runtime; returns the app and the page instance. */
function launch(t, wxEnv, storage) {
  let appDef = null;
  let pageDef = null;
  const toasts = [];
  global.wx = Object.assign(wxEnv.wx, {
    getStorageSync: (k) => storage[k] || '',
    setStorageSync: (k, v) => {
      storage[k] = JSON.parse(JSON.stringify(v));
    },
    showToast: ({ title }) => toasts.push(title),
  });
  global.App = (def) => {
    appDef = def;
  };
  global.getApp = () => appDef;
  global.Page = (def) => {
    pageDef = def;
  };
  for (const file of ['app.js', 'pages/index/index.js']) {
    const full = path.join(ROOT, file);
    delete require.cache[full];
    require(full);
  }
  appDef.onLaunch();
  const page = Object.assign({}, pageDef, { data: JSON.parse(JSON.stringify(pageDef.data)) });
  page.setData = (changes) => setData(page.data, changes);
  t.after(() => {
    page.onUnload();
    if (appDef._client) appDef._client.close();
    ['wx', 'App', 'getApp', 'Page'].forEach((g) => delete global[g]);
  });
  return { app: appDef, page, toasts };
}

let server;
test.before(async () => {
  server = await startServer();
});
test.after(async () => {
  if (server) await server.stop();
});

test('the page: stored settings, state, pushes, echo, chat, the message list', async (t) => {
  const env = fakeWx();
  const storage = { 'minipush.settings': { url: server.wsUrl, uid: 'u-page', ticketSource: 'demo' } };
  const { page } = launch(t, env, storage);
  page.onLoad();
  await waitFor(() => page.data.state === 'open', 5000, 'the page to show open');
  assert.equal(page.data.uid, 'u-page');
  assert.match(page.data.conn, /\S/);
  assert.equal(
    page.data.pushHint,
    `curl -H 'Authorization: Bearer <API key>' -d '{"uid":"u-page","data":{"hello":"world"}}' ${server.http}/api/push`
  );

  await server.api('/api/push', { uid: 'u-page', data: { hello: 'page' } });
  await waitFor(() => page.data.pushes.length === 1, 5000, 'the push in "last pushes"');
  assert.deepEqual(page.data.pushes[0], { key: page.data.pushes[0].key, stream: 'u:u-page', seq: 1, data: '{"hello":"page"}' });

  page.onEcho();
  await waitFor(() => /^echo #1 came back in \d+ ms$/.test(page.data.echoResult), 5000, 'the echo result');

  page.onInput({ currentTarget: { dataset: { field: 'group' } }, detail: { value: 'room-page' } });
  page.onJoin();
  await waitFor(() => page.data.joined === 'room-page', 5000, 'joined');
  page.onInput({ currentTarget: { dataset: { field: 'chatText' } }, detail: { value: 'hi from the page' } });
  page.onSend();
  await waitFor(() => page.data.chat.length === 1, 5000, 'the chat line');
  assert.deepEqual(
    { from: page.data.chat[0].from, text: page.data.chat[0].text, mine: page.data.chat[0].mine },
    { from: 'u-page', text: 'hi from the page', mine: true }
  );
  await waitFor(() => page.data.chatText === '', 5000, 'the input cleared');

  // What the user reads: the page's template with its data, the message list inside.
  const text = renderPage(page.data);
  for (const shown of ['Connectionopen', 'uidu-page', 'In room-page', 'u-pagehi from the page', 'echo #1 came back in']) {
    assert.ok(text.includes(shown), `the page shows ${shown}`);
  }
  assert.match(text, /Last pushes from the backendu:u-page #1\{"hello":"page"\}/);
  const expected = [
    /welcome \S+\d\d:\d\d:\d\duid u-page, epoch \S+/,
    /pushu:u-page #1\d\d:\d\d:\d\d\{"hello":"page"\}/,
    /outecho #\d+/,
    /pushg:room-page #1\d\d:\d\d:\d\d\{"from":"u-page","text":"hi from the page"/,
  ];
  expected.forEach((re) => assert.match(text, re));
});

test('the page: the dev signer (sha1.js) connects, loudly; a kick shows why it stopped', async (t) => {
  const env = fakeWx();
  const storage = { 'minipush.settings': { url: server.wsUrl, uid: 'u-first', ticketSource: 'demo' } };
  const { app, page, toasts } = launch(t, env, storage);
  page.onLoad();
  await waitFor(() => page.data.state === 'open', 5000, 'open');

  // Settings: validation first, then a switch to tickets signed on the device.
  page.setData({ 'draft.uid': 'not a uid!' });
  page.onSave();
  assert.deepEqual(toasts, ['A uid is 1-64 of A-Z a-z 0-9 _ . -']);
  page.setData({ 'draft.uid': 'u-dev' });
  page.onSourceChange({ detail: { value: 'dev' } });
  page.onSave();
  assert.equal(toasts[1], 'Paste the client token printed by serve --dev');

  const warnings = [];
  const warn = console.warn;
  console.warn = (msg) => warnings.push(String(msg));
  t.after(() => {
    console.warn = warn;
  });
  page.setData({ 'draft.token': server.token });
  page.onSave();
  assert.equal(page.data.uid, 'u-first', 'nothing new starts before the old socket has closed');
  assert.deepEqual(storage['minipush.settings'], { url: server.wsUrl, uid: 'u-dev', ticketSource: 'dev', token: server.token });
  await waitFor(() => page.data.state === 'open' && page.data.uid === 'u-dev', 5000, 'open as u-dev');
  console.warn = warn;
  assert.ok(warnings.some((w) => w.includes('WARNING') && w.includes('never ship the token')), 'the dev signer warns');
  assert.equal(app.client().uid, 'u-dev');
  assert.ok(env.stats.maxLive <= 1, 'the old client was closed before the new one connected');

  await server.api('/api/kick', { uid: 'u-dev', reason: 'maintenance' });
  await waitFor(() => page.data.state === 'stopped', 5000, 'stopped');
  assert.equal(page.data.notice, 'Stopped by the server (4010): maintenance. Tap Connect to try again.');
  assert.match(renderPage(page.data), /Connectionstopped.*Stopped by the server \(4010\): maintenance/);
  page.onConnect();
  await waitFor(() => page.data.state === 'open', 5000, 'open again after Connect');
  assert.equal(page.data.notice, '');
});

test('the project is what the developer tools open: its JSON, and WXML/WXSS that compile', () => {
  const project = readJson('project.config.json');
  assert.equal(project.appid, 'touristappid');
  assert.equal(project.compileType, 'miniprogram');
  assert.equal(project.setting.urlCheck, false);
  const appJson = readJson('app.json');
  for (const page of appJson.pages) {
    for (const ext of ['js', 'json', 'wxml', 'wxss']) assert.ok(fs.existsSync(path.join(ROOT, `${page}.${ext}`)), `${page}.${ext}`);
  }
  assert.ok(fs.existsSync(path.join(ROOT, appJson.sitemapLocation)));
  const using = readJson('pages/index/index.json').usingComponents;
  assert.equal(readJson(`${using['message-list'].slice(1)}.json`).component, true);
  // WeChat's own compilers (the wcc and wcsc binaries the developer tools use) accept every file.
  assert.match(compiler.wxmlToJs(ROOT), /\$gwx/);
  assert.match(compiler.wxssToJs(ROOT), /wxssMap/);
});
