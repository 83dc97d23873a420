// The Configurator: channels (read-only, with health), users and invites, skills, categories,
// routing settings.
import { api, loadMe, el, fill, time, toast, logout, tabs } from '/ui/common.js';

const $ = (id) => document.getElementById(id);
let skills = [];
let editing = null; // category id being edited
let me = null;

async function loadChannels() {
  const rows = await api('GET', '/api/v1/admin/channels');
  fill($('channel-rows'), rows.map((c) => el('tr', {},
    el('td', {}, c.name, el('div', { class: 'muted' }, `managed by ${c.managed_by}`)),
    el('td', {}, c.channel, el('div', { class: 'muted' }, c.region)),
    el('td', {}, c.app_id, el('div', { class: 'muted' }, c.project_id)),
    el('td', {}, el('code', {}, c.webhook_path)),
    el('td', {}, c.health.last_inbound_at ? time(c.health.last_inbound_at) : 'never'),
    el('td', {}, c.health.last_failure_at
      ? [time(c.health.last_failure_at), el('div', { class: 'error' }, c.health.last_failure_reason || '')]
      : el('span', { class: 'muted' }, 'none')))));
}

const skillName = (id) => (skills.find((s) => s.id === id) || {}).name || id;

async function loadSkills() {
  skills = await api('GET', '/api/v1/skills');
  fill($('skill-rows'), skills.map((s) => {
    const input = el('input', { value: s.name, 'aria-label': `name of ${s.name}` });
    return el('tr', { 'data-skill': s.name },
      el('td', {}, input),
      el('td', {},
        el('button', { onclick: async () => {
          try { await api('PATCH', `/api/v1/admin/skills/${s.id}`, { name: input.value }); toast('Renamed'); await refresh(); } catch (e) { toast(e.message); }
        } }, 'Rename'), ' ',
        el('button', { class: 'danger', onclick: async () => {
          if (!confirm(`Delete skill ${s.name}? Users, categories and conversations lose it.`)) return;
          try { await api('DELETE', `/api/v1/admin/skills/${s.id}`); await refresh(); } catch (e) { toast(e.message); }
        } }, 'Delete')));
  }));
  // Per skill: required or not, a minimum level (relaxed after a wait) and whether it is
  // optional (dropped after a wait).
  fill($('cat-skills'), skills.map((s) => el('span', { class: 'cat-skill', 'data-skill': s.name, style: 'margin-right:16px; white-space:nowrap' },
    el('label', { class: 'switch' }, el('input', { type: 'checkbox', value: s.id, name: 'cat-skill' }), s.name), ' ',
    levelSelect('cat-level', s.id, null, `minimum level of ${s.name}`), ' ',
    el('label', { class: 'switch' }, el('input', { type: 'checkbox', value: s.id, name: 'cat-optional', 'aria-label': `${s.name} optional` }), 'optional'))));
}

// Levels run 1 (basic) to 5 (expert); '' is no level (any level for a requirement).
function levelSelect(name, skillId, value, label, onchange) {
  return el('select', { name, 'data-skill-id': skillId, 'aria-label': label, onchange },
    el('option', { value: '', selected: value == null }, name === 'cat-level' ? 'any level' : 'no level'),
    [1, 2, 3, 4, 5].map((n) => el('option', { value: String(n), selected: value === n }, `level ${n}`)));
}

const levelOf = (select) => (select.value === '' ? null : Number(select.value));

// A requirement as the category table shows it: `german ≥ 4 (optional)`.
function requirementText(c, id) {
  const o = (c.skill_options || {})[id] || {};
  return `${skillName(id)}${o.min_level ? ` ≥ ${o.min_level}` : ''}${o.optional ? ' (optional)' : ''}`;
}

async function loadUsers() {
  const users = await api('GET', '/api/v1/users');
  fill($('user-rows'), users.map((u) => {
    const held = new Set(u.skills.map((s) => s.skill_id));
    const levels = Object.fromEntries(u.skills.filter((s) => s.level != null).map((s) => [s.skill_id, s.level]));
    // One PUT carries the whole set: skills held and their levels.
    const save = async () => {
      const kept = Object.fromEntries(Object.entries(levels).filter(([id]) => held.has(id)));
      try { await api('PUT', `/api/v1/admin/users/${u.id}/skills`, { skill_ids: [...held], levels: kept }); toast(`Skills of ${u.display_name} saved`); } catch (e) { toast(e.message); }
    };
    const boxes = skills.map((s) => el('span', { class: 'user-skill', 'data-skill': s.name, style: 'margin-right:12px; white-space:nowrap' },
      el('label', { class: 'switch' },
        el('input', { type: 'checkbox', checked: held.has(s.id), onchange: async (ev) => {
          if (ev.target.checked) held.add(s.id); else held.delete(s.id);
          await save();
        } }), s.name), ' ',
      levelSelect('user-level', s.id, levels[s.id] ?? null, `level of ${s.name} for ${u.email}`, async (ev) => {
        const level = levelOf(ev.target);
        if (level == null) delete levels[s.id]; else { levels[s.id] = level; held.add(s.id); ev.target.closest('.user-skill').querySelector('input').checked = true; }
        await save();
      })));
    const self = u.id === me.user_id;
    const role = el('select', { class: 'role', 'aria-label': `role of ${u.email}`, disabled: self, onchange: async (ev) => {
      try { await api('PUT', `/api/v1/admin/users/${u.id}/role`, { role: ev.target.value }); toast(`${u.display_name} is ${ev.target.value} now`); await loadUsers(); } catch (e) { toast(e.message); }
    } }, ['agent', 'admin', 'dpo'].map((r) => el('option', { value: r, selected: r === u.role }, r)));
    return el('tr', { 'data-user': u.email }, el('td', {}, u.display_name), el('td', {}, u.email), el('td', {}, role),
      el('td', {}, u.role === 'agent' ? boxes : el('span', { class: 'muted' }, '–')),
      el('td', {}, self ? null : el('button', { class: 'danger deactivate', onclick: async () => {
        if (!confirm(`Deactivate ${u.display_name}? They are signed out everywhere; a new invite brings them back.`)) return;
        try { await api('POST', `/api/v1/admin/users/${u.id}/deactivate`); toast(`${u.display_name} deactivated`); } catch (e) { toast(e.message); }
      } }, 'Deactivate')));
  }));
  const invites = await api('GET', '/api/v1/admin/invites');
  fill($('invite-rows'), invites.map((i) => el('tr', {},
    el('td', {}, i.email), el('td', {}, i.role), el('td', {}, time(i.expires_at)),
    el('td', {}, i.accepted_at ? `accepted ${time(i.accepted_at)}` : new Date(i.expires_at) < new Date() ? 'expired' : 'pending'))));
}

async function loadCategories() {
  const cats = await api('GET', '/api/v1/admin/categories');
  fill($('cat-rows'), cats.map((c) => el('tr', { 'data-category': c.name },
    el('td', {}, c.name, el('div', { class: 'muted' }, c.description)),
    el('td', {}, String(c.priority)),
    el('td', {}, c.rules.length ? c.rules.map((r) => el('div', {},
      r.keywords.length ? `keywords: ${r.keywords.join(', ')} ` : '', r.channels.length ? `channels: ${r.channels.join(', ')} ` : '',
      Object.keys(r.contact_attributes || {}).length ? `contact: ${pairs(r.contact_attributes)}` : '')) : el('span', { class: 'muted' }, c.default ? 'default' : 'none')),
    el('td', {}, c.skill_ids.map((id) => el('span', { class: 'chip' }, requirementText(c, id)))),
    el('td', {},
      el('button', { onclick: () => editCategory(c) }, 'Edit'), ' ',
      c.default ? null : el('button', { class: 'danger', onclick: async () => {
        if (!confirm(`Delete category ${c.name}? Its conversations move to General.`)) return;
        try { await api('DELETE', `/api/v1/admin/categories/${c.id}`); await loadCategories(); } catch (e) { toast(e.message); }
      } }, 'Delete')))));
}

function editCategory(c) {
  editing = c ? c.id : null;
  $('cat-title').textContent = c ? `Edit ${c.name}` : 'New category';
  $('cat-name').value = c ? c.name : '';
  $('cat-desc').value = c ? c.description : '';
  $('cat-priority').value = c ? c.priority : 0;
  const rule = (c && c.rules[0]) || { keywords: [], channels: [], contact_attributes: {} };
  $('cat-keywords').value = rule.keywords.join(', ');
  $('cat-channels').value = rule.channels.join(', ');
  $('cat-attributes').value = pairs(rule.contact_attributes || {});
  for (const b of document.querySelectorAll('input[name="cat-skill"]')) b.checked = !!c && c.skill_ids.includes(b.value);
  const options = (c && c.skill_options) || {};
  for (const b of document.querySelectorAll('input[name="cat-optional"]')) b.checked = !!(options[b.value] || {}).optional;
  for (const s of document.querySelectorAll('select[name="cat-level"]')) s.value = String((options[s.dataset.skillId] || {}).min_level || '');
}

// Minimum levels and optional flags of the checked skills, as the API takes them.
function skillOptions(ids) {
  const out = {};
  for (const id of ids) {
    const level = levelOf(document.querySelector(`select[name="cat-level"][data-skill-id="${id}"]`));
    const optional = document.querySelector(`input[name="cat-optional"][value="${id}"]`).checked;
    if (level != null || optional) out[id] = { min_level: level, optional };
  }
  return out;
}

const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
// Contact attributes of a rule as `tier=gold, lang=de` and back.
const pairs = (o) => Object.entries(o).map(([k, v]) => `${k}=${v}`).join(', ');
const unpairs = (s) => Object.fromEntries(list(s).map((p) => { const i = p.indexOf('='); return i > 0 ? [p.slice(0, i).trim(), p.slice(i + 1).trim()] : [p, '']; }));

async function loadRouting() {
  const r = await api('GET', '/api/v1/admin/routing');
  $('rt-auto').checked = r.auto_allocate_by_default;
  $('rt-max').value = r.max_conversations_per_agent;
  $('rt-return').value = r.return_to_queue_after_disconnect_secs;
}

async function refresh() {
  await loadSkills();
  await Promise.all([loadChannels(), loadUsers(), loadCategories(), loadRouting()]);
}

async function main() {
  me = await loadMe();
  $('me-name').textContent = me.display_name;
  $('logout').addEventListener('click', logout);
  tabs($('tabs'));
  $('invite-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const inv = await api('POST', '/api/v1/admin/invites', {
        email: $('inv-email').value, display_name: $('inv-name').value || null, role: $('inv-role').value,
      });
      fill($('invite-result'),
        el('p', {}, `Invite for ${inv.email} (${inv.role}), valid until ${time(inv.expires_at)}. ${inv.mailed ? 'It was e-mailed.' : 'Send this one-time link to them:'}`),
        el('code', { class: 'link', id: 'invite-link' }, inv.url));
      ev.target.reset();
      await loadUsers();
    } catch (e) { toast(e.message); }
  });
  $('skill-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try { await api('POST', '/api/v1/skills', { name: $('skill-name').value.trim() }); ev.target.reset(); toast('Skill added'); await refresh(); } catch (e) { toast(e.message); }
  });
  $('cat-reset').addEventListener('click', () => editCategory(null));
  $('cat-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const keywords = list($('cat-keywords').value);
    const channels = list($('cat-channels').value).map((c) => c.toUpperCase());
    const attributes = unpairs($('cat-attributes').value);
    const body = {
      name: $('cat-name').value.trim(),
      description: $('cat-desc').value,
      priority: Number($('cat-priority').value || 0),
      rules: keywords.length || channels.length || Object.keys(attributes).length
        ? [{ keywords, channels, channel_apps: [], contact_attributes: attributes }] : [],
      skill_ids: [...document.querySelectorAll('input[name="cat-skill"]:checked')].map((b) => b.value),
    };
    body.skill_options = skillOptions(body.skill_ids);
    try {
      if (editing) await api('PUT', `/api/v1/admin/categories/${editing}`, body);
      else await api('POST', '/api/v1/admin/categories', body);
      toast('Category saved');
      editCategory(null);
      await loadCategories();
    } catch (e) { toast(e.message); }
  });
  $('routing-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('PUT', '/api/v1/admin/routing', {
        auto_allocate_by_default: $('rt-auto').checked,
        max_conversations_per_agent: Number($('rt-max').value),
        return_to_queue_after_disconnect_secs: Number($('rt-return').value),
      });
      toast('Routing settings saved');
    } catch (e) { toast(e.message); }
  });
  await refresh();
  document.body.dataset.ready = '1';
}

main().catch((e) => toast(e.message));
