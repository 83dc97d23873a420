// An online agent with auto-allocate on receives conversations without picking them: switching
// the toggle on allocates what waits, a new customer lands in the agent's list live, and
// "Why this agent" shows the stored explanation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, createUser, customerWrites, browser, login, tokenApi, eventually, screenshot,
} from '../harness.mjs';

let stack;
let agent;
let b;

before(async () => {
  stack = await startStack();
  agent = await createUser(stack, 'ann@tenant.test', 'Ann');
  b = await browser('ann');
});

after(async () => {
  await b?.close();
  await stack?.stop();
});

const conversationOf = async (identity) => eventually(async () => {
  const { body } = await tokenApi(stack, 'GET', '/api/v1/conversations');
  return body.find((c) => c.identity === identity);
}, `the conversation of ${identity}`);

test('an online agent with auto-allocate gets new conversations without picking', async () => {
  const page = b.page;
  const picks = [];
  page.on('request', (r) => { if (r.url().endsWith('/pick')) picks.push(r.url()); });
  await login(page, stack, agent.email, agent.password);
  await page.waitForSelector('#live-state[title="Live"]');
  // Auto-allocate starts off in this stack: the first customer waits in the queue.
  assert.equal(await page.isChecked('#auto-allocate'), false);
  await customerWrites(stack, { identity: '46700000101', text: 'First, while nobody takes work' });
  await page.click('button[data-tab=queue]');
  await page.locator('#queue-rows tr').first().waitFor();
  const first = await conversationOf('46700000101');
  assert.equal(first.status, 'queued');

  // Switching auto-allocate on is a trigger: what waits is allocated at once.
  await page.click('#auto-allocate');
  await page.locator('#mine-count', { hasText: '1' }).waitFor();
  // A new customer is allocated on arrival and appears in the list live, without a reload.
  await customerWrites(stack, { identity: '46700000102', text: 'Hello, anyone there?' });
  await page.locator('#mine-count', { hasText: '2' }).waitFor();
  const second = await conversationOf('46700000102');
  for (const c of [first, second]) {
    const now = (await tokenApi(stack, 'GET', `/api/v1/conversations/${c.id}`)).body;
    assert.equal(now.status, 'assigned');
    assert.equal(now.assigned_user_id, agent.userId);
  }
  assert.deepEqual(picks, [], 'nothing was picked by hand');

  await page.click('button[data-tab=conversations]');
  await page.locator(`#my-list .item[data-conversation="${second.id}"]`).click();
  await page.locator('#thread .msg.inbound', { hasText: 'Hello, anyone there?' }).waitFor();
  await page.click('#why summary');
  const decision = page.locator('#why-body .decision[data-reason="only_candidate"]');
  await decision.waitFor();
  assert.match(await decision.textContent(), /automatic · you \(1\/5\): the only agent who could take it · 1 eligible of 1/);
  await screenshot(page, 'auto-allocation');
  assert.deepEqual(b.errors, []);
});
