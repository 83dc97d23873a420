// Roles are enforced on pages and on the API; sessions need the CSRF token to change anything;
// failed logins are rate limited.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, createUser, browser, login, ADMIN_EMAIL,
} from '../harness.mjs';

let stack;
let agent;
let b;

before(async () => {
  stack = await startStack();
  agent = await createUser(stack, 'dora@tenant.test', 'Dora');
  b = await browser('dora');
});

after(async () => {
  await b?.close();
  await stack?.stop();
});

test('an agent cannot open admin pages: UI and API both answer 403', async () => {
  const { page } = b;
  await page.goto(`${stack.url}/workspace`);
  assert.equal(new URL(page.url()).pathname, '/login', 'signed out: redirected to login');

  await login(page, stack, agent.email, agent.password);
  const resp = await page.goto(`${stack.url}/admin`);
  assert.equal(resp.status(), 403);
  assert.match(await page.locator('#forbidden').textContent(), /may not open this page/);

  const api = await page.evaluate(async () => {
    const me = await (await fetch('/api/v1/me')).json();
    const get = async (p) => (await fetch(p)).status;
    const post = async (p, body, csrf) => (await fetch(p, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(csrf ? { 'x-csrf-token': csrf } : {}) },
      body: JSON.stringify(body),
    })).status;
    return {
      users: await get('/api/v1/users'),
      channels: await get('/api/v1/admin/channels'),
      contacts: await get('/api/v1/contacts'),
      invite: await post('/api/v1/admin/invites', { email: 'x@y.z', role: 'admin' }, me.csrf_token),
      skill: await post('/api/v1/skills', { name: 'sneaky' }, me.csrf_token),
      noCsrf: await post('/api/v1/conversations/no-such-id/close', {}, null),
      autoNoCsrf: (await fetch('/api/v1/me/auto-allocate', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"enabled":false}' })).status,
      autoCsrf: (await fetch('/api/v1/me/auto-allocate', { method: 'PUT', headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrf_token }, body: '{"enabled":false}' })).status,
      queue: await get('/api/v1/queue'),
    };
  });
  assert.deepEqual(api, {
    users: 403, channels: 403, contacts: 403, invite: 403, skill: 403,
    noCsrf: 403, autoNoCsrf: 403, autoCsrf: 204, queue: 200,
  });
  assert.deepEqual(b.errors, []);
});

test('the session cookie is HttpOnly and SameSite; logins are rate limited with 429', async () => {
  const cookies = await b.context.cookies(stack.url);
  const session = cookies.find((c) => c.name === 'contact_session');
  assert.ok(session.httpOnly);
  assert.equal(session.sameSite, 'Strict');
  assert.equal(await b.page.evaluate(() => document.cookie.includes('contact_session')), false);

  const attempt = (password, ip) => fetch(`${stack.url}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
    body: JSON.stringify({ email: ADMIN_EMAIL, password }),
  });
  const statuses = [];
  for (let i = 0; i < 6; i++) statuses.push((await attempt('wrong-password', `10.9.0.${i}`)).status);
  assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429]);
  const blocked = await attempt('admin-password-1', '10.9.1.1');
  assert.equal(blocked.status, 429, 'the right password does not help once the account is blocked');
  assert.ok(Number(blocked.headers.get('retry-after')) > 0);
  const form = await fetch(`${stack.url}/auth/login`, { method: 'POST', body: 'email=a&password=b', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  assert.equal(form.status, 415, 'cross-site forms cannot log in');
});
