#!/usr/bin/env node
// Drives the weft dashboard in headless Chromium and checks what a person would see.
//
//   node tests/browser/dashboard.mjs --url http://127.0.0.1:PORT/ --out DIR --expect FILE.json [--timeout SECS]
//
// The expect file (every key optional):
//   {"services": [fqdn...], "workloads": [graph id...], "mtls_edges": [[from, to]...],
//    "click_service": fqdn, "detail_contains": [text...], "proxies": [proxy...], "findings_min": 0}
// Chromium comes from $CHROMIUM or /usr/bin/chromium (Debian's package). Every request that
// leaves the page's own origin is blocked and fails the run, as does any console or page error.
// Screenshots go to DIR/{topology,detail,proxies,findings}.png. Exits 0 when every check passed.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

function usage(msg) {
  if (msg) console.error(`dashboard: ${msg}`);
  console.error('usage: node tests/browser/dashboard.mjs --url http://127.0.0.1:PORT/ --out DIR --expect FILE.json [--timeout SECS]');
  process.exit(2);
}

const args = {};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (!a.startsWith('--')) usage(`unexpected argument ${a}`);
  const [k, inline] = a.slice(2).split('=', 2);
  args[k] = inline ?? process.argv[++i];
  if (args[k] === undefined) usage(`--${k} needs a value`);
}
for (const k of Object.keys(args)) if (!['url', 'out', 'expect', 'timeout'].includes(k)) usage(`unknown option --${k}`);
if (!args.url || !args.out || !args.expect) usage('--url, --out and --expect are required');
const timeoutMs = Number(args.timeout ?? 60) * 1000;
if (!(timeoutMs > 0)) usage('--timeout must be a positive number of seconds');

let origin;
try {
  origin = new URL(args.url).origin;
} catch {
  usage(`--url is not a URL: ${args.url}`);
}
let expect;
try {
  expect = JSON.parse(readFileSync(args.expect, 'utf8'));
} catch (e) {
  usage(`cannot read the expect file ${args.expect}: ${e.message}`);
}
const want = {
  services: expect.services || [],
  workloads: expect.workloads || [],
  mtlsEdges: expect.mtls_edges || [],
  clickService: expect.click_service || null,
  detailContains: expect.detail_contains || [],
  proxies: expect.proxies || [],
  findingsMin: expect.findings_min ?? 0,
};
mkdirSync(args.out, { recursive: true });

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`FAIL chromium: no browser at ${executablePath} — install Debian's chromium: apt-get install chromium (or set CHROMIUM)`);
  process.exit(1);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error(`FAIL playwright-core is not installed (${e.message}) — run: cd tests/browser && npm ci`);
  process.exit(1);
}

let passed = 0, failed = 0;
const pass = (what) => { passed++; console.log(`PASS ${what}`); };
const fail = (what) => { failed++; console.log(`FAIL ${what}`); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const list = (xs) => (xs.length ? xs.join(', ') : '(none)');

// Polls `probe` (which returns {ok, detail}) until ok or the deadline; returns the last result.
async function poll(probe, ms = timeoutMs) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await probe();
    } catch (e) {
      last = { ok: false, detail: `error while checking: ${e.message.split('\n')[0]}` };
    }
    if (last.ok || Date.now() > end) return last;
    await sleep(500);
  }
}

const blocked = [];
const consoleErrors = [];
const pageErrors = [];
let browser;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  await context.route('**/*', (route) => {
    const u = route.request().url();
    let o = null;
    try { o = new URL(u).origin; } catch { /* not a URL */ }
    if (o === origin) return route.continue();
    blocked.push(u);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`${m.text()} (${m.location().url || 'page'})`); });
  page.on('pageerror', (e) => pageErrors.push(e.message));

  let resp;
  try {
    resp = await page.goto(args.url, { waitUntil: 'load', timeout: 30000 });
  } catch (e) {
    throw new Error(`cannot open ${args.url}: ${e.message.split('\n')[0].replace(/^page\.goto: /, '')} — is the control plane running there?`);
  }
  if (!resp || !resp.ok()) throw new Error(`${args.url} answered HTTP ${resp ? resp.status() : 'nothing'}`);
  pass(`page loaded: ${args.url} (HTTP ${resp.status()})`);

  // ---- topology ----
  const snapshot = () => page.evaluate(() => {
    const nodes = [...document.querySelectorAll('svg#topology g.node')].map((g) => ({ kind: g.dataset.kind, id: g.dataset.id, idle: g.dataset.idle === 'true' }));
    const edges = [...document.querySelectorAll('svg#topology g.edge')].map((g) => ({
      from: g.dataset.from, to: g.dataset.to, mtls: g.dataset.mtls,
      label: [...(g.querySelector('text.edge-label')?.childNodes || [])].map((n) => n.textContent).join(' ').replace(/\s+/g, ' ').trim(),
      lock: !!g.querySelector('.lock'),
    }));
    const banner = document.querySelector('#error-banner');
    return { nodes, edges, banner: banner && banner.offsetParent !== null ? banner.textContent.trim() : null,
      empty: document.querySelector('#topology-empty:not([hidden])')?.textContent.trim() || null };
  });
  const topo = await poll(async () => {
    const s = await snapshot();
    const present = (kind) => s.nodes.filter((n) => n.kind === kind && !n.idle).map((n) => n.id);
    const idle = (kind) => s.nodes.filter((n) => n.kind === kind && n.idle).map((n) => n.id);
    const problems = [];
    for (const [kind, ids] of [['service', want.services], ['workload', want.workloads]]) {
      const missing = ids.filter((id) => !present(kind).includes(id));
      if (missing.length) {
        const idleToo = missing.filter((id) => idle(kind).includes(id));
        problems.push(`${kind} nodes with traffic missing: ${list(missing)}${idleToo.length ? ` (shown idle, without traffic: ${list(idleToo)})` : ''}; present: ${list(present(kind))}`);
      }
    }
    for (const [from, to] of want.mtlsEdges) {
      const e = s.edges.find((x) => x.from === from && x.to === to);
      if (!e) problems.push(`edge ${from} → ${to} missing`);
      else if (e.mtls !== 'true' || !e.lock) problems.push(`edge ${from} → ${to} is not shown as mTLS (data-mtls=${e.mtls}, lock=${e.lock})`);
      else if (!/rps/.test(e.label) || !/p99/.test(e.label)) problems.push(`edge ${from} → ${to} label lacks rps/p99: "${e.label}"`);
    }
    if (problems.length && want.mtlsEdges.length) problems.push(`edges present: ${list(s.edges.map((e) => `${e.from} → ${e.to} [mtls=${e.mtls}] "${e.label}"`))}`);
    if (problems.length && s.banner) problems.push(`error banner: ${s.banner}`);
    if (problems.length && s.empty) problems.push(`page says: ${s.empty}`);
    return { ok: problems.length === 0, detail: problems.join('\n     '), s };
  });
  if (topo.ok) {
    pass(`topology: services ${list(want.services)}`);
    pass(`topology: workloads ${list(want.workloads)}`);
    pass(`topology: mTLS edges with lock and rps/p99 labels: ${list(want.mtlsEdges.map(([a, b]) => `${a} → ${b}`))}`);
  } else {
    fail(`topology after ${timeoutMs / 1000} s:\n     ${topo.detail}`);
  }
  await page.screenshot({ path: join(args.out, 'topology.png'), fullPage: true });

  // ---- service detail ----
  if (want.clickService) {
    const sel = `svg#topology g.node[data-kind="service"][data-id="${CSS_escape(want.clickService)}"]`;
    if ((await page.locator(sel).count()) === 0) {
      fail(`detail: no service node ${want.clickService} to click`);
    } else {
      await page.locator(sel).first().click();
      const det = await poll(async () => {
        const d = await page.evaluate(() => {
          const el = document.querySelector('#detail');
          if (!el) return null;
          const sec = (c) => !!el.querySelector(c);
          return { service: el.dataset.service || null, visible: el.offsetParent !== null && !el.hidden, text: el.innerText,
            sections: { '.detail-workloads': sec('.detail-workloads'), '.detail-routes': sec('.detail-routes'), '.detail-policies': sec('.detail-policies') } };
        });
        if (!d) return { ok: false, detail: 'no #detail element' };
        const problems = [];
        if (!d.visible) problems.push('#detail is not visible');
        if (d.service !== want.clickService) problems.push(`#detail data-service is ${d.service}, want ${want.clickService}`);
        const noSec = Object.entries(d.sections).filter(([, v]) => !v).map(([k]) => k);
        if (noSec.length) problems.push(`sections missing: ${list(noSec)}`);
        const missing = want.detailContains.filter((t) => !d.text.includes(t));
        if (missing.length) problems.push(`text missing: ${list(missing.map((t) => JSON.stringify(t)))}; the panel says:\n       ${d.text.replace(/\n+/g, ' | ').slice(0, 1500)}`);
        return { ok: problems.length === 0, detail: problems.join('\n     ') };
      }, Math.min(timeoutMs, 15000));
      if (det.ok) pass(`detail: ${want.clickService} open, contains ${list(want.detailContains.map((t) => JSON.stringify(t)))}`);
      else fail(`detail of ${want.clickService}:\n     ${det.detail}`);
    }
    await page.screenshot({ path: join(args.out, 'detail.png'), fullPage: true });
  }

  // ---- proxies ----
  await page.click('[data-tab="proxies"]');
  const prox = await poll(async () => {
    const rows = await page.evaluate(() => [...document.querySelectorAll('#proxies tr[data-proxy]')].map((tr) => ({
      proxy: tr.dataset.proxy,
      visible: tr.offsetParent !== null,
      cells: [...tr.querySelectorAll('td.sync')].map((td) => [td.dataset.type, td.textContent.trim(), td.title || '']),
    })));
    const problems = [];
    for (const p of want.proxies) {
      const r = rows.find((x) => x.proxy === p);
      if (!r) { problems.push(`proxy row ${p} missing; rows: ${list(rows.map((x) => x.proxy))}`); continue; }
      if (!r.visible) problems.push(`proxy row ${p} is not visible`);
      const types = r.cells.map((c) => c[0]);
      const lacking = ['CDS', 'EDS', 'LDS', 'RDS'].filter((t) => !types.includes(t));
      if (lacking.length) problems.push(`proxy ${p} has no sync cell for ${list(lacking)}`);
      const notSynced = r.cells.filter((c) => c[1] !== 'SYNCED');
      if (notSynced.length) problems.push(`proxy ${p} not synced: ${notSynced.map(([t, s, tip]) => `${t}=${s}${tip ? ` (${tip})` : ''}`).join(', ')}`);
    }
    return { ok: problems.length === 0, detail: problems.join('\n     ') };
  });
  if (prox.ok) pass(`proxies: ${list(want.proxies)} SYNCED on every type`);
  else fail(`proxies after ${timeoutMs / 1000} s:\n     ${prox.detail}`);
  await page.screenshot({ path: join(args.out, 'proxies.png'), fullPage: true });

  // ---- findings ----
  await page.click('[data-tab="findings"]');
  const fnd = await poll(async () => {
    const f = await page.evaluate(() => ({
      visible: document.querySelector('#findings')?.offsetParent != null,
      items: [...document.querySelectorAll('#findings li.finding')].map((li) => li.innerText.replace(/\s+/g, ' ').trim()),
      clean: document.querySelector('#findings .clean')?.textContent.trim() || null,
    }));
    const ok = f.visible && f.items.length >= want.findingsMin && (f.items.length > 0 || !!f.clean);
    return { ok, detail: `${f.visible ? '' : '#findings is not visible; '}${f.items.length} finding(s), want at least ${want.findingsMin}${f.items.length ? ': ' + f.items.join(' | ') : f.clean ? ` (page says: ${f.clean})` : ' (nothing rendered)'}`, n: f.items.length };
  }, Math.min(timeoutMs, 15000));
  if (fnd.ok) pass(`findings: ${fnd.n} shown (at least ${want.findingsMin})`);
  else fail(`findings: ${fnd.detail}`);
  await page.screenshot({ path: join(args.out, 'findings.png'), fullPage: true });

  // ---- things that must never happen ----
  const banner = await page.evaluate(() => {
    const b = document.querySelector('#error-banner');
    return b && b.offsetParent !== null ? b.textContent.trim() : null;
  });
  if (banner) fail(`error banner shown: ${banner}`);
  else pass('no error banner');
  if (blocked.length) fail(`the page tried to reach other origins than ${origin}: ${list([...new Set(blocked)])}`);
  else pass(`no request left ${origin}`);
  if (consoleErrors.length || pageErrors.length) fail(`console/page errors:\n     ${[...consoleErrors, ...pageErrors].join('\n     ')}`);
  else pass('no console or page errors');
} catch (e) {
  fail(e.message && !/^(page|locator|browser)\./.test(e.message) ? e.message : `unexpected: ${e.stack || e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
}

console.log(`screenshots in ${args.out}`);
console.log(`dashboard: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

// CSS.escape is not in Node; ids here are DNS names, so quoting " and \ is enough.
function CSS_escape(s) {
  return String(s).replace(/["\\]/g, '\\$&');
}
