import { api } from '/ui/common.js';

// The token travels in the URL fragment, which browsers never send to servers or in Referer.
const token = decodeURIComponent(location.hash.slice(1));
const form = document.getElementById('accept');
const who = document.getElementById('who');
const error = document.getElementById('error');

async function init() {
  try {
    const invite = await api('POST', '/auth/invite/lookup', { token });
    who.textContent = `Invited as ${invite.role}: ${invite.email}`;
    form.name.value = invite.display_name;
  } catch (e) {
    who.textContent = '';
    error.textContent = e.message;
    form.querySelector('button').disabled = true;
  }
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  error.textContent = '';
  try {
    const s = await api('POST', '/auth/invite/accept', {
      token,
      password: form.password.value,
      display_name: form.name.value,
    });
    history.replaceState(null, '', '/invite');
    location.href = s.home;
  } catch (e) {
    error.textContent = e.message;
  }
});

init();
