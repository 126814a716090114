// Volebarn web UI: one page, plain ES modules, no build step. The folder shown is in the
// URL fragment (`#/docs/2026`); the session is an HttpOnly cookie the page never sees.

import * as api from './api.js';
import { zip } from './zip.js';
import { lineDiff } from './diff.js';
import { humanSize, conflictOriginal } from './format.js';

const $ = (sel) => document.querySelector(sel);

const IMAGE = /\.(png|jpe?g|gif|webp|svg|bmp|avif|ico)$/i;
const TEXT = /\.(txt|md|markdown|json|csv|tsv|log|xml|html?|css|js|mjs|ts|rs|py|go|c|h|cpp|java|sh|toml|ya?ml|ini|conf|cfg|sql)$/i;
const PREVIEW_MAX = 4 * 1024 * 1024;

const state = {
  cwd: '',
  entries: [],
  sort: { key: 'name', dir: 1 },
  search: null,
  live: null,
};

// ---------- small helpers ----------


const when = (t) => (t ? new Date(t).toLocaleString() : '');
const parentOf = (p) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');
const nameOf = (p) => p.slice(p.lastIndexOf('/') + 1);
const join = (dir, name) => (dir ? `${dir}/${name}` : name);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, '');
    else if (v !== false && v !== undefined) e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== undefined && c !== null));
  return e;
}

let statusTimer = 0;
/** A message in the status bar, optionally with one action (e.g. Undo). */
function say(text, action) {
  const s = $('#status');
  s.replaceChildren(el('span', {}, text));
  if (action) {
    s.append(el('button', { type: 'button', onclick: () => { s.replaceChildren(); action.run(); } }, action.label));
  }
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => s.replaceChildren(), action ? 15000 : 6000);
}

function failed(what, e) {
  if (e instanceof api.ApiError && e.status === 401) return showLogin('Your session has ended: sign in again.');
  say(`${what} failed: ${e.message}`);
}

// ---------- dialog ----------

function openDialog(title, ...body) {
  $('#dialog-title').textContent = title;
  $('#dialog-body').replaceChildren(...body);
  const d = $('#dialog');
  if (!d.open) d.showModal();
  return d;
}

function closeDialog() {
  const d = $('#dialog');
  if (d.open) d.close();
}

/** A one-field form in the dialog; resolves with the value, or null when closed. */
function ask(title, label, value, submit) {
  return new Promise((resolve) => {
    const input = el('input', { id: 'ask-input', type: 'text', value, required: true });
    const form = el('form', {
      onsubmit: (e) => { e.preventDefault(); closeDialog(); resolve(input.value.trim()); },
    }, el('label', { for: 'ask-input' }, label), input, el('button', { type: 'submit' }, submit));
    const d = openDialog(title, form);
    d.addEventListener('close', () => resolve(null), { once: true });
    input.focus();
    input.select();
  });
}

// ---------- sign in / out ----------

const signedIn = () => document.cookie.split(';').some((c) => c.trim() === 'volebarn_signed_in=1');

function showLogin(message = '') {
  stopLive();
  closeDialog();
  $('#files-view').hidden = true;
  $('#search-form').hidden = true;
  $('#logout').hidden = true;
  $('#login-view').hidden = false;
  $('#login-error').textContent = message;
  $('#token').focus();
}

function showFiles() {
  $('#login-view').hidden = true;
  $('#files-view').hidden = false;
  $('#search-form').hidden = false;
  $('#logout').hidden = false;
}

async function onLogin(e) {
  e.preventDefault();
  const field = $('#token');
  try {
    await api.login(field.value);
  } catch (err) {
    $('#login-error').textContent = err.status === 401
      ? 'Wrong token: check it and try again.'
      : err.status === 429
        ? `Too many failed sign-ins from this address: ${err.message}`
        : `Sign-in failed: ${err.message}`;
    field.select();
    return;
  }
  field.value = '';
  showFiles();
  await load();
}

async function onLogout() {
  try { await api.logout(); } catch { /* the cookie is cleared or gone either way */ }
  showLogin('Signed out.');
}

// ---------- listing ----------

function cwdFromHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  return raw.split('/').filter(Boolean).map(decodeURIComponent).join('/');
}

const hashOf = (dir) => `#/${api.encodePath(dir)}`;

async function load() {
  state.cwd = cwdFromHash();
  state.search = null;
  $('#search-input').value = '';
  let got;
  try {
    got = await api.list(state.cwd);
  } catch (e) {
    if (e.status === 401) return showLogin();
    if (e.status === 404 && state.cwd) {
      say(`${state.cwd} is gone; showing its parent.`);
      location.hash = hashOf(parentOf(state.cwd));
      return;
    }
    return failed('Listing', e);
  }
  showFiles();
  state.entries = got.listing.entries;
  render();
  startLive(got.head);
}

async function refresh() {
  if (state.search !== null) return runSearch(state.search);
  try {
    const got = await api.list(state.cwd);
    state.entries = got.listing.entries;
    render();
  } catch (e) {
    if (e.status === 404) return load();
    failed('Listing', e);
  }
}

function sorted(entries) {
  const { key, dir } = state.sort;
  return [...entries].sort((a, b) => {
    if (a.is_directory !== b.is_directory) return a.is_directory ? -1 : 1;
    const x = key === 'name' ? a.name.localeCompare(b.name) : key === 'size' ? a.size - b.size : Date.parse(a.modified) - Date.parse(b.modified);
    return x * dir || a.name.localeCompare(b.name);
  });
}

function renderBreadcrumbs() {
  const nav = $('#breadcrumbs');
  const parts = state.cwd ? state.cwd.split('/') : [];
  const items = [el('a', { href: '#/', 'aria-current': parts.length ? false : 'page' }, 'Home')];
  parts.forEach((p, i) => {
    const dir = parts.slice(0, i + 1).join('/');
    items.push(el('span', { 'aria-hidden': 'true' }, '/'));
    items.push(el('a', { href: hashOf(dir), 'aria-current': i === parts.length - 1 ? 'page' : false }, p));
  });
  nav.replaceChildren(...items);
}

function actionButton(label, name, run, cls) {
  return el('button', { type: 'button', 'aria-label': `${label} ${name}`, class: cls, onclick: run }, label);
}

function row(entry) {
  const original = entry.is_directory ? null : conflictOriginal(entry.name);
  const nameCell = entry.is_directory
    ? el('a', { href: hashOf(entry.path), class: 'folder' }, entry.name)
    : el('a', { href: api.fileUrl(entry.path), onclick: (e) => { e.preventDefault(); preview(entry); } }, entry.name);
  const shown = state.search !== null ? el('span', {}, nameCell, el('small', { class: 'hint' }, ` in /${parentOf(entry.path)}`)) : nameCell;
  const actions = el('td', { class: 'actions' });
  if (!entry.is_directory) {
    actions.append(el('a', { class: 'button', href: api.fileUrl(entry.path), download: entry.name, 'aria-label': `Download ${entry.name}` }, 'Download'));
    actions.append(actionButton('Versions', entry.name, () => showVersions(entry.path)));
  } else {
    actions.append(actionButton('Download', entry.name, () => downloadFolder(entry.path)));
  }
  if (original) actions.append(actionButton('Compare', entry.name, () => compare(entry, join(parentOf(entry.path), original))));
  actions.append(actionButton('Rename', entry.name, () => rename(entry)));
  actions.append(actionButton('Delete', entry.name, () => remove(entry), 'danger'));
  return el('tr', { class: original ? 'conflict' : '', 'data-path': entry.path },
    el('td', { class: 'name' }, shown, original ? el('span', { class: 'badge', title: 'A sync client kept both versions' }, 'conflict') : undefined),
    el('td', { class: 'num' }, entry.is_directory ? el('span', { class: 'visually-hidden' }, 'folder') : humanSize(entry.size)),
    el('td', { class: 'opt' }, when(entry.modified)),
    actions);
}

function render() {
  renderBreadcrumbs();
  document.title = `${state.cwd ? `/${state.cwd}` : 'Home'} – Volebarn`;
  for (const th of document.querySelectorAll('#listing th')) th.removeAttribute('aria-sort');
  const th = document.querySelector(`#listing button[data-sort="${state.sort.key}"]`).parentElement;
  th.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
  $('#listing tbody').replaceChildren(...sorted(state.entries).map(row));
  $('#empty').hidden = state.entries.length > 0;
  const note = $('#search-note');
  note.hidden = state.search === null;
  if (state.search !== null) {
    note.replaceChildren(`${state.entries.length} result(s) for “${state.search}” below /${state.cwd} `,
      el('button', { type: 'button', onclick: () => { state.search = null; $('#search-input').value = ''; refresh(); } }, 'Clear search'));
  }
}

// ---------- search ----------

async function runSearch(pattern) {
  try {
    state.entries = await api.search(pattern, state.cwd);
    state.search = pattern;
    render();
  } catch (e) {
    failed('Search', e);
  }
}

// ---------- open, versions, trash ----------

async function preview(entry) {
  const link = el('a', { class: 'button', href: api.fileUrl(entry.path), download: entry.name }, 'Download');
  const meta = el('p', { class: 'hint' }, `${humanSize(entry.size)} · modified ${when(entry.modified)} · xxh3 `, el('code', {}, entry.xxhash3));
  if (entry.size > PREVIEW_MAX || !(IMAGE.test(entry.name) || TEXT.test(entry.name))) {
    openDialog(entry.name, meta, el('p', {}, 'No preview for this file.'), link);
    return;
  }
  try {
    const blob = await api.fileBlob(entry.path);
    const body = IMAGE.test(entry.name)
      ? el('img', { src: URL.createObjectURL(blob), alt: `Preview of ${entry.name}` })
      : el('pre', { tabindex: '0', 'aria-label': `Contents of ${entry.name}` }, await blob.text());
    openDialog(entry.name, meta, body, link);
  } catch (e) {
    failed('Opening', e);
  }
}

async function showVersions(path) {
  let list;
  try {
    list = await api.versions(path);
  } catch (e) {
    return failed('Versions', e);
  }
  const rows = list.versions.map((v) => el('tr', { 'data-rev': String(v.rev) },
    el('td', {}, String(v.rev)),
    el('td', { class: 'num' }, humanSize(v.size)),
    el('td', {}, when(v.modified)),
    el('td', {}, el('code', {}, v.xxhash3)),
    el('td', {}, v.current ? 'current' : v.deleted ? `deleted ${when(v.archived)}` : `replaced ${when(v.archived)}`),
    el('td', { class: 'actions' },
      el('a', { class: 'button', href: api.fileUrl(path, v.rev), download: nameOf(path), 'aria-label': `Download version ${v.rev}` }, 'Download'),
      v.current ? undefined : el('button', { type: 'button', 'aria-label': `Restore version ${v.rev}`, onclick: () => doRestore(path, v.rev) }, 'Restore'))));
  openDialog(`Versions of ${path}`, el('table', {},
    el('thead', {}, el('tr', {}, ...['Rev', 'Size', 'Modified', 'xxh3', 'State', ''].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows)));
}

async function doRestore(path, rev) {
  try {
    await api.restore(path, rev);
    closeDialog();
    say(`Restored ${path} (revision ${rev}).`);
    await refresh();
  } catch (e) {
    failed('Restore', e);
  }
}

async function showTrash() {
  let list;
  try {
    list = await api.trash(state.cwd);
  } catch (e) {
    return failed('Trash', e);
  }
  // Paths relative to this folder: files of deleted subfolders show where they were.
  const cut = state.cwd ? state.cwd.length + 1 : 0;
  const body = list.entries.length === 0
    ? el('p', {}, 'No deleted files in this folder.')
    : el('table', {},
      el('thead', {}, el('tr', {}, ...['Name', 'Size', 'Deleted', ''].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, ...list.entries.map((t) => el('tr', {},
        el('td', {}, t.path.slice(cut)),
        el('td', { class: 'num' }, humanSize(t.size)),
        el('td', {}, when(t.deleted)),
        el('td', { class: 'actions' },
          el('button', { type: 'button', 'aria-label': `Restore ${t.path.slice(cut)}`, onclick: () => doRestore(t.path, t.rev) }, 'Restore'),
          el('button', { type: 'button', 'aria-label': `Versions of ${t.path.slice(cut)}`, onclick: () => showVersions(t.path) }, 'Versions'))))));
  openDialog(`Trash of /${state.cwd}`, body);
}

// ---------- create, rename, delete ----------

async function newFolder() {
  const name = await ask('New folder', 'Folder name', '', 'Create');
  if (!name) return;
  try {
    await api.mkdir(join(state.cwd, name));
    say(`Created folder ${name}.`);
    await refresh();
  } catch (e) {
    failed('Creating the folder', e);
  }
}

async function rename(entry) {
  const to = await ask(`Rename or move ${entry.name}`, 'New name, or a path from the top (a/b/name)', entry.name, 'Rename');
  if (!to || to === entry.name) return;
  const target = to.includes('/') ? to.replace(/^\/+/, '') : join(parentOf(entry.path), to);
  try {
    await api.move(entry.path, target);
    say(`Renamed ${entry.name} to ${target}.`);
    await refresh();
  } catch (e) {
    failed('Renaming', e);
  }
}

async function remove(entry) {
  if (entry.is_directory) {
    if (!window.confirm(`Delete the folder ${entry.name} and everything in it? Its files stay restorable from their versions.`)) return;
    try {
      await api.deleteDir(entry.path);
      say(`Deleted folder ${entry.name}.`);
    } catch (e) {
      return failed('Deleting', e);
    }
    return refresh();
  }
  try {
    await api.deleteFile(entry.path);
  } catch (e) {
    return failed('Deleting', e);
  }
  say(`Deleted ${entry.name}.`, { label: 'Undo', run: () => doRestore(entry.path, entry.rev) });
  await refresh();
}

// ---------- conflicts ----------

async function compare(copy, originalPath) {
  const original = state.entries.find((e) => e.path === originalPath);
  const card = (title, e) => el('div', {},
    el('h3', {}, title),
    e ? el('p', {}, `${e.name}`, el('br'), `${humanSize(e.size)} · ${when(e.modified)}`, el('br'), 'xxh3 ', el('code', {}, e.xxhash3))
      : el('p', {}, 'The original is gone.'));
  const parts = [el('div', { class: 'compare' }, card('Original', original), card('Conflict copy', copy))];
  if (original && copy.size <= PREVIEW_MAX && original.size <= PREVIEW_MAX) {
    try {
      if (IMAGE.test(copy.name)) {
        const [a, b] = await Promise.all([api.fileBlob(original.path), api.fileBlob(copy.path)]);
        parts.push(el('div', { class: 'compare' },
          el('img', { src: URL.createObjectURL(a), alt: 'Original' }), el('img', { src: URL.createObjectURL(b), alt: 'Conflict copy' })));
      } else if (TEXT.test(copy.name) || TEXT.test(original.name)) {
        const [a, b] = await Promise.all([api.fileBlob(original.path), api.fileBlob(copy.path)]);
        const diff = lineDiff(await a.text(), await b.text());
        parts.push(el('h3', {}, 'Differences (− original, + conflict copy)'),
          el('pre', { class: 'diff', tabindex: '0' }, ...diff.map(([op, line]) => el(op === '-' ? 'del' : op === '+' ? 'ins' : 'span', {}, `${op} ${line}`))));
      }
    } catch (e) {
      failed('Comparing', e);
    }
  }
  parts.push(el('div', { class: 'row-actions' },
    el('button', { type: 'button', onclick: () => keepCopy(copy, originalPath) }, 'Keep the conflict copy'),
    el('button', { type: 'button', onclick: () => keepOriginal(copy) }, 'Keep the original')),
  el('p', { class: 'hint' }, 'Whichever you drop stays restorable from its versions.'));
  openDialog(`Conflict: ${nameOf(originalPath)}`, ...parts);
}

async function keepCopy(copy, originalPath) {
  try {
    await api.move(copy.path, originalPath, true);
    closeDialog();
    say(`Kept the conflict copy as ${nameOf(originalPath)}.`);
    await refresh();
  } catch (e) {
    failed('Keeping the copy', e);
  }
}

async function keepOriginal(copy) {
  try {
    await api.deleteFile(copy.path);
    closeDialog();
    say(`Kept the original; deleted ${copy.name}.`);
    await refresh();
  } catch (e) {
    failed('Deleting the copy', e);
  }
}

// ---------- uploads ----------

let uploading = 0;

/** `items`: [{path (relative to the current folder), file}]. */
async function uploadAll(items) {
  if (items.length === 0) return;
  const panel = $('#uploads');
  panel.hidden = false;
  const list = $('#upload-list');
  // A new batch replaces the finished one: the total is this batch's.
  if (uploading === 0) list.replaceChildren();
  uploading++;
  const total = $('#upload-total');
  const size = items.reduce((n, i) => n + i.file.size, 0) || 1;
  const done = new Array(items.length).fill(0);
  total.max = size;
  total.value = 0;
  const dir = state.cwd;
  const rows = items.map((it) => {
    const bar = el('progress', { max: String(it.file.size || 1), value: '0', 'aria-label': `Upload of ${it.path}` });
    const note = el('span', { class: 'hint' }, 'waiting');
    list.append(el('li', {}, el('span', {}, it.path), bar, note));
    return { bar, note };
  });
  let failures = 0;
  // Two at a time: the connection stays busy without starving the listing's requests.
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      const { bar, note } = rows[i];
      note.textContent = 'uploading';
      try {
        const target = join(dir, items[i].path);
        const exists = dir === state.cwd && state.entries.some((e) => e.path === target && !e.is_directory);
        await api.upload(target, items[i].file, (loaded) => {
          bar.value = loaded;
          done[i] = loaded;
          total.value = done.reduce((a, b) => a + b, 0);
        }, exists);
        bar.value = items[i].file.size || 1;
        done[i] = items[i].file.size;
        total.value = done.reduce((a, b) => a + b, 0);
        note.textContent = 'done';
      } catch (e) {
        failures++;
        note.textContent = `failed: ${e.message}`;
      }
    }
  };
  await Promise.all([worker(), worker()]);
  uploading--;
  say(failures ? `${failures} of ${items.length} upload(s) failed.` : `Uploaded ${items.length} file(s).`);
  if (dir === state.cwd) await refresh();
}

function filesOfInput(input) {
  return [...input.files].map((f) => ({ path: f.webkitRelativePath || f.name, file: f }));
}

/** Files of a drop, folders walked (`webkitGetAsEntry`). */
async function filesOfDrop(dt) {
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (entries.length === 0) return [...dt.files].map((f) => ({ path: f.name, file: f }));
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({ path: prefix + entry.name, file });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (batch.length === 0) break;
        for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const e of entries) await walk(e, '');
  return out;
}

// ---------- folder download ----------

async function downloadFolder(dir) {
  try {
    const q = dir ? `?path=${encodeURIComponent(dir)}` : '';
    const manifest = await (await api.request('GET', `/bulk/manifest${q}`)).json();
    const paths = Object.values(manifest.files).filter((f) => !f.is_directory).map((f) => f.path);
    if (paths.length === 0) return say('The folder has no files to download.');
    say(`Downloading ${paths.length} file(s)…`);
    const files = await api.bulkDownload(paths);
    const cut = dir ? dir.length + 1 : 0;
    const blob = zip(files.map((f) => ({ name: f.path.slice(cut), bytes: f.bytes })));
    const a = el('a', { href: URL.createObjectURL(blob), download: `${dir ? nameOf(dir) : 'volebarn'}.zip` });
    document.body.append(a);
    a.click();
    a.remove();
    say(`Saved ${files.length} file(s) as a ZIP archive.`);
  } catch (e) {
    failed('Downloading the folder', e);
  }
}

// ---------- live updates ----------

function touches(change, dir) {
  const paths = [change.path, change.to_path].filter(Boolean);
  return paths.some((p) => parentOf(p) === dir || (dir && (dir === p || dir.startsWith(`${p}/`))));
}

function stopLive() {
  state.live?.abort();
  state.live = null;
}

/** Long-polls `/changes` from `head`; refreshes the listing when a change touches it. */
function startLive(head) {
  stopLive();
  const ctl = new AbortController();
  state.live = ctl;
  (async () => {
    let since = head;
    while (!ctl.signal.aborted) {
      try {
        const got = await api.changes(since, 25, ctl.signal);
        since = got.next;
        if (got.changes.some((c) => touches(c, state.cwd)) && !ctl.signal.aborted) await refresh();
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e.status === 401) return showLogin('Your session has ended: sign in again.');
        if (e.status === 410) {
          // The journal moved past us: read the folder again and go on from its head.
          return load();
        }
        await new Promise((r) => setTimeout(r, 3000));
      }
    }
  })();
}

// ---------- wiring ----------

function init() {
  $('#login-form').addEventListener('submit', onLogin);
  $('#logout').addEventListener('click', onLogout);
  $('#search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const p = $('#search-input').value.trim();
    if (p) runSearch(p); else { state.search = null; refresh(); }
  });
  for (const b of document.querySelectorAll('#listing button[data-sort]')) {
    b.addEventListener('click', () => {
      const key = b.dataset.sort;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      render();
    });
  }
  $('#new-folder').addEventListener('click', newFolder);
  $('#show-trash').addEventListener('click', showTrash);
  $('#download-folder').addEventListener('click', () => downloadFolder(state.cwd));
  for (const id of ['#pick-files', '#pick-folder']) {
    $(id).addEventListener('change', (e) => {
      const items = filesOfInput(e.target);
      e.target.value = '';
      uploadAll(items);
    });
  }
  const zone = $('#drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', async (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    uploadAll(await filesOfDrop(e.dataTransfer));
  });
  window.addEventListener('hashchange', () => { if (signedIn()) load(); });
  // The HttpOnly session cookie is invisible here; its companion marker says one exists.
  if (signedIn()) load(); else showLogin();
}

init();
