import { api } from '/ui/common.js';

const form = document.getElementById('login');
const error = document.getElementById('error');
form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  error.textContent = '';
  const button = form.querySelector('button');
  button.disabled = true;
  try {
    const s = await api('POST', '/auth/login', {
      email: form.email.value,
      password: form.password.value,
    });
    location.href = s.home;
  } catch (e) {
    error.textContent = e.message;
  } finally {
    button.disabled = false;
  }
});
