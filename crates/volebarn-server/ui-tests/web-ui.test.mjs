// The web UI in Debian's headless Chromium, driven by Playwright (playwright-core: no
// browser download). Run by crates/volebarn-server/tests/web_ui.rs, which starts the server,
// puts files there, passes everything through the environment and checks the results
// through the REST API afterwards. Exits non-zero on the first failed step.

import { chromium, request as apiRequest } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env('VOLEBARN_URL').replace(/\/$/, '');
const origin = new URL(base).origin;
const token = env('VOLEBARN_TOKEN');
const shots = env('VOLEBARN_SCREENSHOTS');
const downloads = env('VOLEBARN_DOWNLOADS');
const uploadFile = env('VOLEBARN_UPLOAD_FILE');
const uploadDir = env('VOLEBARN_UPLOAD_DIR');
const uploadBig = env('VOLEBARN_UPLOAD_BIG');
mkdirSync(shots, { recursive: true });
mkdirSync(downloads, { recursive: true });

const TIMEOUT = 15_000;
let phase = 'start';
const step = (name) => { phase = name; console.log(`step: ${name}`); };

const browser = await chromium.launch({
  executablePath: env('VOLEBARN_CHROMIUM'),
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, acceptDownloads: true, viewport: { width: 1200, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);

// Everything the page logs as an error, and every request it makes, with the step it was in.
const consoleErrors = [];
const offOrigin = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push({ phase, text: m.text() }); });
page.on('pageerror', (e) => consoleErrors.push({ phase, text: `uncaught: ${e.message}` }));
const chunkPuts = [];
page.on('request', (r) => {
  const u = new URL(r.url());
  if (r.method() === 'PUT' && u.pathname.startsWith('/chunks/')) chunkPuts.push(u.pathname);
  if (u.protocol !== 'blob:' && u.protocol !== 'data:' && u.origin !== origin) offOrigin.push(r.url());
});

// The REST API as another client (the live-update step), with the bearer token.
const rest = await apiRequest.newContext({ baseURL: base, ignoreHTTPSErrors: true, extraHTTPHeaders: { Authorization: `Bearer ${token}` } });

const row = (name) => page.locator('#listing tbody tr', { has: page.getByRole('link', { name, exact: true }) });
const dialog = page.locator('#dialog');
const closeDialog = async () => { await dialog.getByRole('button', { name: 'Close' }).click(); await dialog.waitFor({ state: 'hidden' }); };

try {
  step('sign-in form');
  await page.goto(`${base}/`);
  await page.getByLabel('API token').waitFor();
  await page.screenshot({ path: join(shots, 'login.png') });

  step('wrong token');
  await page.getByLabel('API token').fill('certainly-not-the-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'Wrong token' }).waitFor();
  assert.equal(await page.locator('#files-view').isVisible(), false);

  step('right token');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await row('notes.txt').waitFor();
  await row('docs').waitFor();
  assert.ok(!page.url().includes(token), 'the token is never in the URL');
  const conflictRow = page.locator('#listing tbody tr.conflict');
  await conflictRow.getByText('conflict', { exact: true }).waitFor();
  await page.screenshot({ path: join(shots, 'listing.png') });

  step('sort by size');
  await page.getByRole('button', { name: 'Size', exact: true }).click();
  await page.locator('th[aria-sort="ascending"]', { hasText: 'Size' }).waitFor();
  await page.getByRole('button', { name: 'Name', exact: true }).click();

  step('browse into a folder');
  await page.getByRole('link', { name: 'docs', exact: true }).click();
  await row('readme.txt').waitFor();
  await page.locator('#breadcrumbs [aria-current="page"]', { hasText: 'docs' }).waitFor();
  await row('readme.txt').locator('td.num', { hasText: /\d+ B/ }).waitFor();

  step('preview text and image');
  await page.getByRole('link', { name: 'readme.txt', exact: true }).click();
  await dialog.locator('pre', { hasText: 'second version' }).waitFor();
  await closeDialog();
  await page.getByRole('link', { name: 'pixel.svg', exact: true }).click();
  await dialog.getByRole('img', { name: 'Preview of pixel.svg' }).waitFor();
  await closeDialog();

  step('download a file');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'Download readme.txt' }).click(),
  ]);
  const saved = join(downloads, 'readme.txt');
  await download.saveAs(saved);
  assert.equal(readFileSync(saved, 'utf8'), 'second version\n');

  step('versions: restore the first one');
  await page.getByRole('button', { name: 'Versions readme.txt' }).click();
  await dialog.locator('tr[data-rev]').nth(1).waitFor();
  assert.equal(await dialog.locator('tr[data-rev]').count(), 2);
  await page.screenshot({ path: join(shots, 'versions.png') });
  const [older] = await Promise.all([
    page.waitForEvent('download'),
    dialog.getByRole('link', { name: /^Download version / }).nth(1).click(),
  ]);
  const olderPath = join(downloads, 'readme-older.txt');
  await older.saveAs(olderPath);
  assert.equal(readFileSync(olderPath, 'utf8'), 'first version\n', 'an older version downloads');
  await dialog.getByRole('button', { name: /^Restore version / }).first().click();
  await dialog.waitFor({ state: 'hidden' });
  await page.getByRole('status').filter({ hasText: 'Restored docs/readme.txt' }).waitFor();

  step('search');
  await page.getByLabel('Search files (glob)').fill('*.svg');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.getByText('1 result(s) for “*.svg”').waitFor();
  await page.getByRole('button', { name: 'Clear search' }).click();
  await row('readme.txt').waitFor();

  step('upload a file with the file picker');
  await page.getByRole('link', { name: 'Home' }).click();
  await row('notes.txt').waitFor();
  await page.locator('#pick-files').setInputFiles(uploadFile);
  await row('upload.bin').waitFor();
  await page.locator('#upload-list li', { hasText: 'upload.bin' }).getByText('done').waitFor();
  await page.screenshot({ path: join(shots, 'upload.png') });

  step('upload a large file through the chunked API, resuming');
  // Uploads slowed to 4 MiB/s, so the progress can be seen (and photographed) mid-way.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 4 << 20 });
  await page.locator('#pick-files').setInputFiles(uploadBig);
  const bigBar = page.getByRole('progressbar', { name: 'Upload of big.bin' });
  await page.waitForFunction(() => {
    const bar = document.querySelector('#upload-list progress');
    return bar && bar.value > 0 && bar.value < bar.max;
  });
  await page.screenshot({ path: join(shots, 'upload-progress.png') });
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  assert.ok(await bigBar.isVisible());
  await row('big.bin').waitFor();
  await page.locator('#upload-list li', { hasText: 'big.bin' }).getByText('done').waitFor();
  // 9 MiB is three chunks; the test put the first one on the server beforehand.
  assert.equal(chunkPuts.length, 2, `chunk uploads: ${chunkPuts.join(', ')}`);

  step('upload a folder');
  await page.locator('#pick-folder').setInputFiles(uploadDir);
  await row('album').waitFor();
  await page.locator('#upload-list li', { hasText: 'album/inner/b.bin' }).getByText('done').waitFor();

  step('download a folder as a ZIP');
  const [zipped] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Download album' }).click(),
  ]);
  assert.equal(zipped.suggestedFilename(), 'album.zip');
  const zipPath = join(downloads, 'album.zip');
  await zipped.saveAs(zipPath);
  const archive = readFileSync(zipPath);
  assert.equal(archive.readUInt32LE(0), 0x04034b50, 'a ZIP archive');
  // Stored entries: names and bytes appear as they are.
  assert.ok(archive.includes('inner/b.bin') && archive.includes('a.txt'), 'both files named');
  assert.ok(archive.includes(readFileSync(join(uploadDir, 'a.txt'))), 'a.txt inside');
  assert.ok(archive.includes(readFileSync(join(uploadDir, 'inner/b.bin'))), 'inner/b.bin inside');

  step('drag and drop a file');
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped into the page\n'], 'dropped.txt', { type: 'text/plain' }));
    return dt;
  });
  await page.dispatchEvent('#drop-zone', 'dragover', { dataTransfer });
  await page.dispatchEvent('#drop-zone', 'drop', { dataTransfer });
  await row('dropped.txt').waitFor();

  step('delete and undo');
  await page.getByRole('button', { name: 'Delete dropped.txt' }).click();
  await row('dropped.txt').waitFor({ state: 'detached' });
  await page.getByRole('status').getByRole('button', { name: 'Undo' }).click();
  await row('dropped.txt').waitFor();

  step('drop a file over an existing one: replaced, the old one kept as a version');
  const again = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped again\n'], 'dropped.txt', { type: 'text/plain' }));
    return dt;
  });
  await page.dispatchEvent('#drop-zone', 'drop', { dataTransfer: again });
  await row('dropped.txt').locator('td.num', { hasText: '14 B' }).waitFor();

  step('create a folder');
  await page.getByRole('button', { name: 'New folder' }).click();
  await dialog.getByLabel('Folder name').fill('made in browser');
  await dialog.getByRole('button', { name: 'Create', exact: true }).click();
  await row('made in browser').waitFor();

  step('rename');
  await page.getByRole('button', { name: 'Rename upload.bin' }).click();
  await dialog.getByLabel(/New name/).fill('renamed.bin');
  await dialog.getByRole('button', { name: 'Rename', exact: true }).click();
  await row('renamed.bin').waitFor();
  await row('upload.bin').waitFor({ state: 'detached' });

  step('delete, then restore from the trash');
  await page.getByRole('button', { name: 'Delete renamed.bin' }).click();
  await row('renamed.bin').waitFor({ state: 'detached' });
  await page.getByRole('button', { name: 'Trash', exact: true }).click();
  await dialog.getByRole('button', { name: 'Restore renamed.bin' }).waitFor();
  await page.screenshot({ path: join(shots, 'trash.png') });
  await dialog.getByRole('button', { name: 'Restore renamed.bin' }).click();
  await row('renamed.bin').waitFor();

  step('delete a folder, then restore its files from the trash');
  page.once('dialog', (d) => d.accept());
  await page.getByRole('button', { name: 'Delete album' }).click();
  await row('album').waitFor({ state: 'detached' });
  await page.getByRole('button', { name: 'Trash', exact: true }).click();
  await dialog.getByRole('button', { name: 'Restore album/a.txt' }).click();
  await row('album').waitFor();
  await page.getByRole('button', { name: 'Trash', exact: true }).click();
  await dialog.getByRole('button', { name: 'Restore album/inner/b.bin' }).click();
  await dialog.waitFor({ state: 'hidden' });

  step('a change through the REST API appears without reloading');
  const navigations = [];
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations.push(f.url()); });
  const put = await rest.post('/files/live.txt', { data: 'made by another client\n', headers: { 'Content-Type': 'application/octet-stream' } });
  assert.equal(put.status(), 201);
  await row('live.txt').waitFor();
  assert.deepEqual(navigations, [], 'no reload');
  await page.screenshot({ path: join(shots, 'overview.png') });

  step('compare a conflict copy and keep it');
  await page.getByRole('button', { name: /^Compare notes \(conflict/ }).click();
  await dialog.locator('ins', { hasText: 'butter' }).waitFor();
  await dialog.locator('del', { hasText: 'eggs' }).waitFor();
  await page.screenshot({ path: join(shots, 'conflict.png') });
  await dialog.getByRole('button', { name: 'Keep the conflict copy' }).click();
  await dialog.waitFor({ state: 'hidden' });
  await page.locator('#listing tbody tr.conflict').waitFor({ state: 'detached' });

  step('keyboard: Tab reaches a row action, Enter opens it, Escape closes');
  await page.getByRole('link', { name: 'Home' }).focus();
  const label = () => page.evaluate(() => {
    const e = document.activeElement;
    return e?.getAttribute('aria-label') || e?.labels?.[0]?.textContent || e?.textContent || '';
  });
  await page.keyboard.press('Tab');
  assert.equal(await label(), 'Upload files', 'the upload picker is the next stop');
  let tabs = 0;
  while ((await label()) !== 'Versions notes.txt') {
    assert.ok(++tabs < 60, 'Tab never reached "Versions notes.txt"');
    await page.keyboard.press('Tab');
  }
  await page.keyboard.press('Enter');
  await dialog.locator('tr[data-rev]').first().waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });

  step('phone-sized screen');
  await page.setViewportSize({ width: 390, height: 844 });
  await row('notes.txt').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling on a phone (${overflow}px too wide)`);
  await page.screenshot({ path: join(shots, 'phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1200, height: 800 });

  step('sign out');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('API token').waitFor();
  await page.reload();
  await page.getByLabel('API token').waitFor();
  assert.equal(await page.locator('#files-view').isVisible(), false, 'signed out stays signed out');

  step('checks');
  // A wrong token is a 401 by design; the browser logs that failed request. Nothing else.
  const unexpected = consoleErrors.filter((e) => !(e.phase === 'wrong token' && /status of 401/.test(e.text)));
  assert.deepEqual(unexpected, [], 'console errors');
  assert.deepEqual(offOrigin, [], 'requests outside the server origin');
  console.log('web UI: all steps passed');
} catch (e) {
  console.error(`failed in step "${phase}": ${e.stack || e}`);
  console.error('console errors so far:', JSON.stringify(consoleErrors));
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await rest.dispose();
  await browser.close();
}
