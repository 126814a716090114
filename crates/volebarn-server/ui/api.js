// The server's REST API as the web UI uses it. Authentication is the HttpOnly session
// cookie from POST /auth/login (script never sees it); every request carries
// `X-Volebarn-UI: 1`, the server's CSRF proof for cookie-authenticated writes.

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
export const trash = async (dir) => (await request('GET', dir ? `/trash/${encodePath(dir)}` : '/trash')).json();
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

/**
 * Uploads one file with progress: `POST /files/{path}` (create); when something is there
 * already, `PUT` replaces it (the old content stays as a version). XMLHttpRequest because
 * fetch reports no upload progress.
 */
export function upload(path, file, onProgress) {
  const send = (method) => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, `/files/${encodePath(path)}`);
    xhr.setRequestHeader('X-Volebarn-UI', '1');
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    if (file.lastModified) {
      xhr.setRequestHeader('X-Modified-Time', new Date(file.lastModified).toISOString());
    }
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: 'network error' }));
    xhr.send(file);
  });
  return send('POST').catch((e) => {
    if (e.code === 'already_exists') return send('PUT');
    throw e;
  });
}
