// The data protection page: a DPO finds a customer who wrote in through the simulator by phone,
// e-mail and name, sees every hit grouped, downloads the JSON export, anonymizes after typing
// the customer's id, and the data is gone from the page and the API while the audit chain still
// verifies. Agents and admins get 403 on the page and on the privacy API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  startStack, createUser, customerWrites, tokenApi, eventually, browser, login, screenshot,
  ADMIN_EMAIL, ADMIN_PASSWORD,
} from '../harness.mjs';

let stack;
let dpo;
let agent;
const browsers = [];

const PHONE = '46701234567';
const SECRETS = ['Greta Lindqvist', 'greta@example.org', PHONE, 'Elm Street 7', 'Allergic To Lilies'];

before(async () => {
  stack = await startStack();
  dpo = await createUser(stack, 'paula@tenant.test', 'Paula', 'dpo');
  agent = await createUser(stack, 'ivan@tenant.test', 'Ivan');
  await customerWrites(stack, { identity: PHONE, text: 'Hello, please send it to Elm Street 7' });
  await customerWrites(stack, { identity: '46709876543', text: 'Another customer entirely' });
  // The customer's name and e-mail, as an integrator's CRM sync would set them.
  const contacts = await eventually(async () => {
    const r = await tokenApi(stack, 'GET', '/api/v1/contacts');
    return r.body.length === 2 && r.body;
  }, 'both contacts');
  const greta = contacts.find((c) => JSON.stringify(c).includes(PHONE));
  const patched = await tokenApi(stack, 'PATCH', `/api/v1/privacy/contacts/${greta.id}`,
    { display_name: 'Greta Lindqvist', email: 'greta@example.org' });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
  // An attribute set by an admin (the token here): personal data like the rest.
  const attributes = await tokenApi(stack, 'PUT', `/api/v1/contacts/${greta.id}/attributes`,
    { attributes: { crm_note: 'Allergic To Lilies', tier: 'gold' } });
  assert.equal(attributes.status, 200, JSON.stringify(attributes.body));
});

after(async () => {
  for (const b of browsers) await b.close();
  await stack?.stop();
});

test('a DPO finds, exports and anonymizes a customer; the data is gone from page and API', async () => {
  const b = await browser('paula');
  browsers.push(b);
  const { page } = b;
  await login(page, stack, dpo.email, dpo.password);
  assert.equal(new URL(page.url()).pathname, '/dpo', 'a DPO lands on the data protection page');
  await page.locator('#chain[data-state="ok"]').waitFor();
  assert.match(await page.locator('#chain-text').textContent(), /Audit chain verified: \d+ entries intact/);

  // Search by a formatted phone number: one hit, opened with everything grouped.
  await page.fill('#q', '+46 70 123 45 67');
  await page.click('#search-form button[type=submit]');
  await page.locator('#subject:not(.hidden)').waitFor();
  assert.equal(await page.locator('#results tr').count(), 1);
  const id = await page.locator('#results tr').getAttribute('data-contact');
  assert.equal(await page.locator('#contact-rows td[data-field="e-mail"]').textContent(), 'greta@example.org');
  assert.match(await page.locator('#contact-rows td[data-field="attributes"]').textContent(), /crm_note = Allergic To Lilies/);
  assert.equal(await page.locator('#conversation-count').textContent(), '1');
  assert.equal(await page.locator('#message-count').textContent(), '1');
  assert.equal(await page.locator('#message-rows td.content').textContent(), 'Hello, please send it to Elm Street 7');
  const auditRows = await page.locator('#audit-rows tr').count();
  assert.ok(auditRows >= 4, `audit entries about the customer: ${auditRows}`);
  assert.ok(await page.locator('#audit-rows td', { hasText: 'channel:wa' }).count() > 0, 'the inbound write is audited');

  // The same customer by e-mail (any case) and by part of the name; the other customer is not.
  for (const q of ['GRETA@example.org', 'lindq', 'allergic to lilies']) {
    await page.fill('#q', q);
    await page.click('#search-form button[type=submit]');
    await page.locator('#search-note', { hasText: `found for “${q}”` }).waitFor();
    assert.deepEqual(await page.locator('#results tr').evaluateAll((rows) => rows.map((r) => r.dataset.contact)), [id], q);
  }
  await screenshot(page, 'dpo-found');

  // The export is a JSON download of everything, and it is audited as the DPO's.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  assert.equal(download.suggestedFilename(), `subject-${id}.json`);
  const exported = JSON.parse(await readFile(await download.path(), 'utf8'));
  assert.equal(exported.contact.id, id);
  assert.equal(exported.messages[0].content.text, 'Hello, please send it to Elm Street 7');
  for (const s of SECRETS) assert.ok(JSON.stringify(exported).includes(s), `export holds ${s}`);

  // Anonymize: armed only by typing the exact id.
  assert.equal(await page.locator('#anonymize').isDisabled(), true);
  await page.fill('#confirm', 'yes, do it');
  assert.equal(await page.locator('#anonymize').isDisabled(), true);
  await page.fill('#confirm', id);
  assert.equal(await page.locator('#anonymize').isDisabled(), false);
  await page.click('#anonymize');
  await page.locator('#subject-title', { hasText: 'anonymized' }).waitFor();
  await page.locator('#search-note', { hasText: 'No customer found' }).waitFor();
  await page.locator('#chain[data-state="ok"]').waitFor();
  assert.equal(await page.locator('#danger').isHidden(), true, 'nothing left to anonymize');
  assert.equal(await page.locator('#message-count').textContent(), '1', 'the message stays, its content does not');
  const shown = await page.locator('main').innerText();
  for (const s of SECRETS) assert.ok(!shown.includes(s), `the page still shows ${s}`);
  await screenshot(page, 'dpo-anonymized');

  // Gone from the API too: search, the subject, the contact list, and the export.
  const api = await page.evaluate(async ({ id, phone }) => {
    const get = async (p) => { const r = await fetch(p); return { status: r.status, text: await r.text() }; };
    return {
      byPhone: await get(`/api/v1/privacy/subjects?q=${phone}`),
      byMail: await get('/api/v1/privacy/subjects?q=greta%40example.org'),
      subject: await get(`/api/v1/privacy/subjects/${id}`),
      contacts: await get('/api/v1/contacts'),
    };
  }, { id, phone: PHONE });
  assert.equal(api.byPhone.text, '[]');
  assert.equal(api.byMail.text, '[]');
  for (const [what, r] of Object.entries(api)) {
    assert.equal(r.status, 200, what);
    for (const s of SECRETS) assert.ok(!r.text.includes(s), `${what} still holds ${s}`);
  }
  assert.ok(api.contacts.text.includes('Another customer') || api.contacts.text.includes('46709876543'), 'the other customer stays');
  // Who did it: the signed-in DPO, in the audit entries about the customer.
  const audit = JSON.parse(api.subject.text).audit;
  assert.ok(audit.some((e) => e.action === 'export' && e.actor === dpo.userId));
  assert.ok(audit.some((e) => e.action === 'anonymize' && e.actor === dpo.userId));
  assert.deepEqual(b.errors, []);
});

test('agents and admins get 403 on the data protection page and API', async () => {
  for (const [who, email, password] of [['agent', agent.email, agent.password], ['admin', ADMIN_EMAIL, ADMIN_PASSWORD]]) {
    const b = await browser(who);
    browsers.push(b);
    const { page } = b;
    await login(page, stack, email, password);
    const resp = await page.goto(`${stack.url}/dpo`);
    assert.equal(resp.status(), 403, `${who} on /dpo`);
    assert.match(await page.locator('#forbidden').textContent(), /may not open this page/);
    const statuses = await page.evaluate(async () => {
      const me = await (await fetch('/api/v1/me')).json();
      return {
        search: (await fetch('/api/v1/privacy/subjects?q=4670')).status,
        verify: (await fetch('/api/v1/privacy/audit/verify', { headers: { 'x-contact-user': 'anyone' } })).status,
        anonymize: (await fetch('/api/v1/privacy/subjects/x/anonymize', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrf_token },
          body: '{"confirm":"x"}',
        })).status,
      };
    });
    assert.deepEqual(statuses, { search: 403, verify: 403, anonymize: 403 }, who);
    assert.deepEqual(b.errors, []);
  }
});
