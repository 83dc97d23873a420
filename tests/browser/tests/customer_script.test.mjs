// A customer's message full of markup is shown verbatim as text and never runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, createUser, customerWrites, browser, login, screenshot,
} from '../harness.mjs';

let stack;
let agent;
let b;

before(async () => {
  stack = await startStack();
  agent = await createUser(stack, 'carl@tenant.test', 'Carl');
  b = await browser('carl');
});

after(async () => {
  await b?.close();
  await stack?.stop();
});

const PAYLOADS = [
  '<img src=x onerror="window.__pwned=1;alert(1)">',
  '<script>window.__pwned=2;alert(2)</script>',
  '<svg onload="window.__pwned=3"></svg><a href="javascript:window.__pwned=4">click</a>',
  '"><iframe srcdoc="<script>parent.__pwned=5</script>"></iframe>',
];

test('script payloads from a customer do not execute and show as text', async () => {
  const { page } = b;
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  await login(page, stack, agent.email, agent.password);
  await page.click('button[data-tab=queue]');
  for (const text of PAYLOADS) await customerWrites(stack, { identity: '46700000666', text });
  await page.locator('#queue-rows tr button.pick').first().click();
  for (const text of PAYLOADS) {
    await page.locator('#thread .msg.inbound .text', { hasText: text }).waitFor();
  }
  const shown = await page.locator('#thread .msg.inbound .text').allTextContents();
  assert.deepEqual(shown, PAYLOADS, 'every payload is visible verbatim');
  // Nothing was parsed as markup: no element from the payloads exists in the page.
  assert.equal(await page.locator('#thread img, #thread script, #thread svg, #thread iframe, #thread a[href^="javascript"]').count(), 0);
  await page.waitForTimeout(300);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(dialogs, []);
  assert.deepEqual(b.errors, []);
  // The page is served with a CSP that forbids inline script as a second line of defence.
  const resp = await page.request.get(`${stack.url}/workspace`);
  assert.match(resp.headers()['content-security-policy'], /script-src 'self'/);
  await screenshot(page, 'customer-script-as-text');
});
