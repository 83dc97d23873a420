// The agent Workspace: dashboard, queue (live), own conversations with thread and composer.
import { api, loadMe, el, fill, duration, time, safeUrl, toast, logout, tabs, session } from '/ui/common.js';

const $ = (id) => document.getElementById(id);
const state = {
  tab: 'dashboard',
  queue: [],
  mine: [],
  current: null,     // conversation id shown
  view: null,        // its ConversationView
  unread: new Set(),
  skew: 0,           // server clock minus local clock, ms (for wait timers)
};

// --- rendering of one message's content: text only, never HTML ------------------------------
function content(c) {
  switch (c.type) {
    case 'text':
      return [el('span', { class: 'text' }, c.text)];
    case 'media': {
      const url = safeUrl(c.url);
      const parts = [];
      if (url && /\.(png|jpe?g|gif|webp)(\?|$)/i.test(url)) parts.push(el('img', { src: url, alt: 'image from customer', referrerpolicy: 'no-referrer' }));
      parts.push(url ? el('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, 'Attachment') : el('span', {}, 'Attachment (invalid URL)'));
      if (c.caption) parts.push(el('div', {}, c.caption));
      return parts;
    }
    case 'location': {
      const href = `https://www.openstreetmap.org/?mlat=${Number(c.latitude)}&mlon=${Number(c.longitude)}`;
      return [el('span', {}, `📍 ${c.title || 'Location'} `), el('a', { href, target: '_blank', rel: 'noopener noreferrer' }, `${c.latitude}, ${c.longitude}`), c.label ? el('div', {}, c.label) : null];
    }
    case 'choice_response':
      return [el('span', {}, `Chose: ${c.postback_data}`)];
    case 'template':
      return [el('span', {}, `Template ${c.template_id} (${c.language_code})`), el('div', { class: 'muted' }, Object.entries(c.parameters || {}).map(([k, v]) => `${k}=${v}`).join(', '))];
    default:
      return [el('span', { class: 'muted' }, `Unsupported content: ${c.kind || c.type}`), el('pre', {}, JSON.stringify(c.raw ?? c, null, 1))];
  }
}

const TICKS = {
  PENDING: ['🕓', 'waiting to be sent'], QUEUED: ['✓', 'accepted by the Conversation API'],
  QUEUED_ON_CHANNEL: ['✓', 'handed to the channel'], DELIVERED: ['✓✓', 'delivered'],
  READ: ['✓✓', 'read'], FAILED: ['⚠ failed', 'failed'], RECEIVED: ['', ''],
};

function messageNode(m, authors) {
  const [tick, title] = TICKS[m.status] || ['', m.status];
  const meta = el('div', { class: 'meta' }, time(m.created_at));
  if (m.direction === 'outbound') {
    if (m.author_user_id) meta.append(` · ${authors[m.author_user_id] || 'agent'}`);
    meta.append(' ', el('span', {
      class: `tick ${m.status === 'READ' ? 'read' : ''} ${m.status === 'FAILED' ? 'failed' : ''}`,
      title, 'data-status': m.status,
    }, tick));
    if (m.status === 'FAILED' && m.status_reason) meta.append(el('div', { class: 'error' }, m.status_reason));
  }
  return el('div', { class: `msg ${m.direction}`, 'data-id': m.id }, content(m.content), meta);
}

function noteNode(n) {
  return el('div', { class: 'msg note', 'data-note': n.id },
    el('span', {}, n.text),
    el('div', { class: 'meta' }, `Internal note · ${n.author_name || 'someone'} · ${time(n.created_at)}`));
}

// --- dashboard -----------------------------------------------------------------------------
function card(label, value) {
  return el('div', { class: 'card' }, el('div', { class: 'value' }, value), el('div', { class: 'label' }, label));
}

async function loadDashboard() {
  const d = await api('GET', '/api/v1/me/dashboard');
  fill($('my-figures'),
    card('Assigned now', d.assigned_now),
    card('Closed today', d.closed_today),
    card('Avg. first response', duration(d.avg_first_response_secs)),
    card('Avg. handling time', duration(d.avg_handling_secs)));
  fill($('team-figures'),
    card('Waiting now', d.waiting_now),
    card('Longest wait', d.longest_wait_secs === null ? '–' : duration(d.longest_wait_secs)),
    card('Agents available', d.agents_available),
    card('Agents online', d.agents_online));
}

function renderSkills() {
  const skills = session.me.skills;
  if (!skills.length) return fill($('skills'), el('p', { class: 'muted' }, 'No skills yet; an admin grants them.'));
  fill($('skills'), skills.map((s) => el('label', { class: 'switch', style: 'margin-right:16px' },
    el('input', {
      type: 'checkbox', checked: s.active, 'data-skill': s.name,
      onchange: async (ev) => {
        try {
          await api('PUT', `/api/v1/me/skills/${encodeURIComponent(s.id)}`, { enabled: ev.target.checked });
          s.active = ev.target.checked;
          renderQueue();
        } catch (e) { ev.target.checked = !ev.target.checked; toast(e.message); }
      },
    }), s.name, s.level ? el('span', { class: 'muted level', title: 'set by an admin (1 basic … 5 expert)' }, ` · level ${s.level}`) : null)));
}

// --- queue -----------------------------------------------------------------------------------
async function loadQueue() {
  state.queue = await api('GET', '/api/v1/queue');
  renderQueue();
}

function mySkills() {
  return new Set(session.me.skills.filter((s) => s.active).map((s) => s.name));
}

function waitedSecs(ts) {
  return (Date.now() + state.skew - new Date(ts).getTime()) / 1000;
}

function renderQueue() {
  $('queue-count').textContent = state.queue.length;
  $('queue-empty').classList.toggle('hidden', state.queue.length > 0);
  fill($('queue-rows'), state.queue.map((q) => el('tr', { 'data-conversation': q.id },
    el('td', {}, q.channel, el('div', { class: 'muted' }, q.channel_app)),
    el('td', {}, q.contact_name || q.identity),
    el('td', {}, q.category || '–', q.priority ? el('span', { class: 'chip' }, `priority ${q.priority}`) : null,
      q.waiting_for ? el('span', { class: 'chip waiting', title: 'transferred: only this agent may take it until the fallback passes' },
        q.waiting_for === session.me.user_id ? 'waiting for you' : `waiting for ${q.waiting_for_name || q.waiting_for}`) : null),
    el('td', {}, q.required_skills.length ? q.required_skills.map((s) => el('span', {
      class: `chip ${mySkills().has(s) ? '' : 'missing'}`,
      title: mySkills().has(s) ? 'you have this skill' : 'you do not have this skill (switched on)',
    }, s)) : el('span', { class: 'muted' }, 'none')),
    el('td', { class: 'wait', 'data-since': q.queued_since }, duration(waitedSecs(q.queued_since))),
    el('td', {}, el('button', { class: 'primary pick', onclick: () => pick(q.id) }, 'Pick')))));
}

async function pick(id) {
  try {
    await api('POST', `/api/v1/conversations/${encodeURIComponent(id)}/pick`);
    toast('Conversation picked');
    loadQueue();
    await loadMine();
    show('conversations');
    await openConversation(id);
  } catch (e) {
    toast(e.status === 409 ? 'Someone else picked it first.' : e.message);
    loadQueue();
  }
}

// --- own conversations --------------------------------------------------------------------
async function loadMine() {
  state.mine = await api('GET', '/api/v1/me/conversations');
  $('mine-count').textContent = state.mine.length;
  fill($('my-list'), state.mine.length ? state.mine.map((c) => el('div', {
    class: 'item', 'aria-current': String(c.id === state.current), 'data-conversation': c.id,
    onclick: () => openConversation(c.id),
  },
  state.unread.has(c.id) ? el('span', { class: 'badge unread' }, 'new') : null,
  el('div', {}, c.contact_name || c.identity),
  el('div', { class: 'muted' }, `${c.channel} · since ${time(c.assigned_at)}`))) : el('p', { class: 'muted', style: 'padding:12px' }, 'No open conversations.'));
}

async function openConversation(id) {
  if (state.current !== id) nodeCache = new Map();
  state.current = id;
  state.unread.delete(id);
  state.view = await api('GET', `/api/v1/workspace/conversations/${encodeURIComponent(id)}`);
  renderConversation();
  loadMine();
}

// Rendered thread items by key, reused while unchanged (a live update only builds new nodes).
let nodeCache = new Map();

function renderThread() {
  const v = state.view;
  const cached = (key, sig, build) => {
    const hit = nodeCache.get(key);
    if (hit && hit.sig === sig) return hit.node;
    const node = build();
    nodeCache.set(key, { sig, node });
    return node;
  };
  const items = [
    ...v.messages.map((m) => ({ at: m.created_at, node: cached(`m${m.id}`, `${m.status}|${m.status_reason}`, () => messageNode(m, v.authors)) })),
    ...v.notes.map((n) => ({ at: n.created_at, node: cached(`n${n.id}`, '', () => noteNode(n)) })),
  ].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  const thread = $('thread');
  const atBottom = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 40;
  fill(thread, items.map((i) => i.node));
  if (atBottom || !thread.dataset.rendered) thread.scrollTop = thread.scrollHeight;
  thread.dataset.rendered = '1';
}

function windowText(comp) {
  if (!comp.window_closes_at) return '';
  const left = (new Date(comp.window_closes_at).getTime() - Date.now()) / 1000;
  return left > 0 ? `WhatsApp window closes in ${duration(left)}` : 'WhatsApp 24-hour window closed: only templates can be sent';
}

function renderConversation() {
  const v = state.view;
  const c = v.conversation;
  const comp = v.composer;
  const limit = comp.text_limit || comp.sms_max_chars;
  const textarea = el('textarea', { id: 'composer-text', placeholder: comp.window_open ? 'Write a reply…' : 'Outside the window: send a template', disabled: !comp.window_open });
  const counter = el('span', { class: 'counter', id: 'counter' }, `0 / ${limit}`);
  const noteBox = el('input', { type: 'checkbox', id: 'as-note' });
  textarea.addEventListener('input', () => {
    const n = [...textarea.value].length;
    counter.textContent = `${n} / ${limit}`;
    counter.classList.toggle('over', n > limit && !noteBox.checked);
  });
  noteBox.addEventListener('change', () => {
    textarea.disabled = !comp.window_open && !noteBox.checked;
    textarea.placeholder = noteBox.checked ? 'Internal note (not sent to the customer)…' : 'Write a reply…';
  });
  const send = async () => {
    const text = textarea.value.trim();
    if (!text) return;
    try {
      if (noteBox.checked) {
        await api('POST', `/api/v1/conversations/${encodeURIComponent(c.id)}/notes`, { text });
      } else {
        if ([...text].length > limit) return toast(`Too long for ${c.channel}: at most ${limit} characters.`);
        await api('POST', `/api/v1/workspace/conversations/${encodeURIComponent(c.id)}/messages`, { content: { type: 'text', text } });
      }
      textarea.value = '';
      counter.textContent = `0 / ${limit}`;
      await refreshCurrent();
    } catch (e) { toast(e.message); }
  };
  textarea.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) send(); });

  const template = comp.templates ? el('details', { id: 'template', open: !comp.window_open },
    el('summary', {}, 'Send a template'),
    el('div', { class: 'form-row' },
      el('div', {}, el('label', {}, 'Template'), el('input', { id: 'tpl-id', placeholder: 'order_update' })),
      el('div', {}, el('label', {}, 'Language'), el('input', { id: 'tpl-lang', value: 'en_US', size: 6 })),
      el('div', {}, el('label', {}, 'Parameters (key=value, one per line)'), el('textarea', { id: 'tpl-params', rows: 2 })),
      el('button', { onclick: async () => {
        const parameters = {};
        for (const line of $('tpl-params').value.split('\n')) {
          const i = line.indexOf('=');
          if (i > 0) parameters[line.slice(0, i).trim()] = line.slice(i + 1).trim();
        }
        try {
          await api('POST', `/api/v1/workspace/conversations/${encodeURIComponent(c.id)}/messages`, {
            content: { type: 'template', template_id: $('tpl-id').value.trim(), language_code: $('tpl-lang').value.trim(), parameters },
          });
          await refreshCurrent();
        } catch (e) { toast(e.message); }
      } }, 'Send template'))) : null;

  const transferTo = el('select', { id: 'transfer-to' },
    el('option', { value: '' }, 'Back to the queue'),
    v.colleagues.map((u) => el('option', { value: u.id }, `${u.display_name}${u.online ? ' (online)' : ''}`)));

  fill($('conv'),
    el('header', {},
      el('span', { class: 'title' }, v.contact.display_name || c.identity, el('span', { class: 'muted' }, ` · ${c.channel} · ${v.category || 'no category'}`)),
      c.skill_requirements.length ? el('span', { class: 'muted' }, `${c.skill_requirements.length} skill(s) required`) : null,
      transferTo,
      el('button', { id: 'transfer', onclick: async () => {
        try {
          const path = `/api/v1/conversations/${encodeURIComponent(c.id)}/transfer`;
          const body = { to_user_id: transferTo.value || null };
          let r;
          try {
            r = await api('POST', path, body);
          } catch (e) {
            // The colleague lacks a required skill: the server names it; handing it over anyway
            // is the agent's explicit decision, recorded in the routing decision.
            if (e.code !== 'agent_lacks_skill' || !confirm(`${e.message}.\n\nTransfer anyway?`)) throw e;
            r = await api('POST', path, { ...body, force: true });
          }
          // 202: the colleague cannot take it now; it waits for them in the queue.
          const why = { away: 'is away', disconnected: 'is not connected', at_capacity: 'is full' };
          toast(r && r.waiting_for ? `${r.display_name} ${why[r.because] || r.because}: it waits for them${r.fallback_after_secs ? ` (anyone after ${r.fallback_after_secs} s)` : ''}` : 'Transferred');
          closeView();
        } catch (e) { toast(e.message); }
      } }, 'Transfer'),
      el('button', { class: 'danger', id: 'close', onclick: async () => {
        try {
          await api('POST', `/api/v1/conversations/${encodeURIComponent(c.id)}/close`);
          toast('Conversation closed');
          closeView();
        } catch (e) { toast(e.message); }
      } }, 'Close')),
    whyThisAgent(c.id, v.colleagues),
    contactAttributes(c.contact_id, v.contact_attributes),
    el('div', { class: 'thread', id: 'thread' }),
    el('div', { class: 'composer' },
      el('div', { class: `window ${comp.window_open ? '' : 'closed'}`, id: 'window' }, windowText(comp)),
      textarea,
      el('div', { class: 'row' },
        el('label', { class: 'switch' }, noteBox, 'Internal note'),
        el('span', { class: 'spacer' }),
        counter,
        el('button', { class: 'primary', id: 'send', onclick: send }, 'Send')),
      template));
  renderThread();
}

// The customer's attributes (`tier = gold`): category rules match on them when the customer's
// next conversation arrives. Edited as `key=value` lines; saving replaces the set.
function contactAttributes(contactId, attributes) {
  const lines = Object.entries(attributes || {}).map(([k, v]) => `${k}=${v}`).join('\n');
  const text = el('textarea', { id: 'attr-text', rows: 3, placeholder: 'tier=gold', 'aria-label': 'customer attributes, one key=value per line' }, lines);
  const summary = () => {
    const n = Object.keys(attributes || {}).length;
    return n ? `Customer attributes (${n})` : 'Customer attributes';
  };
  const head = el('summary', {}, summary());
  return el('details', { id: 'attributes', open: Object.keys(attributes || {}).length > 0 }, head,
    el('div', { id: 'attr-list' }, Object.entries(attributes || {}).map(([k, v]) => el('span', { class: 'chip', 'data-attribute': k }, `${k} = ${v}`))),
    text,
    el('button', { id: 'attr-save', onclick: async () => {
      const next = {};
      for (const line of text.value.split('\n')) {
        if (!line.trim()) continue;
        const i = line.indexOf('=');
        if (i <= 0) return toast(`Not key=value: ${line}`);
        next[line.slice(0, i).trim()] = line.slice(i + 1).trim();
      }
      try {
        const r = await api('PUT', `/api/v1/contacts/${encodeURIComponent(contactId)}/attributes`, { attributes: next });
        attributes = r.attributes;
        if (state.view) state.view.contact_attributes = r.attributes;
        fill($('attr-list'), Object.entries(r.attributes).map(([k, v]) => el('span', { class: 'chip', 'data-attribute': k }, `${k} = ${v}`)));
        head.textContent = summary();
        toast('Attributes saved');
      } catch (e) { toast(e.message); }
    } }, 'Save attributes'));
}

// Why the conversation went where it went: its routing decisions, loaded when opened.
const REASONS = {
  least_loaded: 'least loaded', idle_longest: 'same load, idle longest', lowest_id: 'tie broken by id',
  only_candidate: 'the only agent who could take it', sticky: 'served this customer last',
  pinned: 'transferred to this agent', manual_pick: 'picked from the queue',
  grace_expired: 'agent disconnected: back to the queue', agent_offline: 'agent went offline: back to the queue',
  transfer_to_category: 'moved to another category',
  skills_overridden: 'transferred to an agent without the required skills (the transferring agent overrode them)',
  waiting_for_agent: 'transferred: waits for the agent', pin_expired: 'the agent did not take it in time: open to everyone',
};
function whyThisAgent(id, colleagues) {
  const name = (u) => (colleagues.find((c) => c.id === u) || {}).display_name || (u === session.me.user_id ? 'you' : u || '—');
  const body = el('div', { id: 'why-body', class: 'muted' }, 'Loading…');
  const details = el('details', { id: 'why' }, el('summary', {}, 'Why this agent'), body);
  details.addEventListener('toggle', async () => {
    if (!details.open) return;
    try {
      const decisions = await api('GET', `/api/v1/conversations/${encodeURIComponent(id)}/routing`);
      fill(body, decisions.length ? decisions.map((d) => {
        const e = d.explanation || {};
        const runner = e.runner_up ? ` · runner-up ${name(e.runner_up.agent)} (${e.runner_up.load}/${e.runner_up.capacity})` : '';
        const load = e.winner ? ` (${e.winner.load}/${e.winner.capacity})` : '';
        const considered = Array.isArray(e.considered) ? ` · ${e.considered.filter((x) => x.ranked).length} eligible of ${e.considered.length}` : '';
        return el('div', { class: 'decision', 'data-reason': d.reason },
          `${time(d.created_at)} · ${d.kind} · ${name(d.user_id)}${load}: ${REASONS[d.reason] || d.reason}${runner}${considered}`);
      }) : [el('div', {}, 'No routing decision recorded.')]);
    } catch (e) { fill(body, [el('div', {}, e.message)]); }
  });
  return details;
}

function closeView() {
  state.current = null;
  state.view = null;
  fill($('conv'), el('div', { class: 'thread' }, el('p', { class: 'muted' }, 'Pick a conversation from the queue or the list.')));
  loadMine();
  loadDashboard();
}

async function refreshCurrent() {
  if (!state.current) return;
  try {
    state.view = await api('GET', `/api/v1/workspace/conversations/${encodeURIComponent(state.current)}`);
    renderThread();
  } catch (e) {
    if (e.status === 403 || e.status === 404) closeView();
  }
}

/** Reloads only the thread's messages (what message events change). */
async function refreshMessages() {
  const id = state.current;
  if (!id) return;
  try {
    const messages = await api('GET', `/api/v1/conversations/${encodeURIComponent(id)}/messages`);
    if (state.current !== id || !state.view) return;
    state.view.messages = messages;
    renderThread();
  } catch (e) {
    if (e.status === 403 || e.status === 404) closeView();
  }
}

// --- live events -----------------------------------------------------------------------------
function debounce(fn, ms) {
  let t;
  return () => { clearTimeout(t); t = setTimeout(fn, ms); };
}
const queueChanged = debounce(() => { loadQueue(); loadDashboard(); }, 50);
const mineChanged = debounce(() => loadMine(), 50);

function connectLive() {
  const es = new EventSource('/api/v1/live');
  const dot = $('live-state');
  es.addEventListener('ready', () => { dot.style.color = 'var(--ok)'; dot.title = 'Live'; });
  es.onerror = () => { dot.style.color = 'var(--bad)'; dot.title = 'Reconnecting…'; };
  const onEvent = (ev) => {
    const e = JSON.parse(ev.data);
    if (['conversation_opened', 'conversation_queued', 'conversation_assigned', 'conversation_closed'].includes(e.kind)) {
      queueChanged();
      if (e.assigned_user_id === session.me.user_id || state.mine.some((c) => c.id === e.conversation_id)) mineChanged();
      if (e.conversation_id === state.current && e.assigned_user_id !== session.me.user_id) closeView();
      return;
    }
    if (e.conversation_id === state.current) {
      if (e.kind === 'note_added') refreshCurrent(); else refreshMessages();
    } else if (e.kind === 'message_received') {
      state.unread.add(e.conversation_id);
      mineChanged();
    }
  };
  for (const k of ['conversation_opened', 'conversation_queued', 'conversation_assigned', 'conversation_closed',
    'message_received', 'message_sent', 'message_status', 'note_added']) es.addEventListener(k, onEvent);
  es.addEventListener('resync', () => { loadQueue(); loadMine(); refreshCurrent(); });
}

// --- start -----------------------------------------------------------------------------------
let show;
async function main() {
  const me = await loadMe();
  $('me-name').textContent = me.display_name;
  $('admin-link').classList.toggle('hidden', me.role !== 'admin');
  $('status').value = me.status || 'available';
  $('status').addEventListener('change', async (ev) => {
    try { await api('PUT', '/api/v1/me/status', { status: ev.target.value }); } catch (e) { toast(e.message); }
  });
  $('auto-allocate').checked = me.auto_allocate;
  $('auto-allocate').addEventListener('change', async (ev) => {
    try { await api('PUT', '/api/v1/me/auto-allocate', { enabled: ev.target.checked }); } catch (e) { ev.target.checked = !ev.target.checked; toast(e.message); }
  });
  $('logout').addEventListener('click', logout);
  if (me.maintenance) {
    const start = new Date(me.maintenance.start);
    const hours = (start.getTime() - Date.now()) / 3.6e6;
    if (hours < 24) {
      const b = $('maintenance');
      b.textContent = hours > 0
        ? `Planned maintenance from ${start.toLocaleString()} to ${new Date(me.maintenance.end).toLocaleString()}: the Workspace may be briefly unavailable.`
        : `Maintenance in progress until ${new Date(me.maintenance.end).toLocaleString()}.`;
      b.classList.remove('hidden');
    }
  }
  show = tabs($('tabs'), (name) => { state.tab = name; });
  renderSkills();
  connectLive();
  await Promise.all([loadDashboard(), loadQueue(), loadMine()]);
  setInterval(() => {
    for (const td of document.querySelectorAll('td.wait')) td.textContent = duration(waitedSecs(td.dataset.since));
    if (state.view) { const w = $('window'); if (w) w.textContent = windowText(state.view.composer); }
  }, 1000);
  document.body.dataset.ready = '1';
}

main().catch((e) => toast(e.message));
