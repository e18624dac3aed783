// utils/sha1.js, the SHA-1 the dev signer uses: known vectors, the ticket that
// `minipush sign --token T --ts 1700000000` prints (README), and Node's crypto on random
// strings (ASCII, any UTF-16 unit including lone surrogates, astral code points) of every
// length from 0 to 200, which crosses the 64-byte block edges several times.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const sha1 = require('../utils/sha1.js');

const nodeSha1 = (s) => crypto.createHash('sha1').update(s, 'utf8').digest('hex');

test('known vectors', () => {
  assert.equal(sha1(''), 'da39a3ee5e6b4b0d3255bfef95601890afd80709');
  assert.equal(sha1('abc'), 'a9993e364706816aba3e25717850c26c9cd0d89d');
  assert.equal(
    sha1('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'),
    '84983e441c3bd26ebaae4aa1f95129e5e54670f1',
  );
  assert.equal(sha1('The quick brown fox jumps over the lazy dog'), '2fd4e1c67a2d28fced849ee1bb76e7391b93eb12');
  assert.equal(sha1('a'.repeat(1000000)), '34aa973cd4c4daa4f61eeb2bdbad27316534016f');
});

test('the ticket signature in the README: sha1("T" + "1700000000")', () => {
  assert.equal(sha1('T1700000000'), '37eaefd917e8b583189edba6dc0c0ff9a42ab191');
});

test('UTF-8: non-ASCII text and lone surrogates match Node', () => {
  for (const s of ['é', '中文', '你好，世界', '😀', 'a😀b', '\ud800', 'x\udc00y', '\udbff\udfff', '\u0080\u07ff\u0800\uffff']) {
    assert.equal(sha1(s), nodeSha1(s), JSON.stringify(s));
  }
});

test('random strings of every length up to 200 characters match Node', () => {
  const alphabets = [
    () => String.fromCharCode(32 + Math.floor(Math.random() * 95)),
    () => String.fromCharCode(Math.floor(Math.random() * 0x10000)), // includes lone surrogates
    () => String.fromCodePoint(0x10000 + Math.floor(Math.random() * 0xfffff)),
  ];
  for (let len = 0; len <= 200; len++) {
    let s = '';
    while (s.length < len) s += alphabets[Math.floor(Math.random() * alphabets.length)]();
    assert.equal(sha1(s), nodeSha1(s), `length ${len}: ${JSON.stringify(s)}`);
  }
});
