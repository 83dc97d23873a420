// Benchmark of the Workspace in the real browser against the real runtime and simulator:
//  1. page weight of the Workspace's first load (bytes transferred on the wire, as Chromium's
//     network stack counts them: headers + compressed bodies), split into the page's own files
//     and the API calls it makes;
//  2. live latency: the time from the simulator posting a customer message to the runtime
//     (the moment before the signed webhook is sent) to the message text being in the open
//     conversation's DOM, over N messages (p50/p90/p99/max).
// Usage: node bench.mjs            (BENCH_N=200 node bench.mjs for more samples)
import { writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import {
  startStack, createUser, customerWrites, browser, login, ARTIFACTS, BIN,
} from './harness.mjs';

const N = Number(process.env.BENCH_N || 100);

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

const stack = await startStack();
const b = await browser('bench');
try {
  const agent = await createUser(stack, 'bench@tenant.test', 'Bench');
  const { page, context } = b;
  await login(page, stack, agent.email, agent.password);

  // 1. First load of the Workspace with an empty cache.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  const urls = new Map();
  const bytes = { page: 0, api: 0, requests: 0 };
  cdp.on('Network.requestWillBeSent', (e) => urls.set(e.requestId, e.request.url));
  cdp.on('Network.loadingFinished', (e) => {
    const u = new URL(urls.get(e.requestId) || 'http://x/');
    bytes.requests += 1;
    if (u.pathname.startsWith('/api/')) bytes.api += e.encodedDataLength;
    else bytes.page += e.encodedDataLength;
  });
  const t0 = Date.now();
  await page.goto(`${stack.url}/workspace`);
  await page.waitForSelector('body[data-ready="1"]');
  const loadMs = Date.now() - t0;
  await page.waitForTimeout(300);
  const weight = { ...bytes, total: bytes.page + bytes.api, ready_ms: loadMs };
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: false });

  // 2. Live latency into an open conversation.
  await customerWrites(stack, { identity: '46709999999', text: 'bench start' });
  await page.click('button[data-tab=queue]');
  await page.locator('#queue-rows tr button.pick').first().click();
  await page.locator('#thread .msg.inbound .text', { hasText: 'bench start' }).waitFor();
  await page.evaluate(() => {
    window.__seen = {};
    new MutationObserver(() => {
      for (const n of document.querySelectorAll('#thread .msg.inbound .text')) {
        const t = n.textContent;
        if (t.startsWith('bench-') && !(t in window.__seen)) window.__seen[t] = Date.now();
      }
    }).observe(document.getElementById('conv'), { childList: true, subtree: true });
    // A second stream, only to time when the push reaches the page.
    window.__events = [];
    const es = new EventSource('/api/v1/live');
    es.addEventListener('message_received', () => window.__events.push(Date.now()));
  });
  await page.waitForTimeout(300);
  const samples = [];
  const acks = [];
  const pushes = [];
  for (let i = 0; i < N; i++) {
    const text = `bench-${i}`;
    const sent = Date.now();
    await customerWrites(stack, { identity: '46709999999', text });
    acks.push(Date.now() - sent);
    const seen = await page.waitForFunction((t) => window.__seen[t], text, { polling: 'raf', timeout: 10000 });
    samples.push((await seen.jsonValue()) - sent);
    const pushed = await page.evaluate((k) => window.__events[k], i);
    if (pushed) pushes.push(pushed - sent);
  }
  const stats = (xs) => {
    const sorted = [...xs].sort((a, c) => a - c);
    return {
      n: xs.length,
      p50_ms: pct(sorted, 50),
      p90_ms: pct(sorted, 90),
      p99_ms: pct(sorted, 99),
      max_ms: sorted[sorted.length - 1],
      mean_ms: Math.round(xs.reduce((a, c) => a + c, 0) / xs.length),
    };
  };
  const latency = stats(samples);
  // Part of it: the simulator signing and posting the webhook until the runtime acknowledged it
  // (stored and committed). The rest is push (tailer, SSE) plus fetch and render in the page.
  latency.webhook_ack = stats(acks);
  latency.event_in_page = stats(pushes);
  const result = { binary: path.basename(BIN), when: new Date().toISOString(), weight, latency };
  await mkdir(ARTIFACTS, { recursive: true });
  await writeFile(path.join(ARTIFACTS, 'bench.json'), JSON.stringify(result, null, 2));
  console.log(`Workspace first load: ${weight.total} bytes on the wire in ${weight.requests} requests `
    + `(page files ${weight.page} B, API ${weight.api} B), ready in ${loadMs} ms`);
  console.log(`New message to visible (N=${N}): p50 ${latency.p50_ms} ms, p90 ${latency.p90_ms} ms, `
    + `p99 ${latency.p99_ms} ms, max ${latency.max_ms} ms, mean ${latency.mean_ms} ms `
    + `(webhook acknowledged: p50 ${latency.webhook_ack.p50_ms} ms, p99 ${latency.webhook_ack.p99_ms} ms; `
    + `event in the page: p50 ${latency.event_in_page.p50_ms} ms, p99 ${latency.event_in_page.p99_ms} ms)`);
} finally {
  await b.close();
  await stack.stop();
}
