// Unit tests of the web UI's DOM-free modules, in Node (`node --test`); run by
// crates/volebarn-server/tests/web_ui.rs. The browser test covers the rest.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { humanSize, conflictOriginal } from '../ui/format.js';
import { lineDiff } from '../ui/diff.js';
import { crc32, zip } from '../ui/zip.js';
import { encodePath, parseMultipart } from '../ui/api.js';
import { blake3 } from '../ui/vendor/noble-hashes/blake3.js';

const hex = (bytes) => Buffer.from(bytes).toString('hex');

test('sizes read as people read them', () => {
  assert.equal(humanSize(0), '0 B');
  assert.equal(humanSize(1023), '1023 B');
  assert.equal(humanSize(1536), '1.5 KiB');
  assert.equal(humanSize(300_000), '293 KiB');
  assert.equal(humanSize(9 << 20), '9.0 MiB');
  assert.equal(humanSize(5 * 2 ** 40), '5.0 TiB');
});

test('conflict copies are recognised by the name volebarn-sync gives them', () => {
  assert.equal(conflictOriginal('notes (conflict 2026-11-30 101500).txt'), 'notes.txt');
  assert.equal(conflictOriginal('archive.tar (conflict 2026-01-02 030405).gz'), 'archive.tar.gz');
  assert.equal(conflictOriginal('.bashrc (conflict 2026-01-02 030405)'), '.bashrc');
  assert.equal(conflictOriginal('notes.txt'), null);
  assert.equal(conflictOriginal('notes (conflict soon).txt'), null);
});

test('the line diff keeps common lines and marks the others', () => {
  assert.deepEqual(lineDiff('a\nb\nc', 'a\nx\nc\nd'), [
    [' ', 'a'], ['-', 'b'], ['+', 'x'], [' ', 'c'], ['+', 'd'],
  ]);
  assert.deepEqual(lineDiff('same', 'same'), [[' ', 'same']]);
});

test('crc32 and the ZIP layout match the format', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  return zip([{ name: 'a/b.txt', bytes: new TextEncoder().encode('hello') }]).arrayBuffer().then((buf) => {
    const b = Buffer.from(buf);
    assert.equal(b.readUInt32LE(0), 0x04034b50, 'local header');
    assert.equal(b.readUInt32LE(14), crc32(new TextEncoder().encode('hello')));
    const end = b.length - 22;
    assert.equal(b.readUInt32LE(end), 0x06054b50, 'end of central directory');
    assert.equal(b.readUInt16LE(end + 10), 1, 'one entry');
    assert.equal(b.readUInt32LE(b.readUInt32LE(end + 16)), 0x02014b50, 'central directory where it says');
  });
});

test('multipart/mixed parts that name a file are read with their bytes', () => {
  const enc = new TextEncoder();
  const body = enc.encode(
    '--b1\r\nContent-Type: application/octet-stream\r\nX-File-Path: dir/a%20b.txt\r\n\r\nhello\r\n' +
    '--b1\r\nX-File-Path: c.bin\r\n\r\nx--b1\r\ny\r\n' +
    '--b1\r\nContent-Type: application/json\r\n\r\n{"missing":[]}\r\n--b1--\r\n');
  const files = parseMultipart(body, 'b1');
  assert.deepEqual(files.map((f) => f.path), ['dir/a b.txt', 'c.bin']);
  assert.equal(new TextDecoder().decode(files[0].bytes), 'hello');
  assert.equal(new TextDecoder().decode(files[1].bytes), 'x--b1\r\ny', 'the boundary only after CRLF ends a part');
});

test('paths are percent-encoded per segment', () => {
  assert.equal(encodePath('a b/c#d/é'), 'a%20b/c%23d/%C3%A9');
});

test('the vendored BLAKE3 gives the reference hashes (chunk ids)', () => {
  assert.equal(hex(blake3(new Uint8Array())), 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262');
  assert.equal(hex(blake3(new TextEncoder().encode('abc'))), '6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85');
});
