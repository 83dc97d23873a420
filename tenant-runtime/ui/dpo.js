// The data protection officer's page: find every piece of personal data tied to one customer
// (contacts, conversations, messages, internal notes, audit entries), download it as JSON for a subject access
// request, anonymize it irreversibly after typing the customer's id, and watch the audit chain.
// Everything shown comes from /api/v1/privacy and is rendered with text nodes only.
import { api, loadMe, el, fill, time, toast, logout } from '/ui/common.js';

const $ = (id) => document.getElementById(id);
let current = null; // id of the open customer
let lastQuery = '';

/** One line describing a message's content (its kind is shown next to it). */
function contentText(c) {
  switch (c.type) {
    case 'text': return c.text;
    case 'media': return [c.url, c.caption].filter(Boolean).join('\n');
    case 'location': return [c.title, c.label, `${c.latitude}, ${c.longitude}`].filter(Boolean).join('\n');
    case 'choice_response': return `choice ${c.postback_data} (message ${c.message_id})`;
    case 'template': return `${c.template_id} (${c.language_code}) ${JSON.stringify(c.parameters || {})}`;
    default: return JSON.stringify(c);
  }
}

const identities = (ids) => ids.map((i) => el('span', { class: 'chip' }, `${i.channel}: ${i.identity}`));

async function verifyChain() {
  const box = $('chain');
  try {
    const r = await api('GET', '/api/v1/privacy/audit/verify');
    const from = r.anchor_seq ? ` (from the purge anchor after entry ${r.anchor_seq})` : '';
    if (r.broken) {
      box.dataset.state = 'broken';
      $('chain-text').textContent = `Audit chain BROKEN at entry ${r.broken.seq}: ${r.broken.reason}${from}`;
    } else {
      box.dataset.state = 'ok';
      // Entries committed after the chainer's last pass are not links yet; they are not tampering.
      const pending = r.pending ? `; ${r.pending} newer entries waiting to be chained` : '';
      $('chain-text').textContent = `Audit chain verified: ${r.checked} entries intact${from}${pending}`;
    }
  } catch (e) {
    box.dataset.state = 'unknown';
    $('chain-text').textContent = `Audit chain could not be checked: ${e.message}`;
  }
}

/** Searches; `keep` leaves the open customer shown even when the search no longer finds them. */
async function search(q, keep = false) {
  lastQuery = q;
  const found = await api('GET', `/api/v1/privacy/subjects?q=${encodeURIComponent(q)}`);
  $('search-note').textContent = found.length
    ? `${found.length} customer${found.length === 1 ? '' : 's'} found for “${q}”`
    : `No customer found for “${q}”`;
  $('results-table').classList.toggle('hidden', !found.length);
  fill($('results'), found.map((c) => el('tr', { 'data-contact': c.id, class: c.anonymized_at ? 'anonymized' : '' },
    el('td', {}, c.display_name || el('span', { class: 'muted' }, '–')),
    el('td', {}, c.email || ''),
    el('td', {}, c.phone || ''),
    el('td', {}, identities(c.identities)),
    el('td', {}, time(c.created_at)),
    el('td', {}, el('button', { class: 'open', onclick: () => openSubject(c.id) }, 'Show all data')))));
  if (found.length === 1) await openSubject(found[0].id);
  else if (!keep && !found.some((c) => c.id === current)) closeSubject();
}

function closeSubject() {
  current = null;
  $('subject').classList.add('hidden');
}

async function openSubject(id) {
  const d = await api('GET', `/api/v1/privacy/subjects/${encodeURIComponent(id)}`);
  current = id;
  const c = d.contact;
  $('subject-title').textContent = c.anonymized_at
    ? `Customer ${c.id} (anonymized ${time(c.anonymized_at)})`
    : `Customer ${c.display_name || c.id}`;
  $('export').href = `/api/v1/privacy/subjects/${encodeURIComponent(id)}/export`;
  const row = (k, v) => el('tr', {}, el('th', {}, k), el('td', { 'data-field': k }, v));
  fill($('contact-rows'),
    row('id', c.id),
    row('name', c.display_name || ''),
    row('e-mail', c.email || ''),
    row('phone', c.phone || ''),
    row('identities', identities(c.identities)),
    row('attributes', Object.entries(c.attributes || {}).map(([k, v]) => el('span', { class: 'chip' }, `${k} = ${v}`))),
    row('first seen', time(c.created_at)),
    row('anonymized', c.anonymized_at ? time(c.anonymized_at) : 'no'));
  $('conversation-count').textContent = String(d.conversations.length);
  fill($('conversation-rows'), d.conversations.map((v) => el('tr', { 'data-conversation': v.id },
    el('td', {}, v.channel), el('td', {}, v.identity), el('td', {}, v.status),
    el('td', {}, time(v.created_at)), el('td', {}, v.closed_at ? time(v.closed_at) : ''))));
  $('message-count').textContent = String(d.messages.length);
  fill($('message-rows'), d.messages.map((m) => el('tr', { 'data-message': m.id },
    el('td', {}, time(m.created_at)), el('td', {}, m.direction), el('td', {}, m.content.type),
    el('td', { class: 'content' }, contentText(m.content)))));
  $('note-count').textContent = String(d.notes.length);
  fill($('note-rows'), d.notes.map((n) => el('tr', { 'data-note': n.id },
    el('td', {}, time(n.created_at)), el('td', {}, n.author_name || n.author_user_id || ''),
    el('td', { class: 'content' }, n.text))));
  $('audit-count').textContent = String(d.audit.length);
  fill($('audit-rows'), d.audit.map((a) => el('tr', { 'data-seq': String(a.seq) },
    el('td', {}, String(a.seq)), el('td', {}, time(new Date(a.at).toISOString())), el('td', {}, a.actor),
    el('td', {}, a.action), el('td', {}, `${a.entity} ${a.entity_id}`), el('td', {}, a.attribute),
    el('td', { class: 'content' }, a.new_value ?? (a.redacted_at ? el('span', { class: 'muted' }, 'erased') : '')))));
  $('confirm-id').textContent = c.id;
  $('confirm').value = '';
  $('anonymize').disabled = true;
  $('anonymize-result').textContent = '';
  $('danger').classList.toggle('hidden', Boolean(c.anonymized_at));
  $('subject').classList.remove('hidden');
}

$('search-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const q = $('q').value.trim();
  if (!q) return;
  try { await search(q); } catch (e) { toast(e.message); }
});

// The button only arms when the id is typed exactly; the server checks the same.
$('confirm').addEventListener('input', () => {
  $('anonymize').disabled = $('confirm').value.trim() !== current;
});

$('anonymize-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const id = current;
  const typed = $('confirm').value.trim();
  if (!id || typed !== id) return;
  $('anonymize').disabled = true;
  try {
    const r = await api('POST', `/api/v1/privacy/subjects/${encodeURIComponent(id)}/anonymize`, { confirm: typed });
    toast(`Anonymized: ${r.messages} messages, ${r.notes} notes, ${r.conversations} conversations, ${r.identities} identities, ${r.audit_entries_redacted} audit values erased`);
    await openSubject(id);
    $('anonymize-result').textContent = '';
    // The same search again shows the customer can no longer be found by what identified them;
    // the anonymized record stays on screen as proof of what is left.
    if (lastQuery) await search(lastQuery, true);
    await verifyChain();
  } catch (e) {
    $('anonymize-result').textContent = e.message;
    $('anonymize').disabled = false;
  }
});

$('verify').addEventListener('click', verifyChain);
$('logout').addEventListener('click', logout);

(async () => {
  const me = await loadMe();
  $('me-name').textContent = `${me.display_name} · ${me.role}`;
  await verifyChain();
  document.body.dataset.ready = '1';
})().catch((e) => toast(e.message));
