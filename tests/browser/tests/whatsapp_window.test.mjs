// Outside WhatsApp's 24-hour customer-care window the composer only offers templates, and a
// template goes out. The conversation is aged by editing the test's own SQLite file with the
// sqlite3 command (.ci/run installs it; without it the test fails and says so).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  startStack, createUser, customerWrites, simSent, eventually, browser, login, screenshot,
} from '../harness.mjs';

function requireSqlite3() {
  try { execFileSync('sqlite3', ['-version']); } catch {
    throw new Error('the sqlite3 command is required by this test: apt-get install -y sqlite3');
  }
}

let stack;
let agent;
let b;

before(async () => {
  requireSqlite3();
  stack = await startStack();
  agent = await createUser(stack, 'wendy@tenant.test', 'Wendy');
  b = await browser('wendy');
});

after(async () => {
  await b?.close();
  await stack?.stop();
});

test('outside the WhatsApp window only a template can be sent', async () => {
  const { page } = b;
  await customerWrites(stack, { identity: '46700000024', text: 'Yesterday I asked…' });
  // The customer's last message was 25 hours ago.
  // The runtime writes to the same file: wait for its lock instead of failing with SQLITE_BUSY.
  execFileSync('sqlite3', ['-cmd', '.timeout 10000', path.join(stack.dir, 'contact.sqlite'),
    'UPDATE conversations SET last_inbound_at = last_inbound_at - 90000000']);
  await login(page, stack, agent.email, agent.password);
  await page.click('button[data-tab=queue]');
  await page.locator('#queue-rows tr button.pick').first().click();
  await page.locator('#thread .msg.inbound').first().waitFor();
  assert.equal(await page.locator('#window').textContent(), 'WhatsApp 24-hour window closed: only templates can be sent');
  assert.equal(await page.locator('#composer-text').isDisabled(), true);
  assert.equal(await page.locator('#template').getAttribute('open'), '');

  // Free text is refused by the server too.
  const refused = await page.evaluate(async (id) => {
    const me = await (await fetch('/api/v1/me')).json();
    const r = await fetch(`/api/v1/workspace/conversations/${id}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrf_token },
      body: JSON.stringify({ content: { type: 'text', text: 'hello?' } }),
    });
    return [r.status, (await r.json()).error.code];
  }, await page.locator('#my-list .item[aria-current="true"]').getAttribute('data-conversation'));
  assert.deepEqual(refused, [422, 'outside_customer_care_window']);

  await page.fill('#tpl-id', 'order_update');
  await page.fill('#tpl-params', 'body[1]text=4711');
  await page.click('#template button');
  await page.locator('#thread .msg.outbound', { hasText: 'Template order_update (en_US)' }).waitFor();
  const sent = await eventually(async () => (await simSent(stack)).find((m) => JSON.stringify(m.body).includes('order_update')), 'the template at the simulator');
  assert.match(JSON.stringify(sent.body), /4711/);
  await screenshot(page, 'whatsapp-window-closed');
  assert.deepEqual(b.errors, []);
});
