// The first admin (from configuration) signs in, creates a skill and a category that requires
// it, and invites a user, who accepts the one-time link in another browser and signs in.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, browser, login, screenshot, tokenApi, ADMIN_EMAIL, ADMIN_PASSWORD,
} from '../harness.mjs';

let stack;
let admin;
let invitee;

before(async () => {
  stack = await startStack();
  admin = await browser('admin');
  invitee = await browser('invitee');
});

after(async () => {
  await admin?.close();
  await invitee?.close();
  await stack?.stop();
});

test('admin creates a skill and a category and invites a user who accepts and logs in', async () => {
  const { page } = admin;
  await login(page, stack, ADMIN_EMAIL, ADMIN_PASSWORD);
  assert.equal(new URL(page.url()).pathname, '/admin');

  // Channels are read-only and come from the configuration.
  assert.equal(await page.locator('#channel-rows tr').count(), 2);
  assert.match(await page.locator('#channel-rows').textContent(), /managed by operator/);

  await page.click('button[data-tab=skills]');
  await page.fill('#skill-name', 'german');
  await page.click('#skill-form button[type=submit]');
  await page.locator('#skill-rows tr[data-skill="german"]').waitFor();

  await page.click('button[data-tab=categories]');
  await page.fill('#cat-name', 'Returns');
  await page.fill('#cat-desc', 'Sending things back');
  await page.fill('#cat-priority', '5');
  await page.fill('#cat-keywords', 'return, refund');
  await page.fill('#cat-attributes', 'tier=gold');
  await page.check('#cat-skills label:has-text("german") input');
  // German at level 3 or better, and optional: dropped after routing.drop_optional_after_secs.
  await page.selectOption('#cat-skills .cat-skill[data-skill="german"] select', '3');
  await page.check('#cat-skills .cat-skill[data-skill="german"] input[name="cat-optional"]');
  await page.click('#cat-form button[type=submit]');
  const cat = page.locator('#cat-rows tr[data-category="Returns"]');
  await cat.waitFor();
  assert.match(await cat.textContent(), /keywords: return, refund/);
  assert.match(await cat.textContent(), /german ≥ 3 \(optional\)/);
  const cats = await tokenApi(stack, 'GET', '/api/v1/admin/categories');
  const returns = cats.body.find((c) => c.name === 'Returns');
  assert.equal(returns.priority, 5);
  assert.deepEqual(returns.rules[0].contact_attributes, { tier: 'gold' });
  assert.match(await cat.textContent(), /contact: tier=gold/);
  await screenshot(page, 'configurator-category');
  assert.equal(returns.skill_ids.length, 1);
  assert.deepEqual(returns.skill_options, { [returns.skill_ids[0]]: { min_level: 3, optional: true } });

  await page.click('button[data-tab=users]');
  await page.fill('#inv-email', 'new.agent@tenant.test');
  await page.fill('#inv-name', 'Nadia');
  await page.selectOption('#inv-role', 'agent');
  await page.click('#invite-form button[type=submit]');
  const link = (await page.locator('#invite-link').textContent()).trim();
  assert.match(link, /\/invite#[A-Za-z0-9_-]{43}$/);
  await screenshot(page, 'configurator-invite');

  // The invitee opens the link in another browser, chooses a password and lands in the Workspace.
  const p2 = invitee.page;
  await p2.goto(link);
  await p2.locator('#who', { hasText: 'new.agent@tenant.test' }).waitFor();
  await p2.fill('#password', 'short');
  await p2.click('button[type=submit]');
  await p2.locator('#error', { hasText: 'at least 10 characters' }).waitFor();
  await p2.fill('#password', 'nadia-password-1');
  await p2.click('button[type=submit]');
  await p2.waitForURL('**/workspace');
  await p2.waitForSelector('body[data-ready="1"]');
  assert.equal(await p2.locator('#me-name').textContent(), 'Nadia');

  // The link is one-time.
  await p2.goto(link);
  await p2.locator('#error', { hasText: 'used already' }).waitFor();

  // Sign out, then sign in with the new password.
  await p2.goto(`${stack.url}/workspace`);
  await p2.waitForSelector('body[data-ready="1"]');
  await p2.click('#logout');
  await p2.waitForURL('**/login');
  await p2.goto(`${stack.url}/workspace`);
  await p2.waitForURL('**/login');
  await login(p2, stack, 'new.agent@tenant.test', 'nadia-password-1');
  assert.equal(new URL(p2.url()).pathname, '/workspace');

  // The admin sees the invite accepted.
  await page.reload();
  await page.click('button[data-tab=users]');
  await page.locator('#invite-rows', { hasText: 'accepted' }).waitFor();

  // The admin gives Nadia german at level 4 (choosing a level grants the skill); her Workspace
  // shows it.
  const row = page.locator('#user-rows tr[data-user="new.agent@tenant.test"]');
  await row.locator('.user-skill[data-skill="german"] select').selectOption('4');
  await page.locator('#toast', { hasText: 'Skills of Nadia saved' }).waitFor();
  const users = await tokenApi(stack, 'GET', '/api/v1/users');
  const nadia = users.body.find((u) => u.email === 'new.agent@tenant.test');
  assert.deepEqual(nadia.skills.map((s) => [s.active, s.level]), [[true, 4]]);
  await screenshot(page, 'configurator-levels');
  await p2.goto(`${stack.url}/workspace`);
  await p2.waitForSelector('body[data-ready="1"]');
  await p2.locator('#skills', { hasText: 'german · level 4' }).waitFor();

  // A role change applies at the user's next request; deactivation signs them out everywhere.
  await row.locator('select.role').selectOption('dpo');
  await page.locator('#toast', { hasText: 'Nadia is dpo now' }).waitFor();
  const resp = await p2.goto(`${stack.url}/workspace`);
  assert.equal(resp.status(), 403, 'a DPO has no Workspace');
  page.once('dialog', (d) => d.accept());
  await row.locator('button.deactivate').click();
  await page.locator('#toast', { hasText: 'Nadia deactivated' }).waitFor();
  await p2.goto(`${stack.url}/account`);
  await p2.waitForURL('**/login');
  // The admin cannot lock themselves out.
  assert.equal(await page.locator('#user-rows tr[data-user="admin@tenant.test"] select').isDisabled(), true);
  assert.equal(await page.locator('#user-rows tr[data-user="admin@tenant.test"] button.deactivate').count(), 0);
  assert.deepEqual(admin.errors, []);
  assert.deepEqual(invitee.errors, []);
});
