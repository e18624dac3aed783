/*
 * sha1.js: SHA-1 of a JavaScript string, over its UTF-8 bytes, as 40 lowercase hex digits.
 *
 * Mini-programs have no crypto digest API, and minipush's dev signer
 * (MiniPush.devTicket in utils/minipush.js) needs one to sign tickets on the device:
 *     sig = sha1(token + ts)          anonymous ticket
 *     sig = sha1(token + ts + uid)    ticket bound to a uid
 *
 * WARNING: signing on the device means the app holds the server's token, and anyone can
 * unpack a mini-program and read it. That is for development only. A production app asks
 * its backend for a ticket (for example minipush's POST /api/login after wx.login) and
 * never ships the token, and then does not need this file at all.
 *
 * Usage: const sha1 = require('./sha1.js'); sha1('abc') === 'a9993e36...'
 * (in a browser classic script: window.MiniPushSha1). Lone UTF-16 surrogates are encoded
 * as U+FFFD, as TextEncoder and Node's Buffer do.
 */
(function (root, factory) {
  if (typeof module === 'object' && module && module.exports) {
    module.exports = factory();
  } else {
    root.MiniPushSha1 = factory();
  }
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  /** The UTF-8 bytes of `str`. */
  function utf8(str) {
    var out = [];
    for (var i = 0; i < str.length; i++) {
      var c = str.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < str.length) {
        var d = str.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
        }
      }
      if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // a lone surrogate
      if (c < 0x80) {
        out.push(c);
      } else if (c < 0x800) {
        out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      } else if (c < 0x10000) {
        out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      } else {
        out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      }
    }
    return out;
  }

  function rotl(x, n) {
    return (x << n) | (x >>> (32 - n));
  }

  function hex8(x) {
    return ('0000000' + (x >>> 0).toString(16)).slice(-8);
  }

  return function sha1(str) {
    var bytes = utf8(String(str));
    var bitLen = bytes.length * 8;
    // Padding: 0x80, zeros up to 56 mod 64, then the bit length as 64 bits big-endian.
    bytes.push(0x80);
    while (bytes.length % 64 !== 56) bytes.push(0);
    var hi = Math.floor(bitLen / 0x100000000);
    bytes.push(hi >>> 24, (hi >>> 16) & 255, (hi >>> 8) & 255, hi & 255);
    bytes.push(bitLen >>> 24, (bitLen >>> 16) & 255, (bitLen >>> 8) & 255, bitLen & 255);

    var h0 = 0x67452301, h1 = 0xefcdab89, h2 = 0x98badcfe, h3 = 0x10325476, h4 = 0xc3d2e1f0;
    var w = new Array(80);
    for (var off = 0; off < bytes.length; off += 64) {
      for (var t = 0; t < 16; t++) {
        var j = off + t * 4;
        w[t] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
      }
      for (t = 16; t < 80; t++) w[t] = rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);

      var a = h0, b = h1, c = h2, d = h3, e = h4;
      for (t = 0; t < 80; t++) {
        var f, k;
        if (t < 20) {
          f = (b & c) | (~b & d);
          k = 0x5a827999;
        } else if (t < 40) {
          f = b ^ c ^ d;
          k = 0x6ed9eba1;
        } else if (t < 60) {
          f = (b & c) | (b & d) | (c & d);
          k = 0x8f1bbcdc;
        } else {
          f = b ^ c ^ d;
          k = 0xca62c1d6;
        }
        var tmp = (rotl(a, 5) + f + e + k + w[t]) | 0;
        e = d;
        d = c;
        c = rotl(b, 30);
        b = a;
        a = tmp;
      }
      h0 = (h0 + a) | 0;
      h1 = (h1 + b) | 0;
      h2 = (h2 + c) | 0;
      h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0;
    }
    return hex8(h0) + hex8(h1) + hex8(h2) + hex8(h3) + hex8(h4);
  };
});
