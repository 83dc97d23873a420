// An agent signs in, a customer writes through the simulator, the conversation appears in the
// queue without a reload, the agent picks it, replies, the simulator receives the reply and the
// delivery ticks and the customer's next message appear live.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, createUser, customerWrites, simSent, simFailNext, eventually, browser, login, screenshot, tokenApi,
} from '../harness.mjs';

let stack;
let agent;
let b;

before(async () => {
  const start = new Date(Date.now() + 2 * 3600e3).toISOString();
  const end = new Date(Date.now() + 4 * 3600e3).toISOString();
  stack = await startStack({ env: { CONTACT_MAINTENANCE_START: start, CONTACT_MAINTENANCE_END: end } });
  agent = await createUser(stack, 'alice@tenant.test', 'Alice');
  b = await browser('alice');
});

after(async () => {
  await b?.close();
  await stack?.stop();
});

test('agent receives, picks and answers a conversation started by the simulator', async () => {
  const { page } = b;
  await login(page, stack, agent.email, agent.password);
  assert.equal(new URL(page.url()).pathname, '/workspace');
  await page.waitForFunction(() => document.getElementById('live-state').title === 'Live');

  // The maintenance banner announces the window from the runtime configuration.
  const banner = page.locator('#maintenance');
  assert.match(await banner.textContent(), /Planned maintenance/);

  await page.click('button[data-tab=queue]');
  await customerWrites(stack, { identity: '46700000001', text: 'Where is my parcel?' });
  // Live: the row appears without a reload.
  const row = page.locator('#queue-rows tr');
  await row.first().waitFor();
  assert.equal(await row.count(), 1);
  assert.match(await row.first().textContent(), /WHATSAPP/);
  assert.equal(await page.locator('#queue-count').textContent(), '1');

  await row.first().locator('button.pick').click();
  await page.locator('#thread .msg.inbound').first().waitFor();
  assert.equal(await page.locator('#thread .msg.inbound .text').first().textContent(), 'Where is my parcel?');
  assert.match(await page.locator('#window').textContent(), /WhatsApp window closes in/);
  assert.match(await page.locator('#counter').textContent(), /0 \/ 4096/);

  await page.fill('#composer-text', 'It left our warehouse this morning.');
  await page.click('#send');
  const sent = await eventually(async () => (await simSent(stack))
    .find((m) => JSON.stringify(m.body).includes('It left our warehouse this morning.')), 'the simulator to receive the reply');
  assert.equal(sent.body.recipient?.identified_by?.channel_identities?.[0]?.identity ?? '46700000001', '46700000001');

  // Delivery reports from the simulator move the tick live to READ.
  await page.locator('#thread .msg.outbound .tick[data-status="READ"]').waitFor();

  // The customer answers: it shows up in the open thread without a reload.
  await customerWrites(stack, { identity: '46700000001', text: 'Thanks!' });
  await page.locator('#thread .msg.inbound .text', { hasText: 'Thanks!' }).waitFor();

  // An internal note stays internal.
  await page.check('#as-note');
  await page.fill('#composer-text', 'Customer is happy');
  await page.click('#send');
  await page.locator('#thread .msg.note', { hasText: 'Customer is happy' }).waitFor();
  assert.ok(!(await simSent(stack)).some((m) => JSON.stringify(m.body).includes('Customer is happy')), 'notes are never sent');

  // The agent records a customer attribute (category rules match on it); a bad key is refused.
  await page.click('#attributes summary');
  await page.fill('#attr-text', 'Tier=gold');
  await page.click('#attr-save');
  await page.locator('#toast', { hasText: 'attribute key `Tier`' }).waitFor();
  await page.fill('#attr-text', 'tier=gold\nlang=en');
  await page.click('#attr-save');
  await page.locator('#attr-list .chip[data-attribute="tier"]', { hasText: 'tier = gold' }).waitFor();
  const contacts = await tokenApi(stack, 'GET', '/api/v1/contacts');
  const contact = contacts.body.find((c) => c.identities.some((i) => i.identity === '46700000001'));
  const stored = await tokenApi(stack, 'GET', `/api/v1/contacts/${contact.id}/attributes`);
  assert.deepEqual(stored.body.attributes, { lang: 'en', tier: 'gold' });

  await screenshot(page, 'workspace-conversation');

  await page.click('#close');
  await page.locator('#my-list', { hasText: 'No open conversations.' }).waitFor();
  await page.click('button[data-tab=dashboard]');
  await page.locator('#my-figures .card', { hasText: 'Closed today' }).locator('.value', { hasText: '1' }).waitFor();
  await screenshot(page, 'workspace-dashboard');
  assert.deepEqual(b.errors, []);
});

test('the composer knows the SMS limit and the server enforces it', async () => {
  const { page } = b;
  await page.click('button[data-tab=queue]');
  await customerWrites(stack, { channel: 'sms', identity: '46700000002', text: 'SMS here' });
  const row = page.locator('#queue-rows tr', { hasText: 'SMS' });
  await row.locator('button.pick').click();
  await page.locator('#thread .msg.inbound .text', { hasText: 'SMS here' }).waitFor();
  assert.match(await page.locator('#counter').textContent(), /0 \/ 1600/);
  assert.equal(await page.locator('#window').textContent(), '', 'no window on SMS');
  assert.equal(await page.locator('#template').count(), 0, 'no templates on SMS');
  await page.uncheck('#as-note');
  await page.fill('#composer-text', 'x'.repeat(1601));
  assert.match(await page.locator('#counter').getAttribute('class'), /over/);
  await page.click('#send');
  await page.locator('#toast', { hasText: 'at most 1600 characters' }).waitFor();
  // The server says the same to anyone who skips the browser check.
  const status = await page.evaluate(async ({ id, text }) => {
    const me = await (await fetch('/api/v1/me')).json();
    const r = await fetch(`/api/v1/workspace/conversations/${id}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrf_token },
      body: JSON.stringify({ content: { type: 'text', text } }),
    });
    return [r.status, (await r.json()).error.code];
  }, { id: await page.locator('#my-list .item[aria-current="true"]').getAttribute('data-conversation'), text: 'x'.repeat(1601) });
  assert.deepEqual(status, [422, 'sms_too_long']);
  assert.deepEqual(b.errors, []);
});

test('a send that fails for good shows as failed, live, with the reason', async () => {
  const { page } = b;
  await simFailNext(stack, 10);
  await page.fill('#composer-text', 'This one will not arrive');
  await page.click('#send');
  const failed = page.locator('#thread .msg.outbound', { hasText: 'This one will not arrive' });
  await failed.locator('.tick[data-status="FAILED"]').waitFor();
  assert.match(await failed.locator('.error').textContent(), /500|attempt|failed/i);
  await simFailNext(stack, 0);
  await screenshot(page, 'workspace-failed-send');
  assert.deepEqual(b.errors, []);
});
