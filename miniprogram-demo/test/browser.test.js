// The /demo page of `minipush serve --dev` driven in headless Chromium (Debian's chromium,
// through playwright-core; no browser is downloaded): connect, a push through the HTTP API
// appears on the page, an echo, a chat, and a screenshot in ../test-output/demo.png.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { startServer } = require('../testing/helpers.js');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUTPUT = path.join(__dirname, '..', '..', 'test-output');

let server;
let context;
let profile;
test.before(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium, or set CHROMIUM`);
  server = await startServer();
  // A fresh profile (--user-data-dir), which playwright takes as launchPersistentContext's argument.
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'minipush-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});
test.after(async () => {
  if (context) await context.close();
  if (server) await server.stop();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

test('the /demo page: connect, a pushed message appears, echo, chat, screenshot', async () => {
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (msg) => msg.type() === 'error' && pageErrors.push(msg.text()));

  await page.goto(`${server.http}/demo`);
  assert.equal(await page.title(), 'minipush demo');
  // The page connects by itself as "demo"; then connect again as our own uid.
  await page.waitForFunction(() => document.querySelector('#state').textContent === 'open' && document.querySelector('#who').textContent === 'demo');
  await page.fill('#uid', 'browser-1');
  await page.click('#connect');
  await page.waitForFunction(() => document.querySelector('#state').textContent === 'open' && document.querySelector('#who').textContent === 'browser-1');
  assert.match(await page.textContent('#conn'), /\S+/);

  const answer = await server.api('/api/push', { uid: 'browser-1', data: { order: 42, status: 'expédié à Zoë' } });
  assert.equal(answer.delivered, 1);
  await page.waitForFunction(() => document.querySelector('#pushes').textContent.includes('expédié à Zoë'));
  assert.match(await page.textContent('#pushes li'), /u:browser-1 #1/);
  assert.match(await page.textContent('#log'), /u:browser-1 #1/);

  await page.click('#echo');
  await page.waitForFunction(() => /echo #1 came back in \d+ ms/.test(document.querySelector('#echo-result').textContent));

  await page.fill('#group', 'room-web');
  await page.click('#join');
  await page.waitForFunction(() => !document.querySelector('#chat-send').disabled);
  await page.fill('#chat-text', 'hello from the browser');
  await page.click('#chat-send');
  await page.waitForFunction(() => document.querySelector('#chat').textContent.includes('hello from the browser'));
  assert.match(await page.textContent('#chat .bubble.mine'), /browser-1/);

  // A push to the group from the backend shows in the chat as someone else's line.
  await server.api('/api/push', { group: 'room-web', data: { from: 'backend', text: 'welcome to room-web' } });
  await page.waitForFunction(() => document.querySelector('#chat').textContent.includes('welcome to room-web'));

  fs.mkdirSync(OUTPUT, { recursive: true });
  const shot = path.join(OUTPUT, 'demo.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 10000, 'a real screenshot');
  assert.deepEqual(pageErrors, []);
});
