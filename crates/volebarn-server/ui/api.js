// The server's REST API as the web UI uses it. Authentication is the HttpOnly session
// cookie from POST /auth/login (script never sees it); every request carries
// `X-Volebarn-UI: 1`, the server's CSRF proof for cookie-authenticated writes.

import { blake3 } from './vendor/noble-hashes/blake3.js';

const UI_HEADER = { 'X-Volebarn-UI': '1' };

/** An answer that is not 2xx, with the server's OperationError body when it sent one. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error_code || '';
    this.path = body?.path || '';
  }
}

/** `a/b c/d` → `a/b%20c/d`: each segment percent-encoded once. */
export function encodePath(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}

async function check(resp) {
  if (resp.ok) return resp;
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  throw new ApiError(resp.status, body);
}

export async function request(method, url, { json, headers = {}, signal } = {}) {
  const init = { method, headers: { ...UI_HEADER, ...headers }, credentials: 'same-origin', signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['Content-Type'] = 'application/json';
  }
  return check(await fetch(url, init));
}

export const login = (token) => request('POST', '/auth/login', { json: { token } });
export const logout = () => request('POST', '/auth/logout');

/** The listing of `dir` ('' is the root) and the head revision read before it. */
export async function list(dir) {
  const resp = await request('GET', dir ? `/directories/${encodePath(dir)}` : '/directories');
  const head = Number(resp.headers.get('X-Head-Rev') || 0);
  return { listing: await resp.json(), head };
}

export const search = async (pattern, dir) => {
  const q = new URLSearchParams({ pattern, path: dir, recursive: 'true' });
  return (await request('GET', `/search?${q}`)).json();
};
export const mkdir = (path) => request('POST', `/directories/${encodePath(path)}`);
export const deleteFile = (path) => request('DELETE', `/files/${encodePath(path)}`);
export const deleteDir = (path) => request('DELETE', `/directories/${encodePath(path)}`);
export const move = (from, to, overwrite = false) =>
  request('POST', '/move', { json: { from_path: from, to_path: to, overwrite } }).then((r) => r.json());
export const versions = async (path) => (await request('GET', `/versions/${encodePath(path)}`)).json();
export const restore = (path, rev) =>
  request('POST', `/versions/${encodePath(path)}/restore`, { json: { rev } }).then((r) => r.json());
/** Deleted files below `dir`, also in deleted subfolders. */
export const trash = async (dir) =>
  (await request('GET', `${dir ? `/trash/${encodePath(dir)}` : '/trash'}?recursive=true`)).json();
export const changes = async (since, wait, signal) =>
  (await request('GET', `/changes?since=${since}&wait=${wait}`, { signal })).json();

/** URL of a file's content (or of revision `rev` of it). */
export function fileUrl(path, rev) {
  return `/files/${encodePath(path)}${rev === undefined ? '' : `?rev=${rev}`}`;
}

export async function fileBlob(path, rev) {
  return (await request('GET', fileUrl(path, rev))).blob();
}

/** `POST /bulk/download` of `paths`: the multipart/mixed answer as [{path, bytes}]. */
export async function bulkDownload(paths) {
  const resp = await request('POST', '/bulk/download', { json: { paths } });
  const type = resp.headers.get('Content-Type') || '';
  const boundary = /boundary="?([^";]+)"?/.exec(type)?.[1];
  if (!boundary) throw new ApiError(500, { error: 'no multipart boundary in the answer' });
  return parseMultipart(new Uint8Array(await resp.arrayBuffer()), boundary);
}

function indexOf(hay, needle, from) {
  outer: for (let i = from; i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Parts of a multipart body that name a file (`X-File-Path`), with their bytes. */
export function parseMultipart(body, boundary) {
  const enc = new TextEncoder();
  const delim = enc.encode(`--${boundary}`);
  const crlf2 = enc.encode('\r\n\r\n');
  const dec = new TextDecoder();
  const files = [];
  let at = indexOf(body, delim, 0);
  while (at >= 0) {
    const start = at + delim.length;
    if (body[start] === 45 && body[start + 1] === 45) break; // `--`: the closing delimiter
    const headEnd = indexOf(body, crlf2, start);
    if (headEnd < 0) break;
    const head = dec.decode(body.subarray(start, headEnd));
    const next = indexOf(body, enc.encode(`\r\n--${boundary}`), headEnd + 4);
    if (next < 0) break;
    const path = /^x-file-path:\s*(.+)$/im.exec(head)?.[1]?.trim();
    if (path) files.push({ path: decodeURIComponent(path), bytes: body.slice(headEnd + 4, next) });
    at = next + 2;
  }
  return files;
}

/** One request through XMLHttpRequest (fetch reports no upload progress). */
function send(method, url, body, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [k, v] of Object.entries({ ...UI_HEADER, ...headers })) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      let answer = null;
      try { answer = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(answer);
      else reject(new ApiError(xhr.status, answer));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: 'network error' }));
    xhr.send(body);
  });
}

/** Files from this size on go through the chunked, resumable upload. */
export const CHUNKED_FROM = 8 * 1024 * 1024;
/** The server's largest chunk. */
const CHUNK = 4 * 1024 * 1024;
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * Creates `path` (POST), or replaces what is there (PUT: the old content stays as a version).
 * `exists`: the listing shows a file there, so PUT straight away (a refused POST would be a
 * failed request in the browser's console); otherwise POST, and PUT if that finds one.
 */
async function createOrReplace(write, exists) {
  if (exists) return write('PUT');
  try {
    return await write('POST');
  } catch (e) {
    if (e.code === 'already_exists') return write('PUT');
    throw e;
  }
}

/**
 * Uploads one file, reporting the bytes done. Small files: one streamed request. Large
 * ones: 4 MiB chunks named by their BLAKE3 (computed here), only those the server lacks
 * (`POST /chunks/missing`: an interrupted upload resumes where it stopped), each retried,
 * then a commit of the chunk list without a whole-file hash (the server computes it).
 */
export async function upload(path, file, onProgress, exists = false) {
  const url = `/files/${encodePath(path)}`;
  const mtime = file.lastModified ? { 'X-Modified-Time': new Date(file.lastModified).toISOString() } : {};
  if (file.size < CHUNKED_FROM) {
    return createOrReplace((method) =>
      send(method, url, file, { 'Content-Type': 'application/octet-stream', ...mtime }, onProgress), exists);
  }
  const chunks = [];
  for (let at = 0; at < file.size; at += CHUNK) {
    const bytes = new Uint8Array(await file.slice(at, at + CHUNK).arrayBuffer());
    chunks.push({ id: hex(blake3(bytes)), len: bytes.length, at });
  }
  const ids = [...new Set(chunks.map((c) => c.id))];
  const { missing } = await (await request('POST', '/chunks/missing', { json: { ids } })).json();
  const wanted = new Set(missing);
  const todo = chunks.filter((c) => wanted.delete(c.id));
  let done = file.size - todo.reduce((n, c) => n + c.len, 0);
  onProgress(done);
  for (const c of todo) {
    for (let attempt = 1; ; attempt++) {
      try {
        await send('PUT', `/chunks/${c.id}`, file.slice(c.at, c.at + c.len),
          { 'Content-Type': 'application/octet-stream' }, (n) => onProgress(done + n));
        break;
      } catch (e) {
        if (attempt >= 3 || (e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429)) throw e;
      }
    }
    done += c.len;
    onProgress(done);
  }
  const commit = JSON.stringify({ size: file.size, chunks: chunks.map(({ id, len }) => ({ id, len })) });
  return createOrReplace((method) =>
    send(method, url, commit, { 'Content-Type': 'application/vnd.volebarn.chunks+json', ...mtime }, () => {}), exists);
}
