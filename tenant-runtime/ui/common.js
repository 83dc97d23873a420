// Shared helpers of the Contact web UI. Every piece of text that may come from a customer (or
// any user) is put into the page with text nodes / textContent, never parsed as HTML.

/** The session as told by /api/v1/me (csrf token included). */
export const session = { csrf: null, me: null };

/** An API error with the server's status, code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API; state-changing requests carry the CSRF token. */
export async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['x-csrf-token'] = session.csrf;
  const resp = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401 && !path.startsWith('/auth/')) {
    location.href = '/login';
    throw new ApiError(401, 'unauthenticated', 'signed out');
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: { code: 'unexpected_response', message: `${resp.status} ${resp.statusText}` } };
  }
  if (!resp.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(resp.status, e.code || 'error', e.message || resp.statusText);
  }
  return data;
}

/** Loads the signed-in user and the CSRF token. */
export async function loadMe() {
  const me = await api('GET', '/api/v1/me');
  session.me = me;
  session.csrf = me.csrf_token;
  return me;
}

/**
 * Builds an element. `attrs` keys starting with "on" add listeners; `class`, `text` and other
 * keys set properties/attributes. Children that are strings become text nodes.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k in node && typeof v !== 'string') node[k] = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Replaces the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** "4m 05s", "2h 10m". */
export function duration(secs) {
  if (secs === null || secs === undefined || Number.isNaN(secs)) return '–';
  secs = Math.max(0, Math.round(secs));
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  if (h) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(s).padStart(2, '0')}s`;
  return `${s}s`;
}

/** Local time of an RFC 3339 timestamp. */
export function time(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return d.toLocaleString(undefined, { hour: '2-digit', minute: '2-digit', day: '2-digit', month: 'short' });
}

/** Only http(s) URLs become links or images. */
export function safeUrl(u) {
  try {
    const url = new URL(u);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

let toastTimer;
/** Shows a short message. */
export function toast(message) {
  let t = document.getElementById('toast');
  if (!t) {
    t = el('div', { id: 'toast', class: 'toast', role: 'status' });
    document.body.append(t);
  }
  t.textContent = message;
  t.classList.remove('hidden');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.add('hidden'), 4000);
}

/** Signs out and goes to the login page. */
export async function logout() {
  try { await api('POST', '/auth/logout'); } finally { location.href = '/login'; }
}

/** Tabs: buttons with data-tab toggle sections with matching ids. */
export function tabs(container, onShow) {
  const buttons = [...container.querySelectorAll('button[data-tab]')];
  const show = (name) => {
    for (const b of buttons) {
      const on = b.dataset.tab === name;
      b.setAttribute('aria-selected', String(on));
      document.getElementById(b.dataset.tab).classList.toggle('hidden', !on);
    }
    if (onShow) onShow(name);
  };
  for (const b of buttons) b.addEventListener('click', () => show(b.dataset.tab));
  return show;
}
