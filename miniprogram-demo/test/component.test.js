// components/message-list rendered by miniprogram-simulate (the official unit-test tool for
// mini-program components, compiling the WXML with WeChat's own compiler) in a jsdom
// document: its formatting, and a push sent through the HTTP API of a real server, received by
// utils/minipush.js, showing up in the rendered list.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { JSDOM } = require('jsdom');
const { startServer, fakeWx, recorder, waitFor } = require('../testing/helpers.js');

// miniprogram-simulate renders into a DOM: give it jsdom's window and document.
const { window } = new JSDOM('<!doctype html><html><head></head><body></body></html>');
global.window = window;
global.document = window.document;
const simulate = require('miniprogram-simulate');
const MiniPush = require('../utils/minipush.js');

const COMPONENT = path.join(__dirname, '..', 'components', 'message-list', 'index');

/** Renders the message list with `items` and attaches it to a parent node. */
function renderList(items) {
  const comp = simulate.render(simulate.load(COMPONENT), { items });
  comp.attach(document.createElement('parent-wrapper'));
  return comp;
}

const text = (comp) => comp.dom.textContent;
/** The rendered entries' text, top to bottom. */
const rows = (comp) => comp.querySelectorAll('.entry').map((row) => row.dom.textContent);

test('an empty list shows its empty text', () => {
  const comp = renderList([]);
  assert.equal(rows(comp).length, 0);
  assert.equal(text(comp).trim(), 'No messages yet');
});

test('entries are formatted, newest first', () => {
  const at = new Date(2024, 0, 2, 9, 5, 7).getTime();
  const comp = renderList([
    { id: 1, at, kind: 'out', frame: { type: 'echo', id: '3', data: { a: 1 } } },
    { id: 2, at, kind: 'in', frame: { type: 'reply', ref: '3', data: { echo: { a: 1 } } } },
    { id: 3, at, kind: 'push', frame: { type: 'push', stream: 'g:room1', seq: 12, data: { from: 'u1', text: 'hi' }, time: at } },
    { id: 4, at, kind: 'error', text: 'not_member: join the group first' },
  ]);
  assert.deepEqual(rows(comp), [
    'errornot_member: join the group first09:05:07',
    'pushg:room1 #1209:05:07{"from":"u1","text":"hi"}',
    'inreply to #309:05:07{"echo":{"a":1}}',
    'outecho #309:05:07{"data":{"a":1}}',
  ]);
  assert.equal(comp.querySelector('.badge').dom.textContent, 'error');
});

test('a push from the API, received through the library, appears in the rendered list', async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const env = fakeWx();
  global.wx = env.wx;
  const client = MiniPush.createClient({
    url: server.wsUrl,
    ticket: MiniPush.httpTicket(`${server.http}/demo/ticket?uid=u-list`),
  });
  t.after(() => {
    client.close();
    delete global.wx;
  });
  const rec = recorder(client);

  // Wired as pages/index does it: every delivered push becomes an entry of the list.
  const comp = renderList([]);
  let items = [];
  client.on('push', (p) => {
    items = items.concat([{ id: items.length + 1, at: Date.now(), kind: 'push', frame: p }]);
    comp.setData({ items });
  });
  client.connect();
  await rec.next('state', (s) => s.state === 'open', 5000);

  const answer = await server.api('/api/push', { uid: 'u-list', data: { order: 981, status: '已发货 shipped' } });
  assert.equal(answer.delivered, 1);
  await waitFor(() => text(comp).includes('已发货 shipped'), 5000, 'the push in the rendered list');
  assert.equal(rows(comp).length, 1);
  assert.match(rows(comp)[0], /^pushu:u-list #1\d\d:\d\d:\d\d\{"order":981,"status":"已发货 shipped"\}$/);

  await server.api('/api/push', { uid: 'u-list', data: 'second' });
  await waitFor(() => rows(comp).length === 2, 5000, 'the second push');
  assert.match(rows(comp)[0], /u:u-list #2.*"second"$/, 'the newest entry comes first');
});
