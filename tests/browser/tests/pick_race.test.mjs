// Two agents in two browsers pick the same queued conversation at the same moment: exactly one
// gets it, the other is told someone was faster (409).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, createUser, customerWrites, browser, login, tokenApi, screenshot,
} from '../harness.mjs';

let stack;
const agents = [];
const browsers = [];

before(async () => {
  stack = await startStack();
  agents.push(await createUser(stack, 'ann@tenant.test', 'Ann'));
  agents.push(await createUser(stack, 'ben@tenant.test', 'Ben'));
  for (const a of agents) browsers.push(await browser(a.displayName));
});

after(async () => {
  for (const b of browsers) await b.close();
  await stack?.stop();
});

test('two agents pick the same conversation at once: exactly one wins', async () => {
  for (const [i, b] of browsers.entries()) {
    await login(b.page, stack, agents[i].email, agents[i].password);
    await b.page.click('button[data-tab=queue]');
  }
  const { body } = await customerWrites(stack, { identity: '46700000077', text: 'Who takes me?' }).then(async () => tokenApi(stack, 'GET', '/api/v1/conversations?status=queued'));
  assert.equal(body.length, 1);
  const id = body[0].id;
  const buttons = browsers.map((b) => b.page.locator(`#queue-rows tr[data-conversation="${id}"] button.pick`));
  await Promise.all(buttons.map((btn) => btn.waitFor()));

  // Record what each browser's pick request answered.
  const answers = browsers.map((b) => b.page.waitForResponse((r) => r.url().endsWith(`/conversations/${id}/pick`)));
  await Promise.all(buttons.map((btn) => btn.click()));
  const statuses = (await Promise.all(answers)).map((r) => r.status()).sort();
  assert.deepEqual(statuses, [200, 409]);

  const conv = await tokenApi(stack, 'GET', `/api/v1/conversations/${id}`);
  assert.equal(conv.body.status, 'assigned');
  const winner = agents.findIndex((a) => a.userId === conv.body.assigned_user_id);
  assert.ok(winner >= 0);
  const loser = 1 - winner;
  await browsers[winner].page.locator('#thread .msg.inbound', { hasText: 'Who takes me?' }).waitFor();
  await browsers[loser].page.locator('#toast', { hasText: 'Someone else picked it first.' }).waitFor();
  // The loser's queue empties live, and the loser cannot open the conversation.
  await browsers[loser].page.locator('#queue-empty:not(.hidden)').waitFor();
  const status = await browsers[loser].page.evaluate(async (cid) => (await fetch(`/api/v1/workspace/conversations/${cid}`)).status, id);
  assert.equal(status, 403);
  await screenshot(browsers[loser].page, 'pick-race-loser');

  // The winner hands the conversation to the other agent, whose Workspace shows it live.
  const w = browsers[winner].page;
  await w.selectOption('#transfer-to', { label: `${agents[loser].displayName} (online)` });
  await w.click('#transfer');
  await w.locator('#toast', { hasText: 'Transferred' }).waitFor();
  const l = browsers[loser].page;
  await l.locator('#mine-count', { hasText: '1' }).waitFor();
  await l.click('button[data-tab=conversations]');
  await l.locator(`#my-list .item[data-conversation="${id}"]`).click();
  await l.locator('#thread .msg.inbound', { hasText: 'Who takes me?' }).waitFor();
  assert.equal((await tokenApi(stack, 'GET', `/api/v1/conversations/${id}`)).body.assigned_user_id, agents[loser].userId);

  // Many more races straight against the API, both picks sent at once: always one winner. Picks
  // count against the agent's capacity (5 by default): raise it so that only the race decides.
  const routing = await tokenApi(stack, 'PUT', '/api/v1/admin/routing', { auto_allocate_by_default: false, max_conversations_per_agent: 50, return_to_queue_after_disconnect_secs: 60 });
  assert.equal(routing.status, 200);
  const sessions = [];
  for (const a of agents) {
    const r = await fetch(`${stack.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: a.email, password: a.password }) });
    sessions.push({ cookie: r.headers.get('set-cookie').split(';')[0], csrf: (await r.json()).csrf_token });
  }
  for (let i = 0; i < 20; i++) {
    await customerWrites(stack, { identity: `4670100${String(i).padStart(4, '0')}`, text: `race ${i}` });
  }
  const queued = (await tokenApi(stack, 'GET', '/api/v1/queue')).body;
  assert.equal(queued.length, 20);
  for (const q of queued) {
    const results = await Promise.all(sessions.map((s) => fetch(`${stack.url}/api/v1/conversations/${q.id}/pick`, {
      method: 'POST', headers: { cookie: s.cookie, 'x-csrf-token': s.csrf },
    }).then((r) => r.status)));
    assert.deepEqual(results.sort(), [200, 409], `conversation ${q.id}`);
  }
  assert.equal((await tokenApi(stack, 'GET', '/api/v1/queue')).body.length, 0);
});
