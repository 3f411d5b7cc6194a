// weft mesh dashboard: polls the control plane's JSON every 5 s and renders the topology,
// services, proxies and findings. No framework, no build step.
'use strict';

const REFRESH_MS = 5000;
const TABS = ['topology', 'services', 'proxies', 'findings'];
const SYNC_TYPES = ['CDS', 'EDS', 'LDS', 'RDS'];

const S = {
  tab: 'topology', service: null, horizon: '5m', showIdle: true,
  graph: null, services: null, syncz: null, findings: null,
  errors: [], updated: null, seq: 0, timer: null, sig: {},
};

// ---------- small helpers ----------
const $ = (sel) => document.querySelector(sel);

// el('div', {id: 'x', onclick: f} or 'class names', ...children) builds an element; sv() the same in SVG.
const mk = (ns) => (tag, attrs, ...kids) => {
  const n = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  if (typeof attrs === 'string') attrs = { class: attrs };
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  n.append(...kids.flat(3).filter((k) => k != null && k !== false && k !== ''));
  return n;
};
const el = mk(), sv = mk('http://www.w3.org/2000/svg');
const trim0 = (s) => s.replace(/\.0$/, '');
function fmtRate(r) {
  if (!r) return '0';
  if (r >= 100) return String(Math.round(r));
  if (r >= 0.1) return r.toFixed(1);
  return r < 0.01 ? '<0.01' : r.toFixed(2);
}
function fmtPct(f) {
  const p = (f || 0) * 100;
  if (p === 0) return '0%';
  if (p < 0.1) return '<0.1%';
  return (p < 10 ? trim0(p.toFixed(1)) : String(Math.round(p))) + '%';
}
function fmtMs(ms) {
  if (ms == null) return '–';
  if (ms >= 1000) return trim0((ms / 1000).toFixed(1)) + ' s';
  return (ms < 10 ? trim0(ms.toFixed(1)) : String(Math.round(ms))) + ' ms';
}
function fmtAgo(unixSecs) {
  if (!unixSecs) return '–';
  let s = Math.max(0, Math.round(Date.now() / 1000 - unixSecs));
  if (s < 10) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${m % 60} min ago`;
  const d = Math.floor(h / 24);
  return `${d} day${d > 1 ? 's' : ''}${h % 24 ? ` ${h % 24} h` : ''} ago`;
}
const shortHost = (host) => String(host).replace(/\.svc\.cluster\.local$/, '').split('.')[0];
const wlId = (w) => `${w.name}.${w.namespace}`;
function splitWl(id) {
  const i = id.lastIndexOf('.');
  return i > 0 ? [id.slice(0, i), id.slice(i + 1)] : [id, ''];
}
// Combines several graph edges into one drawn segment: rates add up, errors are weighted by
// traffic, p99 is the highest of them (a conservative bound), mTLS only when every part had it.
function combine(edges) {
  let rate = 0, req = 0, errW = 0, w = 0, p99 = null, p50 = null;
  for (const e of edges) {
    const weight = e.requests > 0 ? e.requests : e.request_rate || 0;
    rate += e.request_rate || 0;
    req += e.requests || 0;
    errW += (e.error_rate || 0) * weight;
    w += weight;
    if (e.p99_ms != null) p99 = Math.max(p99 ?? 0, e.p99_ms);
    if (e.p50_ms != null) p50 = Math.max(p50 ?? 0, e.p50_ms);
  }
  const err = w > 0 ? errW / w : Math.max(0, ...edges.map((e) => e.error_rate || 0));
  const mtlsAll = edges.every((e) => e.mtls), mtlsSome = edges.some((e) => e.mtls);
  return { rate, req, err, p99, p50, mtls: mtlsAll, partial: mtlsSome && !mtlsAll, n: edges.length };
}

// ---------- data ----------
async function getJSON(path) {
  let r;
  try {
    r = await fetch(path, { cache: 'no-store' });
  } catch (e) {
    throw new Error(`GET ${path} failed (${e.message})`);
  }
  if (!r.ok) throw new Error(`GET ${path} answered HTTP ${r.status}`);
  return r.json().catch(() => { throw new Error(`GET ${path} returned invalid JSON`); });
}

async function refresh() {
  clearTimeout(S.timer);
  const seq = ++S.seq;
  const jobs = [
    ['graph', `/graph?time_horizon=${encodeURIComponent(S.horizon)}`],
    ['services', '/api/services'],
    ['syncz', '/debug/syncz'],
    ['findings', '/api/findings'],
  ];
  const res = await Promise.allSettled(jobs.map(([, p]) => getJSON(p)));
  if (seq !== S.seq) return; // a newer refresh started (horizon changed)
  S.errors = [];
  res.forEach((r, i) => {
    if (r.status === 'fulfilled') S[jobs[i][0]] = r.value;
    else S.errors.push(r.reason.message);
  });
  // Everything failed the same way: say it once.
  const why = S.errors.map((m) => (m.match(/\((.*)\)$/) || [])[1]);
  if (S.errors.length === jobs.length && why[0] && why.every((w) => w === why[0])) S.errors = [`no answer from ${location.host} (${why[0]})`];
  if (S.errors.length < jobs.length) S.updated = new Date();
  try {
    render();
  } finally {
    S.timer = setTimeout(refresh, REFRESH_MS);
  }
}

// ---------- rendering ----------
function changed(key, ...parts) {
  const sig = JSON.stringify(parts);
  if (S.sig[key] === sig) return false;
  S.sig[key] = sig;
  return true;
}

function render() {
  renderBanner();
  renderHeader();
  renderTabs();
  if (changed('topo', S.graph, S.services, S.showIdle, S.horizon)) renderTopology();
  if (changed('svcs', S.services, S.graph, S.horizon)) renderServices();
  if (changed('prox', S.syncz, (S.syncz?.proxies || []).map((p) => fmtAgo(p.connected_at)))) renderProxies();
  if (changed('find', S.findings)) renderFindings();
  if (changed('detail', S.service, S.services, S.graph, S.horizon)) renderDetail();
  markSelected();
}

function renderBanner() {
  const box = $('#banners');
  const old = $('#error-banner');
  if (!S.errors.length) {
    if (old) old.remove();
    return;
  }
  const stale = S.updated ? ` Showing data from ${S.updated.toLocaleTimeString()}.` : '';
  const b = el('div', { id: 'error-banner', class: 'banner banner-error', role: 'alert' },
    el('b', null, 'control plane unreachable: '), S.errors.join('; '),
    el('span', 'muted-light', ` — retrying every ${REFRESH_MS / 1000} s.${stale}`));
  if (old) old.replaceWith(b); else box.prepend(b);
}

function renderHeader() {
  const v = (S.services || S.syncz || S.findings || {}).version;
  $('#version').textContent = `config v${v ?? '–'}`;
  $('#updated').textContent = S.updated ? `updated ${S.updated.toLocaleTimeString()}` : 'loading…';
}

function renderTabs() {
  const proxies = S.syncz?.proxies || [];
  const bad = proxies.filter((p) => Object.values(p.types || {}).some((t) => t.state !== 'SYNCED')).length;
  const f = S.findings?.findings || [];
  const errs = f.filter((x) => x.level === 'error').length;
  const labels = {
    topology: ['Topology'],
    services: ['Services', S.services ? S.services.services.length : null],
    proxies: ['Proxies', S.syncz ? proxies.length : null, S.syncz?.unenforced?.length ? 'error' : bad ? 'warn' : null],
    findings: ['Findings', S.findings ? f.length : null, errs ? 'error' : f.length ? 'warn' : null],
  };
  for (const b of document.querySelectorAll('[data-tab]')) {
    const [name, count, dot] = labels[b.dataset.tab];
    b.replaceChildren(name + (count != null ? ` (${count})` : ''));
    if (dot) b.append(el('span', { class: `dot dot-${dot}`, title: dot === 'warn' ? 'needs attention' : 'has errors' }));
    const on = b.dataset.tab === S.tab;
    b.classList.toggle('active', on);
    b.setAttribute('aria-selected', on);
  }
  for (const p of document.querySelectorAll('[data-panel]')) p.hidden = p.dataset.panel !== S.tab;
  // The service panel belongs to the topology and services views; it stays open behind the others.
  const showDetail = !!S.service && (S.tab === 'topology' || S.tab === 'services');
  document.body.classList.toggle('with-detail', showDetail);
  $('#detail').classList.toggle('away', !showDetail);
}

// ----- topology -----
function buildModel() {
  const graph = S.graph || {};
  const services = S.services?.services || [];
  const svcByHost = new Map(services.map((s) => [s.host, s]));
  const wlInfo = new Map();
  for (const s of services) for (const w of s.workloads || []) if (!wlInfo.has(wlId(w))) wlInfo.set(wlId(w), { ...w, service: s.host });
  const nodes = new Map();
  const addW = (id, idle) => {
    const k = 'w:' + id;
    if (!nodes.has(k)) nodes.set(k, { key: k, kind: 'workload', id, idle, info: wlInfo.get(id) });
    return k;
  };
  const addS = (host, idle) => {
    const k = 's:' + host;
    if (!nodes.has(k)) nodes.set(k, { key: k, kind: 'service', id: host, idle, info: svcByHost.get(host) });
    return k;
  };
  const segs = new Map();
  const addSeg = (from, to, e, service) => {
    const k = from + '|' + to;
    if (!segs.has(k)) segs.set(k, { from, to, edges: [], service });
    segs.get(k).edges.push(e);
  };
  // Edges that carried nothing in the window (the graph keeps them a while) are not drawn.
  for (const e of traffic()) {
    const a = addW(e.source, false), b = addW(e.target, false);
    if (e.service) {
      const s = addS(e.service, false);
      addSeg(a, s, e, e.service);
      addSeg(s, b, e, e.service);
    } else addSeg(a, b, e, null);
  }
  for (const sg of segs.values()) sg.stats = combine(sg.edges);

  // Break cycles: a depth-first walk from the callers marks the edges that lead back up its path.
  const succ = new Map([...nodes.keys()].map((k) => [k, []]));
  for (const sg of segs.values()) succ.get(sg.from).push(sg);
  const seen = new Set(), path = new Set();
  const walk = (k) => {
    seen.add(k);
    path.add(k);
    for (const sg of succ.get(k)) {
      if (path.has(sg.to)) sg.back = true;
      else if (!seen.has(sg.to)) walk(sg.to);
    }
    path.delete(k);
  };
  const hasPred = new Set([...segs.values()].map((sg) => sg.to));
  const keys = [...nodes.keys()].sort((x, y) => hasPred.has(x) - hasPred.has(y) || (y === 'w:unknown') - (x === 'w:unknown') || x.localeCompare(y));
  keys.forEach((k) => seen.has(k) || walk(k));
  // Longest-path layering: workloads on even columns, services on odd ones.
  const preds = new Map([...nodes.keys()].map((k) => [k, []]));
  for (const sg of segs.values()) if (!sg.back) preds.get(sg.to).push([sg.from, nodes.get(sg.from).kind === nodes.get(sg.to).kind ? 2 : 1]);
  const layer = new Map();
  const depth = (k) => {
    if (!layer.has(k)) layer.set(k, Math.max(nodes.get(k).kind === 'service' ? 1 : 0, ...preds.get(k).map(([p, w]) => depth(p) + w)));
    return layer.get(k);
  };
  keys.forEach(depth);

  const idleLinks = [];
  if (S.showIdle) {
    for (const s of [...services].sort((a, b) => a.host.localeCompare(b.host))) {
      const sk = 's:' + s.host;
      const wls = (s.workloads || []).map(wlId);
      let sl = layer.get(sk);
      if (sl == null) {
        const known = wls.filter((id) => layer.has('w:' + id)).map((id) => layer.get('w:' + id));
        sl = known.length ? Math.min(...known) - 1 : 1;
        addS(s.host, true);
        layer.set(sk, sl);
      }
      for (const id of wls) {
        if (!nodes.has('w:' + id)) {
          addW(id, true);
          layer.set('w:' + id, sl + 1);
        }
        if (nodes.get(sk).idle || nodes.get('w:' + id).idle) idleLinks.push([sk, 'w:' + id]);
      }
    }
    // Workloads the graph saw earlier but not in this window.
    for (const n of graph.nodes || []) if (!nodes.has('w:' + n.id)) layer.set(addW(n.id, true), 0);
    if (Math.min(...layer.values()) < 0) for (const [k, v] of layer) layer.set(k, v + 2);
  }
  for (const [k, n] of nodes) n.layer = layer.get(k);
  return { nodes, segs: [...segs.values()], idleLinks };
}

const NODE_H = { workload: 46, service: 40 };
let measureCtx;
// Width of a node's text in the page's font, so columns are as wide as their longest name.
function textWidth(str, px, weight) {
  measureCtx ||= document.createElement('canvas').getContext('2d');
  measureCtx.font = `${weight} ${px}px ${getComputedStyle(document.body).fontFamily}`;
  return measureCtx.measureText(str).width;
}
function nodeWidth(n) {
  const lab = nodeLabel(n);
  const w = Math.max(textWidth(lab.title, 13, 600), textWidth(lab.sub, 11.5, 400)) + (n.kind === 'service' ? 46 : 26);
  return Math.ceil(Math.min(240, Math.max(n.kind === 'service' ? 96 : 120, w)));
}
const GAP = 136, ROW = 80, PAD = 20, MIN_SCALE = 0.75;

function layout(m) {
  const cols = [];
  for (const n of m.nodes.values()) (cols[n.layer] ||= []).push(n);
  const preds = new Map();
  for (const sg of m.segs) if (!sg.back) (preds.get(sg.to) || preds.set(sg.to, []).get(sg.to)).push(sg.from);
  for (const [a, b] of m.idleLinks) (preds.get(b) || preds.set(b, []).get(b)).push(a);
  // x per column
  const colX = [], colW = [];
  let x = PAD;
  for (let i = 0; i < cols.length; i++) {
    colX[i] = x;
    colW[i] = Math.max(0, ...(cols[i] || []).map(nodeWidth));
    if (colW[i]) x += colW[i] + GAP;
  }
  const width = x - GAP + PAD;
  // y: busy nodes first (barycentre of their callers), idle ones below.
  for (let i = 0; i < cols.length; i++) {
    const col = cols[i] || [];
    for (const n of col) {
      const ys = (preds.get(n.key) || []).map((k) => m.nodes.get(k)).filter((p) => p.y != null && p.layer < i).map((p) => p.y);
      n.want = ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : null;
    }
    const order = (a, b) => (a.idle - b.idle) || ((a.want ?? -1) - (b.want ?? -1)) || (a.id === 'unknown' ? -1 : b.id === 'unknown' ? 1 : a.id.localeCompare(b.id));
    col.sort(order);
    let prev = -Infinity;
    for (const n of col) {
      n.y = Math.max(n.want ?? prev + ROW, prev + ROW);
      if (!isFinite(n.y)) n.y = 0;
      prev = n.y;
    }
    // pull the column up so it centres on what it wants
    const d = col.filter((n) => n.want != null).map((n) => n.y - n.want);
    if (d.length) {
      const shift = Math.min(...col.map((n) => n.y - 0), d.reduce((a, b) => a + b, 0) / d.length);
      if (shift > 0) for (const n of col) n.y -= shift;
    }
    for (let j = 1; j < col.length; j++) if (col[j].y < col[j - 1].y + ROW) col[j].y = col[j - 1].y + ROW;
  }
  const all = [...m.nodes.values()];
  const minY = Math.min(...all.map((n) => n.y)), maxY = Math.max(...all.map((n) => n.y));
  for (const n of all) {
    n.w = colW[n.layer]; n.h = NODE_H[n.kind];
    n.x = colX[n.layer];
    n.y = n.y - minY + PAD + 28;
  }
  return { width, height: maxY - minY + 2 * PAD + 64 };
}

function lockIcon(on, x, y) {
  return sv('use', { class: on ? 'lock' : 'nolock', href: on ? '#i-lock' : '#i-unlock', x, y, width: 14, height: 16 },
    sv('title', null, on ? 'mutual TLS: encrypted, both sides verified' : 'plain text: no mutual TLS'));
}

function nodeLabel(n) {
  if (n.kind === 'service') {
    const s = n.info;
    return { title: s ? s.name : shortHost(n.id), sub: s ? (s.external ? 'external' : s.namespace) : n.id.split('.')[1] || '' };
  }
  if (n.id === 'unknown') return { title: 'unknown (no sidecar)', sub: 'caller outside the mesh' };
  const [name, ns] = splitWl(n.id);
  const v = n.info?.version;
  return { title: name, sub: ns + (v ? ` · ${v}` : '') };
}

function bez(a, b, t) {
  const dx = Math.max(40, Math.abs(b.x - a.x) / 2);
  const p = [a, { x: a.x + dx, y: a.y }, { x: b.x - dx, y: b.y }, b];
  const u = 1 - t;
  const c = [u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t];
  return { d: `M${a.x},${a.y} C${p[1].x},${p[1].y} ${p[2].x},${p[2].y} ${b.x},${b.y}`, x: c.reduce((s, k, i) => s + k * p[i].x, 0), y: c.reduce((s, k, i) => s + k * p[i].y, 0) };
}

// A call back to a column further left: a curve under both nodes.
function loop(a, b) {
  const y = Math.max(a.y + a.h, b.y + b.h) + 36, ax = a.x + a.w / 2, bx = b.x + b.w / 2;
  return { d: `M${ax},${a.y + a.h} C${ax},${y} ${bx},${y} ${bx},${b.y + b.h}`, x: (ax + bx) / 2, y: y - 9 };
}

function renderTopology() {
  const wrap = $('#topology-wrap');
  const empty = $('#topology-empty');
  if (!S.graph && !S.services) {
    empty.hidden = false;
    empty.textContent = 'Loading…';
    return;
  }
  const m = buildModel();
  const traffic = m.segs.length > 0;
  empty.hidden = traffic;
  empty.replaceChildren(`No traffic in the last ${S.horizon} — send some requests`,
    el('span', 'muted', m.nodes.size ? ' (services with no traffic are shown greyed below)' : ''));
  if (!m.nodes.size) {
    wrap.replaceChildren();
    return;
  }
  const size = layout(m);
  const svg = sv('svg', { id: 'topology', width: size.width, height: size.height, style: `min-width:${Math.round(size.width * MIN_SCALE)}px`, viewBox: `0 0 ${size.width} ${size.height}`, role: 'img', 'aria-label': 'service topology' });
  const defs = sv('defs');
  for (const [id, col] of [['arrow', '#8a94a3'], ['arrow-err', '#d64545']]) {
    defs.append(sv('marker', { id, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
      sv('path', { d: 'M0,1 L9,5 L0,9 z', fill: col })));
  }
  svg.append(defs);
  // column captions
  const caps = new Map();
  for (const n of m.nodes.values()) if (!caps.has(n.layer)) caps.set(n.layer, n);
  for (const [l, n] of caps) {
    const txt = n.kind === 'service' ? 'services' : l === 0 ? 'callers' : 'workloads';
    svg.append(sv('text', { class: 'col-caption', x: n.x + n.w / 2, y: 20, 'text-anchor': 'middle' }, txt));
  }
  const right = (n) => ({ x: n.x + n.w, y: n.y + n.h / 2 });
  const left = (n) => ({ x: n.x, y: n.y + n.h / 2 });
  const gEdges = sv('g', 'edges'), gNodes = sv('g', 'nodes');
  for (const [a, b] of m.idleLinks) {
    gEdges.append(sv('path', { class: 'idle-link', d: bez(right(m.nodes.get(a)), left(m.nodes.get(b)), 0).d }));
  }
  const maxRate = Math.max(...m.segs.map((s) => s.stats.rate), 0.001);
  const labels = [];
  for (const sg of m.segs) {
    const a = m.nodes.get(sg.from), b = m.nodes.get(sg.to), st = sg.stats;
    const c = sg.back ? loop(a, b) : bez(right(a), left(b), 0.5);
    const bad = st.err > 0;
    const g = sv('g', { class: 'edge' + (bad ? ' edge-err' : ''), 'data-from': a.id, 'data-to': b.id, 'data-mtls': String(st.mtls), 'data-service': sg.service || '' });
    const who = `${nodeLabel(a).title} → ${nodeLabel(b).title}`;
    g.append(sv('title', null, `${who}\n${Math.round(st.req)} requests in the last ${S.horizon} (${fmtRate(st.rate)} per second)\n` +
      `${fmtPct(st.err)} failed · p50 ${fmtMs(st.p50)} · p99 ${fmtMs(st.p99)}\n` +
      (st.mtls ? 'mutual TLS' : st.partial ? 'only partly mutual TLS' : 'plain text (no mutual TLS)') + (st.n > 1 ? `\n(${st.n} calls combined; p99 is the highest)` : '')));
    g.append(sv('path', { class: 'edge-line' + (st.mtls ? '' : ' plain'), d: c.d, 'stroke-width': (1.4 + 3 * Math.sqrt(st.rate / maxRate)).toFixed(1), 'marker-end': `url(#${bad ? 'arrow-err' : 'arrow'})` }));
    const lg = sv('g', { class: 'edge-label-g', id: `lbl${labels.length}`, transform: `translate(${c.x.toFixed(1)},${c.y.toFixed(1)})` });
    const text = sv('text', { class: 'edge-label', 'text-anchor': 'middle', y: -3 },
      sv('tspan', { x: 0 }, `${fmtRate(st.rate)} rps · `), sv('tspan', { class: bad ? 'err-bad' : 'err-ok' }, `${fmtPct(st.err)} err`),
      sv('tspan', { x: 9, dy: 14, class: 'l2' }, `p99 ${fmtMs(st.p99)}`));
    lg.append(text);
    g.append(lg);
    if (sg.service) g.addEventListener('click', () => openService(sg.service));
    gEdges.append(g);
    labels.push({ lg, text, mtls: st.mtls });
  }
  for (const n of m.nodes.values()) {
    const lab = nodeLabel(n);
    const cls = ['node', `node-${n.kind}`, n.idle && 'idle', n.id === 'unknown' && 'unknown'].filter(Boolean).join(' ');
    const g = sv('g', { class: cls, 'data-kind': n.kind, 'data-id': n.id, 'data-idle': n.idle ? 'true' : null, transform: `translate(${n.x},${n.y})`, tabindex: 0 });
    const host = n.kind === 'service' ? n.id : n.info?.service;
    g.append(sv('title', null, n.kind === 'service'
      ? `service ${n.id}${n.idle ? '\nno traffic in the last ' + S.horizon : ''}\nclick for details`
      : `workload ${n.id}${n.info ? `\naddress ${n.info.address || '–'}` : ''}${n.idle ? '\nno traffic in the last ' + S.horizon : ''}${host ? '\nclick for its service' : ''}`));
    g.append(sv('rect', { class: 'shape', width: n.w, height: n.h, rx: n.kind === 'service' ? n.h / 2 : 8 }));
    if (n.kind === 'service') {
      g.append(sv('path', { class: 'svc-icon', d: 'M0,-6 L5.2,-3 L5.2,3 L0,6 L-5.2,3 L-5.2,-3 Z', transform: `translate(18,${n.h / 2})` }));
    }
    const tx = n.kind === 'service' ? 32 : 12;
    g.append(sv('text', { class: 'node-title', x: tx, y: n.kind === 'service' ? 17 : 19 }, clip(lab.title, 30)));
    g.append(sv('text', { class: 'node-sub', x: tx, y: n.kind === 'service' ? 31 : 35 }, clip(lab.sub, 34)));
    if (host) {
      g.classList.add('clickable');
      g.addEventListener('click', () => openService(host));
      g.addEventListener('keydown', (e) => { if (e.key === 'Enter') openService(host); });
    }
    gNodes.append(g);
  }
  // Labels again on top (by reference) so no line of another edge crosses them.
  svg.append(gEdges, gNodes, sv('g', 'label-top', labels.map((l) => sv('use', { href: '#' + l.lg.id }))));
  const scroll = [wrap.scrollLeft, wrap.scrollTop];
  wrap.replaceChildren(svg);
  [wrap.scrollLeft, wrap.scrollTop] = scroll;
  // Now that the text is laid out: a background plate and the lock icon beside each label.
  for (const { lg, text, mtls } of labels) {
    let bb, l2 = 60;
    try {
      bb = text.getBBox();
      l2 = text.querySelector('.l2').getComputedTextLength();
    } catch { bb = { x: -50, y: -14, width: 100, height: 30 }; }
    const lx = 9 - l2 / 2 - 17, x0 = Math.min(bb.x, lx) - 4, x1 = bb.x + bb.width + 4;
    lg.insertBefore(sv('rect', { class: 'label-bg', x: x0, y: bb.y - 2, width: x1 - x0, height: bb.height + 4, rx: 4 }), text);
    lg.append(lockIcon(mtls, lx, 1));
  }
  // Labels that would overlap move down until they do not.
  const boxes = [];
  for (const { lg } of labels) {
    const r = lg.getBBox(), t = lg.transform.baseVal.consolidate().matrix;
    const bx = { x: t.e + r.x, y: t.f + r.y, w: r.width, h: r.height };
    for (let moved = true; moved;) {
      moved = false;
      for (const o of boxes) {
        if (bx.x < o.x + o.w && o.x < bx.x + bx.w && bx.y < o.y + o.h + 2 && o.y < bx.y + bx.h + 2) {
          bx.y = o.y + o.h + 2;
          moved = true;
        }
      }
    }
    lg.setAttribute('transform', `translate(${t.e.toFixed(1)},${(bx.y - r.y).toFixed(1)})`);
    boxes.push(bx);
  }
  const h = Math.max(size.height, ...boxes.map((o) => o.y + o.h + 8));
  svg.setAttribute('height', h);
  svg.setAttribute('viewBox', `0 0 ${size.width} ${h}`);
  markSelected();
}
const plural = (n, w, one = '', many = 's') => `${n}\u00a0${w}${n === 1 ? one : many}`;
const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

function markSelected() {
  for (const g of document.querySelectorAll('#topology g.node-service')) g.classList.toggle('selected', g.dataset.id === S.service);
  for (const g of document.querySelectorAll('#topology g.edge')) g.classList.toggle('selected', !!S.service && g.dataset.service === S.service);
  for (const tr of document.querySelectorAll('#services-body tr[data-service]')) tr.classList.toggle('selected', tr.dataset.service === S.service);
}

// ----- services -----
const traffic = () => (S.graph?.edges || []).filter((e) => e.requests > 0 || e.request_rate > 0);
const inbound = (host) => traffic().filter((e) => e.service === host);

function renderServices() {
  const box = $('#services-body');
  if (!S.services) return box.replaceChildren(el('p', 'empty', 'Loading…'));
  const list = [...S.services.services].sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  if (!list.length) return box.replaceChildren(el('p', 'empty', 'No services yet — apply some Kubernetes Services to the mesh.'));
  const rows = list.map((s) => {
    const st = inbound(s.host).length ? combine(inbound(s.host)) : null;
    const versions = [...new Set((s.workloads || []).map((w) => w.version).filter(Boolean))];
    return el('tr', { 'data-service': s.host, class: 'clickable', onclick: () => openService(s.host) },
      el('td', null, el('button', { type: 'button', class: 'link', title: s.host }, s.name), s.external ? el('span', 'tag', 'external') : null),
      el('td', null, s.namespace),
      el('td', 'mono', s.vip || '—'),
      el('td', null, (s.ports || []).map((p) => el('span', 'tag', `${p.port} ${p.protocol}`))),
      el('td', null, String((s.workloads || []).length), versions.length ? el('span', 'muted', ` (${versions.join(', ')})`) : null),
      el('td', null, plural((s.routes || []).length, 'route'), ' · ', plural((s.policies || []).length, 'polic', 'y', 'ies')),
      el('td', null, st ? [`${fmtRate(st.rate)}\u00a0rps · `, el('span', { class: st.err > 0 ? 'err-bad' : '' }, `${fmtPct(st.err)}\u00a0err`), ` · p99\u00a0${fmtMs(st.p99).replace(' ', '\u00a0')}`]
        : el('span', 'muted', 'idle')));
  });
  box.replaceChildren(el('div', 'table-wrap', el('table', { id: 'services' },
    el('thead', null, el('tr', null, ['Service', 'Namespace', 'Virtual IP', 'Ports', 'Workloads', 'Rules', `Traffic in (last ${S.horizon})`].map((h) => el('th', null, h)))),
    el('tbody', null, rows))));
}

// ----- detail panel -----
function openService(host) {
  S.service = host;
  if (S.tab !== 'topology' && S.tab !== 'services') S.tab = 'services';
  saveHash();
  renderTabs();
  renderDetail();
  S.sig.detail = null;
  markSelected();
}
function closeDetail() {
  S.service = null;
  saveHash();
  renderTabs();
  renderDetail();
  markSelected();
}

const KIND_HELP = {
  VirtualService: 'routing rules: which version gets which requests',
  DestinationRule: 'what happens once a version is chosen: subsets, TLS, load balancing',
  PeerAuthentication: 'whether callers must use mutual TLS',
  AuthorizationPolicy: 'who may call this service',
};

function resourceList(items, emptyText) {
  if (!items || !items.length) return el('p', 'muted', emptyText);
  return el('ul', 'res-list', items.map((r) => el('li', null,
    el('div', null, el('span', { class: 'kind', title: KIND_HELP[r.kind] || '' }, r.kind), ' ', el('span', 'mono', `${r.namespace}/${r.name}`)),
    KIND_HELP[r.kind] ? el('div', 'muted small', KIND_HELP[r.kind]) : null,
    el('ul', 'summary', (r.summary || []).map((line) => el('li', null, line))))));
}

function renderDetail() {
  const box = $('#detail');
  const host = S.service;
  if (!host) {
    box.hidden = true;
    box.removeAttribute('data-service');
    box.replaceChildren();
    return;
  }
  const s = (S.services?.services || []).find((x) => x.host === host);
  const inb = inbound(host);
  const busy = new Set(inb.map((e) => e.target));
  box.hidden = false;
  box.setAttribute('data-service', host);
  const dl = el('dl', 'facts',
    el('dt', null, 'Host'), el('dd', 'mono', host),
    el('dt', null, 'Namespace'), el('dd', null, s ? s.namespace : host.split('.')[1] || '–'),
    el('dt', null, 'Virtual IP'), el('dd', 'mono', s ? s.vip || 'none (headless)' : '–'),
    el('dt', null, 'Ports'), el('dd', null, s?.ports?.length ? s.ports.map((p) => el('span', 'tag', `${p.name ? p.name + ' ' : ''}${p.port} · ${p.protocol}`)) : '–'));
  if (s && s.external) dl.append(el('dt', null, 'Kind'), el('dd', null, 'external (outside the mesh)'));
  const wls = s?.workloads || [];
  const wlTable = wls.length
    ? el('ul', 'wl-list', wls.map((w) => el('li', null,
      el('div', null, el('b', null, w.name), w.version ? el('span', 'tag', w.version) : null,
        busy.has(wlId(w)) ? el('span', { class: 'state s-synced', title: `receiving traffic in the last ${S.horizon}` }, 'ACTIVE')
          : el('span', { class: 'state s-notsent', title: `no traffic in the last ${S.horizon}` }, 'IDLE')),
      el('div', 'muted small', 'address ', el('span', 'mono', w.address || '—'), ' · service account ', el('span', 'mono', w.service_account || '—')))))
    : el('p', 'muted', 'No workloads are selected by this service.');
  const trafficBox = inb.length
    ? el('table', 'mini', el('thead', null, el('tr', null, ['From', 'To', 'rps', 'err', 'p99', 'mTLS'].map((x) => el('th', null, x)))),
      el('tbody', null, [...inb].sort((a, b) => b.request_rate - a.request_rate).map((e) => el('tr', null,
        el('td', null, e.source === 'unknown' ? 'unknown (no sidecar)' : splitWl(e.source)[0]), el('td', null, splitWl(e.target)[0]),
        el('td', 'num', fmtRate(e.request_rate)), el('td', { class: 'num' + (e.error_rate > 0 ? ' err-bad' : '') }, fmtPct(e.error_rate)),
        el('td', 'num', fmtMs(e.p99_ms)), el('td', null, e.mtls ? el('span', 'ok', 'yes') : el('span', 'muted', 'no'))))))
    : el('p', 'muted', `No inbound traffic in the last ${S.horizon}.`);
  box.replaceChildren(...[
    el('div', 'detail-head',
      el('div', null, el('div', 'muted small', 'service'), el('h2', null, s ? s.name : shortHost(host))),
      el('button', { type: 'button', class: 'close', title: 'Close', 'aria-label': 'Close', onclick: closeDetail }, '×')),
    s ? null : el('p', 'banner banner-warn', 'This service is in the traffic graph but not in the mesh configuration.'),
    dl,
    el('section', 'detail-workloads', el('h3', null, `Workloads (${wls.length})`), wlTable),
    el('section', 'detail-traffic', el('h3', null, `Inbound traffic (last ${S.horizon})`), trafficBox),
    el('section', 'detail-routes', el('h3', null, 'Routes'), resourceList(s?.routes, 'No routing rules — calls are spread evenly over all workloads.')),
    el('section', 'detail-policies', el('h3', null, 'Policies'), resourceList(s?.policies, 'No policies apply to this service.'))].filter((x) => x));
}

// ----- proxies -----
const stateClass = (st) => 's-' + String(st).toLowerCase().replace(/[^a-z]/g, '');

function renderProxies() {
  const table = $('#proxies');
  const un = $('#unenforced');
  const sum = $('#proxies-summary');
  if (!S.syncz) {
    table.replaceChildren();
    sum.textContent = 'Loading…';
    return;
  }
  const unenf = S.syncz.unenforced || [];
  if (changed('unenf', unenf)) {
    un.replaceChildren(unenf.length ? el('div', 'banner banner-error',
      el('b', null, `${unenf.length} security setting${unenf.length > 1 ? 's are' : ' is'} NOT enforced by weft:`),
      el('ul', null, unenf.map((u) => el('li', 'mono', typeof u === 'string' ? u : JSON.stringify(u))))) : '');
  }
  const proxies = [...(S.syncz.proxies || [])].sort((a, b) => String(a.proxy).localeCompare(String(b.proxy)));
  const types = [...SYNC_TYPES];
  if (proxies.some((p) => p.types?.SDS)) types.push('SDS');
  const count = (st) => proxies.filter((p) => Object.values(p.types || {}).some((t) => t.state === st)).length;
  const inSync = proxies.filter((p) => SYNC_TYPES.every((t) => p.types?.[t]?.state === 'SYNCED') && Object.values(p.types).every((t) => t.state === 'SYNCED')).length;
  sum.replaceChildren(...[proxies.length
    ? [`${proxies.length} prox${proxies.length === 1 ? 'y' : 'ies'} connected · `, el('span', 'ok', `${inSync} fully in sync`),
      count('STALE') ? [' · ', el('span', 'warn', `${count('STALE')} waiting for acknowledgement`)] : '',
      count('NACKED') ? [' · ', el('span', 'bad', `${count('NACKED')} rejected a config`)] : '']
    : 'No proxies are connected. Start a workload with a weft sidecar and it will appear here.'].flat(2));
  const head = el('thead', null, el('tr', null, el('th', null, 'Proxy'), el('th', null, 'Node ID'), el('th', null, 'Connected'),
    types.map((t) => el('th', 'c', t))));
  const body = el('tbody', null, proxies.map((p) => el('tr', { 'data-proxy': p.proxy },
    el('td', 'nowrap', el('b', null, p.proxy), p.delta ? el('span', { class: 'tag', title: 'uses the incremental (delta) xDS protocol' }, 'delta') : null),
    el('td', { class: 'mono small nodeid', title: p.node_id }, p.node_id),
    el('td', { class: 'nowrap', title: p.connected_at ? new Date(p.connected_at * 1000).toLocaleString() + ` · connection #${p.connection}` : '' }, fmtAgo(p.connected_at)),
    types.map((t) => {
      const x = p.types?.[t];
      if (!x) {
        if (t === 'SDS') return el('td', { class: 'c sync-absent muted', title: 'this proxy asked for no certificates' }, '—');
        return el('td', { class: 'sync c', 'data-type': t }, el('span', 'state s-notsent', 'NOT SENT'));
      }
      const word = String(x.state || 'NOT SENT').replace(/_/g, ' ');
      const tip = x.nack ? `rejected: ${x.nack}` : `sent v${x.sent_version ?? '–'}, acknowledged v${x.acked_version ?? '–'}, ${x.resources ?? 0} resources`;
      return el('td', { class: 'sync c', 'data-type': t, title: tip }, el('span', { class: 'state ' + stateClass(word) }, word));
    }))));
  table.replaceChildren(head, body);
}

// ----- findings -----
function renderFindings() {
  const ul = $('#findings');
  const sum = $('#findings-summary');
  if (!S.findings) {
    ul.replaceChildren();
    sum.textContent = 'Loading…';
    return;
  }
  const rank = { error: 0, warning: 1, info: 2 };
  const list = [...(S.findings.findings || [])].sort((a, b) => (rank[a.level] ?? 3) - (rank[b.level] ?? 3));
  if (!list.length) {
    sum.replaceChildren();
    ul.replaceChildren(el('li', 'clean', 'No findings — ', el('code', null, 'weft analyze'), ' is clean'));
    return;
  }
  const by = {};
  for (const f of list) by[f.level] = (by[f.level] || 0) + 1;
  sum.textContent = `${list.length} finding${list.length > 1 ? 's' : ''}: ` + Object.entries(by).map(([l, n]) => `${n} ${l}${n > 1 ? 's' : ''}`).join(', ') + '.';
  ul.replaceChildren(...list.map((f) => {
    const lvl = String(f.level || 'info');
    const loc = f.file ? f.file + (f.line != null ? `:${f.line}` : '') : null;
    return el('li', `finding finding-${lvl}`,
      el('div', 'f-head',
        el('span', `badge badge-${lvl}`, lvl),
        f.code ? el('code', 'f-code', f.code) : null,
        f.resource ? el('span', 'f-res', f.resource) : null,
        loc ? el('span', 'f-loc mono', loc) : null),
      el('div', 'f-msg', f.message || ''),
      f.field_path ? el('div', 'f-path muted small', 'field ', el('code', null, f.field_path)) : null);
  }));
}

// ---------- navigation ----------
function setTab(tab) {
  if (!TABS.includes(tab)) return;
  S.tab = tab;
  saveHash();
  renderTabs();
}
function saveHash() {
  const h = '#' + S.tab + (S.service ? '/' + encodeURIComponent(S.service) : '');
  if (location.hash !== h) history.replaceState(null, '', h);
}
function loadHash() {
  const [tab, svc] = location.hash.slice(1).split('/');
  if (TABS.includes(tab)) S.tab = tab;
  S.service = svc ? decodeURIComponent(svc) : null;
}

function init() {
  loadHash();
  const sel = $('#horizon');
  sel.value = S.horizon;
  sel.addEventListener('change', () => {
    S.horizon = sel.value;
    refresh();
  });
  const idle = $('#show-idle');
  idle.checked = S.showIdle;
  idle.addEventListener('change', () => {
    S.showIdle = idle.checked;
    render();
  });
  for (const b of document.querySelectorAll('[data-tab]')) b.addEventListener('click', () => setTab(b.dataset.tab));
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && S.service) closeDetail(); });
  window.addEventListener('hashchange', () => { loadHash(); render(); });
  render();
  refresh();
}

document.addEventListener('DOMContentLoaded', init);
