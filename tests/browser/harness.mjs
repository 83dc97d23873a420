// Test harness: the real runtime binary and its simulator on free loopback ports with a fresh
// SQLite file, and Debian's Chromium driven by playwright-core with a fresh profile.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

/** The runtime binary (built by run.sh / cargo build -p contact-runtime). */
export const BIN = process.env.CONTACT_RUNTIME_BIN
  || path.join(process.env.CARGO_TARGET_DIR || path.join(repo, 'target'), 'debug', 'contact-runtime');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const ARTIFACTS = path.join(here, 'artifacts');

export const ADMIN_EMAIL = 'admin@tenant.test';
export const ADMIN_PASSWORD = 'admin-password-1';
export const TOKEN = 'browser-test-token';

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitHttp(url, what, proc, ms = 20000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}:\n${proc.logs.join('')}`);
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch { /* not up yet */ }
    await sleep(50);
  }
  throw new Error(`${what} did not answer ${url} within ${ms} ms:\n${proc.logs.join('')}`);
}

function run(args, env) {
  const proc = spawn(BIN, args, { env: { ...process.env, CONTACT_LOG: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.logs = [];
  const keep = (d) => { proc.logs.push(d.toString()); if (proc.logs.length > 200) proc.logs.shift(); };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  return proc;
}

async function stopProc(p) {
  if (p.exitCode !== null || p.signalCode) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

/**
 * Starts the simulator and the runtime (WhatsApp app `wa`, SMS app `sms`) on a fresh SQLite
 * database. `env` adds runtime variables (e.g. a maintenance window). New agents start with
 * auto-allocate `autoAllocate` (off by default here: most tests pick conversations by hand).
 */
export async function startStack({ env = {}, autoAllocate = false } = {}) {
  if (!existsSync(BIN)) throw new Error(`runtime binary ${BIN} not found: run ./run.sh or set CONTACT_RUNTIME_BIN`);
  const dir = await mkdtemp(path.join(tmpdir(), 'contact-browser-'));
  const [port, simPort] = [await freePort(), await freePort()];
  const sim = `http://127.0.0.1:${simPort}`;
  const app = (name, type, secret) => `  - name: ${name}
    type: ${type}
    project_id: browser-project
    app_id: APP${type}
    key_id: key
    key_secret: key-secret
    webhook_secret: ${secret}
    base_url: ${sim}
`;
  const config = `listen: 127.0.0.1:${port}
database_url: sqlite:${path.join(dir, 'contact.sqlite')}
api_token: ${TOKEN}
sinch:
  auth_url: ${sim}/oauth2/token
outbox:
  poll_interval_ms: 50
  max_attempts: 3
  base_backoff_ms: 50
  max_backoff_ms: 200
routing:
  auto_allocate_by_default: ${autoAllocate}
channels:
${app('wa', 'WHATSAPP', 'wa-secret')}${app('sms', 'SMS', 'sms-secret')}`;
  const cfg = path.join(dir, 'contact.yaml');
  await writeFile(cfg, config);
  const simulator = run(['--config', cfg, 'simulator', '--listen', `127.0.0.1:${simPort}`, '--runtime-url', `http://127.0.0.1:${port}`], {});
  const runtime = run(['--config', cfg, 'serve'], {
    CONTACT_BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
    CONTACT_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
    ...env,
  });
  const stack = {
    url: `http://127.0.0.1:${port}`,
    simUrl: sim,
    dir,
    async stop() {
      await Promise.all([stopProc(runtime), stopProc(simulator)]);
    },
  };
  try {
    await waitHttp(`${sim}/_sim/healthz`, 'simulator', simulator);
    await waitHttp(`${stack.url}/readyz`, 'runtime', runtime);
  } catch (e) {
    await stack.stop();
    throw e;
  }
  return stack;
}

/** Calls the runtime API with the integrators' bearer token. */
export async function tokenApi(stack, method, p, body) {
  const r = await fetch(stack.url + p, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** Creates an account through the real invite flow (admin invite → accept); returns its password. */
export async function createUser(stack, email, displayName, role = 'agent', skillIds = []) {
  const inv = await tokenApi(stack, 'POST', '/api/v1/admin/invites', { email, display_name: displayName, role });
  if (inv.status !== 201) throw new Error(`invite failed: ${JSON.stringify(inv)}`);
  const token = inv.body.url.split('#')[1];
  const password = `${displayName.toLowerCase()}-password-1`;
  const r = await fetch(`${stack.url}/auth/invite/accept`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token, password }),
  });
  if (!r.ok) throw new Error(`accept failed: ${r.status} ${await r.text()}`);
  const { user_id: userId } = await r.json();
  if (skillIds.length) {
    const s = await tokenApi(stack, 'PUT', `/api/v1/admin/users/${userId}/skills`, { skill_ids: skillIds });
    if (s.status !== 204) throw new Error(`skills failed: ${JSON.stringify(s)}`);
  }
  return { email, password, userId, displayName };
}

/** A customer writes through the simulator (signed webhook to the runtime). */
export async function customerWrites(stack, { channel = 'wa', identity = '46700000001', text }) {
  const r = await fetch(`${stack.simUrl}/_sim/inbound`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel, identity, text }),
  });
  const body = await r.json();
  if (!r.ok || body.runtime_status !== 200) throw new Error(`inbound failed: ${JSON.stringify(body)}`);
  return body;
}

/** The simulator's next `failNext` sends answer 500. */
export async function simFailNext(stack, failNext) {
  const r = await fetch(`${stack.simUrl}/_sim/faults`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ fail_next: failNext, throttle_next: 0, retry_after_secs: 0, delay_next: 0, delay_ms: 0 }),
  });
  if (!r.ok) throw new Error(`faults: ${r.status} ${await r.text()}`);
}

/** What the simulator accepted from the runtime (`messages:send` bodies). */
export async function simSent(stack) {
  const r = await fetch(`${stack.simUrl}/_sim/sent`);
  return (await r.json()).messages;
}

/** Polls `f` until it returns a truthy value. */
export async function eventually(f, what, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A fresh Chromium (its own profile directory) with one page. */
export async function browser(name = 'browser') {
  const profile = await mkdtemp(path.join(tmpdir(), `contact-chromium-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(10000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  return { context, page, errors, close: () => context.close() };
}

/** Signs in through the login page and waits for the landing page to be ready. */
export async function login(page, stack, email, password) {
  await page.goto(`${stack.url}/login`);
  await page.fill('#email', email);
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('body[data-ready="1"]');
}

/** Saves a screenshot under artifacts/. */
export async function screenshot(page, name) {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}
