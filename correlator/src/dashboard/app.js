// The FINCORP dashboard: polls the correlator's JSON API (/api/v1) every two
// seconds and renders incidents, one incident in depth, hosts, silences and
// the automation controls. No framework and nothing fetched from elsewhere.
// Every value from the API is inserted as text, never parsed as HTML.
'use strict';

const POLL_MS = 2000;
const HIDDEN_POLL_MS = 10000;
const TOKEN_KEY = 'fincorp.api-token';
const NAME_KEY = 'fincorp.operator-name';
const SEVERITY_RANK = { critical: 3, warning: 2, info: 1 };

// ---------------------------------------------------------------- helpers

/** Builds an element: h('a', {href: '#/'}, 'text', child, [more]). */
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const $ = (sel) => document.querySelector(sel);

function pad(n) { return String(n).padStart(2, '0'); }

/** Local time as YYYY-MM-DD HH:MM:SS. */
function fmtTime(ms) {
  if (ms === null || ms === undefined) return '';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A duration in words, two units at most: 42s, 3m 12s, 5m, 2h 5m, 3d 4h. */
function fmtDuration(ms) {
  const two = (big, bigUnit, small, smallUnit) => (small ? `${big}${bigUnit} ${small}${smallUnit}` : `${big}${bigUnit}`);
  let s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  let m = Math.floor(s / 60); s %= 60;
  if (m < 60) return two(m, 'm', s, 's');
  let hrs = Math.floor(m / 60); m %= 60;
  if (hrs < 24) return two(hrs, 'h', m, 'm');
  const d = Math.floor(hrs / 24); hrs %= 24;
  return two(d, 'd', hrs, 'h');
}

/** A <time> whose text is the age since `ms`, kept current by tickAges(). */
function age(ms) {
  if (ms === null || ms === undefined) return '';
  return h('time', { datetime: new Date(ms).toISOString(), title: fmtTime(ms), dataset: { since: ms } },
    fmtDuration(Date.now() - ms));
}

/** An absolute time as <time>. */
function when(ms) {
  if (ms === null || ms === undefined) return '';
  return h('time', { datetime: new Date(ms).toISOString() }, fmtTime(ms));
}

function tickAges() {
  const now = Date.now();
  for (const t of document.querySelectorAll('time[data-since]')) {
    t.textContent = fmtDuration(now - Number(t.dataset.since));
  }
}

function badge(kind, value) {
  return h('span', { class: `badge ${kind}-${value}` }, String(value).replace(/_/g, ' '));
}

function num(v, digits) {
  return (v === null || v === undefined) ? '' : Number(v).toFixed(digits);
}

function fmtBytes(b) {
  if (b === null || b === undefined) return '';
  if (b >= 1 << 30) return `${(b / (1 << 30)).toFixed(1)} GiB`;
  return `${(b / (1 << 20)).toFixed(1)} MiB`;
}

function fmtWindow(ms) {
  return (ms === null || ms === undefined) ? '' : fmtDuration(ms);
}

function table(caption, headers, rows, attrs) {
  return h('table', attrs || {},
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows));
}

function empty(text) { return h('p', { class: 'empty' }, text); }

function section(id, title, ...body) {
  return h('section', { id, 'aria-labelledby': `${id}-title` },
    h('h2', { id: `${id}-title` }, title), body);
}

function incidentHref(id) { return `#/incidents/${encodeURIComponent(id)}`; }

function compactJson(v, max) {
  let s = typeof v === 'string' ? v : JSON.stringify(v);
  if (s === undefined) s = '';
  return (max && s.length > max) ? `${s.slice(0, max - 1)}…` : s;
}

// ---------------------------------------------------------------- the API

class ApiFailure extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

let tokenPrompt = null;     // the open prompt's promise, shared by all 401s
let tokenDeclined = false;  // cancelled: don't ask again until the button

/** Calls the JSON API; on 401 asks for a token once and retries. */
async function api(path, { method = 'GET', body } = {}) {
  for (;;) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, cache: 'no-store', credentials: 'omit',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiFailure(0, 'cannot reach the correlator');
    }
    if (resp.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      await askToken(token ? 'The correlator did not accept that token. Enter another.'
        : 'This correlator needs an API token.');
      continue;
    }
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = (data && data.error && data.error.message) || text || resp.statusText;
      throw new ApiFailure(resp.status, msg);
    }
    return data;
  }
}

function askToken(why) {
  if (tokenPrompt) return tokenPrompt;
  if (tokenDeclined) return Promise.reject(new ApiFailure(401, 'no API token given'));
  const dialog = $('#token-dialog');
  $('#token-why').textContent = why;
  $('#token-input').value = '';
  tokenPrompt = new Promise((resolve, reject) => {
    const done = (ok) => {
      $('#token-form').onsubmit = null;
      $('#token-cancel').onclick = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      tokenPrompt = null;
      if (ok) {
        tokenDeclined = false;
        $('#token-button').hidden = true;
        resolve();
      } else {
        tokenDeclined = true;
        $('#token-button').hidden = false;
        reject(new ApiFailure(401, 'no API token given'));
      }
    };
    $('#token-form').onsubmit = (ev) => {
      ev.preventDefault();
      const t = $('#token-input').value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      done(true);
    };
    $('#token-cancel').onclick = () => done(false);
    dialog.oncancel = (ev) => { ev.preventDefault(); done(false); };
    dialog.showModal();
    $('#token-input').focus();
  });
  return tokenPrompt;
}

// ------------------------------------------------------ confirmation dialog

/**
 * Asks for a name and a reason, then runs `action({by, reason})`. The dialog
 * stays open with the error when the action fails. Resolves to true when it
 * ran, false when cancelled.
 */
function confirmAction({ title, text, ok, danger, action }) {
  const dialog = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = ok;
  $('#confirm-ok').className = danger ? 'danger' : 'primary';
  $('#confirm-error').textContent = '';
  $('#confirm-by').value = localStorage.getItem(NAME_KEY) || '';
  $('#confirm-reason').value = '';
  return new Promise((resolve) => {
    const finish = (ran) => {
      $('#confirm-form').onsubmit = null;
      $('#confirm-cancel').onclick = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      resolve(ran);
      refreshNow();
    };
    $('#confirm-form').onsubmit = async (ev) => {
      ev.preventDefault();
      const by = $('#confirm-by').value.trim();
      const reason = $('#confirm-reason').value.trim();
      if (!by || !reason) {
        $('#confirm-error').textContent = 'Give your name and a reason.';
        return;
      }
      localStorage.setItem(NAME_KEY, by);
      $('#confirm-ok').disabled = true;
      try {
        await action({ by, reason });
        finish(true);
      } catch (e) {
        $('#confirm-error').textContent = `Not done: ${e.message}`;
      } finally {
        $('#confirm-ok').disabled = false;
      }
    };
    $('#confirm-cancel').onclick = () => finish(false);
    dialog.oncancel = (ev) => { ev.preventDefault(); finish(false); };
    dialog.showModal();
    ($('#confirm-by').value ? $('#confirm-reason') : $('#confirm-by')).focus();
  });
}

// ---------------------------------------------------------------- header

let killSwitch = null;

async function refreshKillSwitch() {
  const ks = await api('/api/v1/automation/kill-switch');
  killSwitch = ks;
  const box = $('#kill-switch');
  box.dataset.on = String(ks.on);
  $('#kill-switch-state').textContent = ks.on ? 'ON' : 'OFF';
  box.title = ks.changed_at_ms
    ? `${ks.on ? 'Turned on' : 'Turned off'} by ${ks.changed_by || '?'} at ${fmtTime(ks.changed_at_ms)}` +
      (ks.reason ? `: ${ks.reason}` : '')
    : 'Automation runs playbooks';
  const button = $('#kill-switch-toggle');
  button.disabled = false;
  button.textContent = ks.on ? 'Resume automation…' : 'Stop all automation…';
  button.className = ks.on ? 'primary' : 'danger';
}

function toggleKillSwitch() {
  if (!killSwitch) return;
  const on = !killSwitch.on;
  confirmAction({
    title: on ? 'Turn the kill switch ON?' : 'Turn the kill switch OFF?',
    text: on
      ? 'All automation halts at once: no playbook run starts, and running runs stop before their next step.'
      : 'Automation resumes: playbooks run again for new incidents.',
    ok: on ? 'Turn kill switch on' : 'Turn kill switch off',
    danger: on,
    action: ({ by, reason }) => api('/api/v1/automation/kill-switch',
      { method: 'POST', body: { on, by, reason } }),
  });
}

function setConnection(error) {
  const conn = $('#conn');
  const text = error ? `Not updating: ${error}` : 'Live';
  if (conn.textContent !== text) conn.textContent = text;
  conn.className = error ? 'bad' : 'ok';
  if (!error) $('#updated').textContent = `updated ${fmtTime(Date.now()).slice(11)}`;
}

// ---------------------------------------------------------------- views

/** Incidents: open ones live, and the recently resolved. */
const incidentsView = {
  title: 'Incidents',
  known: null, // ids of active incidents seen, for announcements
  mount(main) {
    this.known = null;
    main.append(
      section('open-incidents', 'Open incidents', h('div', { class: 'body' }, empty('Loading…'))),
      section('recent-incidents', 'Recently resolved', h('div', { class: 'body' })));
  },
  load() { return api('/api/v1/incidents?limit=100'); },
  render(data) {
    const all = data.incidents || [];
    const active = all.filter((i) => ['open', 'acknowledged', 'remediating'].includes(i.state));
    active.sort((a, b) => (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) ||
      b.opened_at_ms - a.opened_at_ms);
    const recent = all.filter((i) => !active.includes(i)).slice(0, 15);
    const openBody = $('#open-incidents .body');
    openBody.replaceChildren(active.length ? incidentTable('Open incidents', active)
      : empty('No open incidents.'));
    $('#open-incidents-title').textContent = `Open incidents (${active.length})`;
    $('#recent-incidents .body').replaceChildren(recent.length ? incidentTable('Recently resolved incidents', recent)
      : empty('None.'));
    document.title = active.length ? `(${active.length}) FINCORP AI Operator` : 'FINCORP AI Operator';
    const ids = new Set(active.map((i) => i.id));
    if (this.known) {
      const fresh = active.filter((i) => !this.known.has(i.id));
      if (fresh.length) {
        $('#announce').textContent = fresh.map((i) => `New ${i.severity} incident: ${i.title}`).join('. ');
      }
    }
    this.known = ids;
  },
};

function incidentTable(caption, incidents) {
  return table(caption,
    ['Severity', 'Incident', 'Host', 'App', 'State', 'Age', 'Alerts', 'Updated'],
    incidents.map((i) => h('tr', { dataset: { incidentId: i.id, state: i.state }, class: `sev-row-${i.severity}` },
      h('td', {}, badge('sev', i.severity)),
      h('td', {}, h('a', { class: 'incident-link', href: incidentHref(i.id) }, i.title),
        h('div', { class: 'sub' }, i.id)),
      h('td', { class: 'host' }, i.host),
      h('td', { class: 'app' }, i.root_app && i.root_app !== i.app ? [i.app || '', h('div', { class: 'sub' }, `root cause: ${i.root_app}`)] : (i.app || '—')),
      h('td', {}, badge('state', i.state), i.acknowledged_by ? h('div', { class: 'sub' }, `ack: ${i.acknowledged_by}`) : ''),
      h('td', {}, age(i.opened_at_ms)),
      h('td', { class: 'num' }, i.alert_count),
      h('td', {}, age(i.updated_at_ms), ' ago'))),
    { class: 'incidents' });
}

/** One incident: summary, tickets, runs with steps, timeline, alerts. */
const incidentView = {
  title: 'Incident',
  mount(main, route) {
    main.append(h('p', {}, h('a', { href: '#/' }, '← All incidents')),
      h('div', { id: 'incident', dataset: { incidentId: route.id } }, empty('Loading…')));
  },
  load(route) { return api(`/api/v1/incidents/${encodeURIComponent(route.id)}`); },
  render(d) {
    document.title = `${d.title} · FINCORP AI Operator`;
    $('#incident').replaceChildren(
      incidentSummary(d),
      section('tickets', `Tickets (${d.tickets.length})`,
        d.tickets.length ? table('Tickets', ['System', 'Number', 'sys_id', 'Created'],
          d.tickets.map((t) => h('tr', { class: 'ticket' },
            h('td', {}, t.system === 'servicenow' ? 'ServiceNow' : t.system),
            h('td', { class: 'ticket-number' }, h('strong', {}, t.number)),
            h('td', { class: 'mono' }, t.sys_id),
            h('td', {}, when(t.created_at_ms)))))
          : empty('No ticket yet.')),
      section('runs', `Playbook runs (${d.runs.length})`,
        d.runs.length ? [...d.runs].sort((a, b) => (a.created_at_ms || a.started_at_ms) - (b.created_at_ms || b.started_at_ms)).map(runCard)
          : empty('No playbook ran for this incident.')),
      section('timeline-section', 'Timeline',
        h('ol', { id: 'timeline', class: 'timeline' }, d.timeline.map(timelineEntry))),
      section('alerts', `Alerts (${d.alerts.length})`,
        table('Alerts', ['Alert', 'Source', 'Severity', 'Status', 'Value', 'Host / app', 'Summary', 'Started', 'Ended'],
          d.alerts.map((a) => h('tr', { class: 'alert' },
            h('td', {}, a.name, a.flapping ? h('div', { class: 'sub warn' }, 'flapping') : ''),
            h('td', {}, a.source),
            h('td', {}, badge('sev', a.severity)),
            h('td', {}, badge('alert', a.status)),
            h('td', { class: 'num' }, a.metric ? `${a.metric} ${num(a.value, 1)} (> ${num(a.threshold, 1)})` : ''),
            h('td', {}, a.host, a.app ? h('div', { class: 'sub' }, a.app) : ''),
            h('td', {}, a.summary),
            h('td', {}, when(a.starts_at_ms)),
            h('td', {}, when(a.ends_at_ms)))))));
  },
};

function incidentSummary(d) {
  const active = ['open', 'acknowledged', 'remediating'].includes(d.state);
  const act = (verb, label, danger) => h('button', {
    type: 'button', class: danger ? 'danger' : '', id: `incident-${verb}`,
    onclick: () => confirmAction({
      title: `${label} ${d.id}?`,
      text: d.title,
      ok: label,
      danger,
      action: ({ by, reason }) => api(`/api/v1/incidents/${encodeURIComponent(d.id)}/${verb}`,
        { method: 'POST', body: { by, reason } }),
    }),
  }, `${label}…`);
  const row = (k, v) => (v === '' || v === null || v === undefined) ? [] : [h('dt', {}, k), h('dd', {}, v)];
  return h('section', { id: 'summary', 'aria-labelledby': 'incident-title' },
    h('h1', { id: 'incident-title' }, badge('sev', d.severity), ' ', d.title),
    h('dl', { class: 'facts' },
      row('Incident', h('span', { class: 'mono' }, d.id)),
      row('State', [badge('state', d.state), d.acknowledged_by ? ` by ${d.acknowledged_by}` : '']),
      row('Host', d.host),
      row('App', d.app || '—'),
      row('Root cause app', d.root_app || ''),
      row('Opened', [when(d.opened_at_ms), ' (', age(d.opened_at_ms), ' ago)']),
      row('Resolved', d.resolved_at_ms ? when(d.resolved_at_ms) : ''),
      row('Group key', h('span', { class: 'mono' }, d.group_key)),
      row('Alerts', d.alert_count),
      row('Reopened', d.reopened ? `${d.reopened} times` : '')),
    active ? h('div', { class: 'actions' },
      d.state === 'open' ? act('ack', 'Acknowledge', false) : '',
      act('resolve', 'Resolve', false)) : '');
}

/** What a step produced, in one line: before → after, a ticket number... */
function resultSummary(step) {
  const r = step.result;
  if (r === null || r === undefined) return '';
  if (typeof r !== 'object') return String(r);
  if (r.before !== undefined && r.after !== undefined) {
    return `${r.before} → ${r.after}` + (r.file ? ` (${r.file})` : '');
  }
  if (r.number) return `ticket ${r.number}` + (r.created === false ? ' (existing)' : '');
  if (r.message) return String(r.message);
  return compactJson(r, 160);
}

function paramList(params) {
  if (params === null || params === undefined) return '';
  if (typeof params !== 'object' || Array.isArray(params)) return h('code', {}, compactJson(params));
  return h('dl', { class: 'kv' }, Object.entries(params).map(([k, v]) => [
    h('dt', {}, k), h('dd', {}, typeof v === 'string' ? v : compactJson(v)),
  ]));
}

function runCard(run) {
  const took = run.finished_at_ms ? ` (took ${fmtDuration(run.finished_at_ms - run.started_at_ms)})` : '';
  const target = [run.target_host, run.target_app].filter(Boolean).join(' / ');
  return h('article', { class: 'run', dataset: { runId: run.id, playbook: run.playbook, state: run.state } },
    h('h3', {}, run.playbook, ' ', badge('state', run.state), run.dry_run ? ' (dry run)' : ''),
    h('p', { class: 'sub' },
      `run ${run.id} · ${run.trigger || 'trigger unknown'}`,
      target ? ` · target ${target}` : '',
      run.depth ? ` · causal depth ${run.depth}` : '',
      ' · started ', when(run.started_at_ms), took),
    run.reason ? h('p', { class: 'reason' }, `Reason: ${run.reason}`) : '',
    run.approval ? h('p', { class: 'reason' },
      `Waiting for approval at step ${run.approval.step_id}: ${run.approval.prompt} (expires ${fmtTime(run.approval.expires_at_ms)})`) : '',
    table(`Steps of run ${run.id}`, ['Step', 'Action', 'State', 'Parameters', 'Result'],
      run.steps.map((s) => h('tr', { class: 'step', dataset: { stepId: s.id, action: s.action, state: s.state } },
        h('td', {}, h('strong', {}, s.id), s.phase === 'rollback' ? h('div', { class: 'sub' }, 'rollback') : ''),
        h('td', { class: 'mono' }, s.action),
        h('td', { class: 'step-state' }, badge('state', s.state),
          s.attempts > 1 ? h('div', { class: 'sub' }, `${s.attempts} attempts`) : '',
          s.finished_at_ms && s.started_at_ms ? h('div', { class: 'sub' }, fmtDuration(s.finished_at_ms - s.started_at_ms)) : ''),
        h('td', { class: 'step-params' }, paramList(s.params)),
        h('td', { class: s.error ? 'step-result error' : 'step-result' },
          s.error ? s.error : resultSummary(s),
          s.result !== null && s.result !== undefined
            ? h('details', {}, h('summary', {}, 'full result'), h('pre', {}, JSON.stringify(s.result, null, 2)))
            : ''))),
      { class: 'steps' }));
}

/** The grouping reason of a timeline entry, if it has one. */
function groupingReason(message, data) {
  const r = data && (data.rule ? data : data.reason);
  if (!r || typeof r !== 'object' || !r.rule) return '';
  const parts = [`rule ${r.rule}`];
  if (r.key) parts.push(`key ${r.key}`);
  if (r.window_ms) parts.push(`window ${fmtWindow(r.window_ms)}`);
  // The message usually says the reason in words already.
  const detail = r.detail && !String(message).includes(r.detail) ? `${r.detail} ` : '';
  return h('div', { class: 'why' }, h('span', { class: 'label' }, 'Why: '), detail,
    h('span', { class: 'sub' }, parts.join(' · ')));
}

function timelineEntry(t) {
  const data = t.data || {};
  const result = data.result && data.result.before !== undefined && data.result.after !== undefined
    ? h('div', { class: 'change' }, `${data.result.before} → ${data.result.after}`) : '';
  return h('li', { dataset: { kind: t.kind } },
    h('span', { class: 'at' }, when(t.at_ms)),
    h('span', { class: `kind kind-${t.kind}` }, t.kind.replace(/_/g, ' ')),
    h('span', { class: 'msg' }, t.message, result, groupingReason(t.message, data)));
}

/** Hosts with their agents' last samples and the apps' health. */
const hostsView = {
  title: 'Hosts',
  mount(main) {
    main.append(
      section('hosts', 'Hosts and agents', h('div', { class: 'body' }, empty('Loading…'))),
      section('apps', 'Apps', h('div', { class: 'body' })));
  },
  load() { return api('/api/v1/hosts'); },
  render(data) {
    const hosts = data.hosts || [];
    $('#hosts .body').replaceChildren(hosts.length
      ? table('Hosts', ['Host', 'Agent', 'Last seen', 'CPU', 'Memory', 'Load (1 min)'],
        hosts.map((x) => h('tr', { dataset: { host: x.host } },
          h('th', { scope: 'row' }, x.host),
          h('td', {}, x.stale ? badge('health', 'stale') : badge('health', 'reporting')),
          h('td', {}, age(x.last_seen_ms), ' ago'),
          h('td', { class: 'num' }, `${num(x.cpu_pct, 1)}%`),
          h('td', { class: 'num' }, x.mem_used_pct === null ? '' : `${num(x.mem_used_pct, 1)}%`),
          h('td', { class: 'num' }, num(x.load1, 2)))))
      : empty(`No agent has reported yet (samples older than ${fmtDuration(data.stale_after_ms || 0)} count as stale).`));
    const apps = hosts.flatMap((x) => x.apps.map((a) => ({ host: x.host, ...a })));
    $('#apps .body').replaceChildren(apps.length
      ? table('Apps', ['App', 'Host', 'Health', 'Processes', 'CPU (of one core)', 'Memory (RSS)', 'Probe'],
        apps.map((a) => h('tr', { dataset: { app: a.app, host: a.host, health: a.health } },
          h('th', { scope: 'row' }, a.app),
          h('td', {}, a.host),
          h('td', {}, badge('health', a.health), a.detail ? h('div', { class: 'sub' }, a.detail) : ''),
          h('td', { class: 'num' }, a.processes),
          h('td', { class: 'num' }, `${num(a.cpu_pct, 1)}%`),
          h('td', { class: 'num' }, fmtBytes(a.rss_bytes)),
          h('td', {}, a.probe_ok === null || a.probe_ok === undefined ? '—'
            : a.probe_ok ? `ok ${a.latency_ms === null ? '' : `${num(a.latency_ms, 1)} ms`}` : 'failing'))))
      : empty('No app samples.'));
  },
};

/** Silences: the list, a form to add one, and expiry. */
const silencesView = {
  title: 'Silences',
  mount(main) {
    const form = h('form', { id: 'silence-form', class: 'stacked' },
      h('label', { for: 'silence-matchers' }, 'Matchers, one per line (name=value, name!=value, name=~regex, name!~regex)'),
      h('textarea', { id: 'silence-matchers', rows: 3, required: true, placeholder: 'host=web01\napp=~FINCORP-APP-.*' }),
      h('label', { for: 'silence-duration' }, 'Duration'),
      h('input', { id: 'silence-duration', value: '2h', required: true }),
      h('label', { for: 'silence-comment' }, 'Comment'),
      h('input', { id: 'silence-comment', required: true }),
      h('label', { for: 'silence-by' }, 'Your name'),
      h('input', { id: 'silence-by', maxlength: 128, value: localStorage.getItem(NAME_KEY) || '', required: true }),
      h('p', { id: 'silence-error', class: 'error', role: 'alert' }),
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Add silence')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const by = $('#silence-by').value.trim();
      const body = {
        matchers: $('#silence-matchers').value.split('\n').map((s) => s.trim()).filter(Boolean),
        duration: $('#silence-duration').value.trim(),
        comment: $('#silence-comment').value.trim(),
        created_by: by,
      };
      try {
        await api('/api/v1/silences', { method: 'POST', body });
        localStorage.setItem(NAME_KEY, by);
        $('#silence-error').textContent = '';
        $('#silence-matchers').value = '';
        $('#silence-comment').value = '';
        refreshNow();
      } catch (e) {
        $('#silence-error').textContent = `Not added: ${e.message}`;
      }
    });
    main.append(
      section('silences', 'Silences', h('div', { class: 'body' }, empty('Loading…'))),
      h('details', { class: 'panel', id: 'silence-form-panel' }, h('summary', {}, 'Add a silence'), form));
  },
  load() { return api('/api/v1/silences'); },
  render(data) {
    const list = data.silences || [];
    $('#silences .body').replaceChildren(list.length
      ? table('Silences', ['Matchers', 'Active', 'When', 'By', 'Comment', ''],
        list.map((s) => h('tr', { dataset: { silenceId: s.id } },
          h('td', {}, h('ul', { class: 'plain mono' }, s.matchers.map((m) => h('li', {}, m)))),
          h('td', {}, s.expired_at_ms ? badge('health', 'expired') : s.active ? badge('health', 'active') : badge('health', 'inactive')),
          h('td', {}, s.schedule
            ? `every "${s.schedule}" for ${fmtWindow(s.duration_ms)}${s.until_ms ? ` until ${fmtTime(s.until_ms)}` : ''}`
            : [when(s.starts_at_ms), ' – ', when(s.expired_at_ms || s.ends_at_ms)]),
          h('td', {}, s.created_by),
          h('td', {}, s.comment),
          h('td', {}, s.expired_at_ms ? '' : h('button', {
            type: 'button',
            onclick: () => confirmAction({
              title: 'Expire this silence?',
              text: s.matchers.join(', '),
              ok: 'Expire now',
              action: ({ by }) => api(`/api/v1/silences/${encodeURIComponent(s.id)}?by=${encodeURIComponent(by)}`,
                { method: 'DELETE' }),
            }),
          }, 'Expire…')))))
      : empty('No silences.'));
  },
};

/** Automation: kill switch, breakers, runs waiting for approval, playbooks. */
const automationView = {
  title: 'Automation',
  mount(main) {
    main.append(
      section('automation-state', 'Kill switch', h('div', { class: 'body' }, empty('Loading…'))),
      section('approvals', 'Runs awaiting approval', h('div', { class: 'body' })),
      section('breakers', 'Tripped circuit breakers', h('div', { class: 'body' })),
      section('playbooks', 'Loaded playbooks', h('div', { class: 'body' })));
  },
  async load() {
    const [status, waiting] = await Promise.all([
      api('/api/v1/automation'), api('/api/v1/runs?state=awaiting_approval')]);
    return { status, waiting: waiting.runs || [] };
  },
  render({ status, waiting }) {
    const ks = status.kill_switch;
    $('#automation-state .body').replaceChildren(
      h('p', { class: ks.on ? 'big bad' : 'big ok' },
        ks.on ? 'ON: all automation is halted.' : 'OFF: playbooks run automatically.'),
      ks.changed_at_ms ? h('p', {}, `Last changed by ${ks.changed_by || '?'} at ${fmtTime(ks.changed_at_ms)}`,
        ks.reason ? `: ${ks.reason}` : '') : '',
      h('p', {}, `${status.active_runs} run(s) pending, running or awaiting approval.`),
      h('button', { type: 'button', class: ks.on ? 'primary' : 'danger', onclick: toggleKillSwitch },
        ks.on ? 'Resume automation…' : 'Stop all automation…'));
    const decide = (run, verb, label) => h('button', {
      type: 'button', class: verb === 'reject' ? 'danger' : 'primary',
      onclick: () => confirmAction({
        title: `${label} run ${run.id}?`,
        text: run.approval ? run.approval.prompt : run.playbook,
        ok: label,
        danger: verb === 'reject',
        action: ({ by, reason }) => api(`/api/v1/runs/${encodeURIComponent(run.id)}/${verb}`,
          { method: 'POST', body: { by, reason } }),
      }),
    }, `${label}…`);
    $('#approvals .body').replaceChildren(waiting.length
      ? table('Runs awaiting approval', ['Playbook', 'Incident', 'Target', 'Waiting for', 'Expires', ''],
        waiting.map((r) => h('tr', { dataset: { runId: r.id } },
          h('td', {}, r.playbook, h('div', { class: 'sub' }, r.id)),
          h('td', {}, r.incident_id ? h('a', { href: incidentHref(r.incident_id) }, r.incident_id) : '—'),
          h('td', {}, [r.target_host, r.target_app].filter(Boolean).join(' / ')),
          h('td', {}, r.approval ? `${r.approval.step_id}: ${r.approval.prompt}` : ''),
          h('td', {}, r.approval ? when(r.approval.expires_at_ms) : ''),
          h('td', { class: 'buttons' }, decide(r, 'approve', 'Approve'), decide(r, 'reject', 'Reject')))))
      : empty('None.'));
    $('#breakers .body').replaceChildren(status.breakers.length
      ? table('Tripped circuit breakers', ['Breaker', 'Reason', 'Tripped', 'By run'],
        status.breakers.map((b) => h('tr', {},
          h('td', { class: 'mono' }, b.key),
          h('td', {}, b.reason),
          h('td', {}, when(b.tripped_at_ms)),
          h('td', { class: 'mono' }, b.run_id || ''))))
      : empty('None: every playbook may run.'));
    $('#playbooks .body').replaceChildren(status.playbooks.length
      ? table('Loaded playbooks', ['Playbook', 'Trigger', 'Guardrails', 'Steps'],
        status.playbooks.map((p) => h('tr', {},
          h('th', { scope: 'row' }, p.name, p.mutating ? h('div', { class: 'sub' }, 'mutating') : '',
            p.description ? h('div', { class: 'sub' }, p.description) : ''),
          h('td', {}, p.trigger),
          h('td', {}, h('ul', { class: 'plain' }, p.guardrails.map((g) => h('li', {}, g)))),
          h('td', {}, h('ol', { class: 'plain' }, p.steps.map((s) => h('li', {}, s)))))))
      : empty('No playbooks loaded.'));
  },
};

const VIEWS = {
  incidents: incidentsView,
  incident: incidentView,
  hosts: hostsView,
  silences: silencesView,
  automation: automationView,
};

// ---------------------------------------------------------------- routing and polling

const app = { route: null, gen: 0, timer: null, lastJson: null };

function parseRoute() {
  const hash = location.hash || '#/';
  if (!hash.startsWith('#/')) return null;
  const parts = hash.slice(2).split('/').map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } });
  if (parts[0] === 'incidents' && parts[1]) return { view: 'incident', id: parts[1] };
  if (VIEWS[parts[0]] && parts[0] !== 'incident') return { view: parts[0] };
  return { view: 'incidents' };
}

function showRoute(ev) {
  const route = parseRoute();
  if (!route) return; // an in-page anchor, not a view
  app.route = route;
  app.lastJson = null;
  const main = $('#main');
  main.replaceChildren();
  const view = VIEWS[route.view];
  document.title = `${view.title} · FINCORP AI Operator`;
  // The incident page has its own <h1>; the others get one for screen readers.
  if (route.view !== 'incident') main.append(h('h1', { class: 'visually-hidden' }, view.title));
  view.mount(main, route);
  // After following a link, reading starts at the new content.
  if (ev) main.focus({ preventScroll: true });
  for (const a of document.querySelectorAll('nav a[data-nav]')) {
    const current = a.dataset.nav === route.view || (route.view === 'incident' && a.dataset.nav === 'incidents');
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  refreshNow();
}

function refreshNow() {
  clearTimeout(app.timer);
  poll();
}

async function poll() {
  const gen = ++app.gen;
  const route = app.route;
  const view = VIEWS[route.view];
  let error = null;
  const [ks, data] = await Promise.allSettled([refreshKillSwitch(), view.load(route)]);
  if (gen !== app.gen) return; // a newer poll or another view took over
  if (data.status === 'fulfilled') {
    const json = JSON.stringify(data.value);
    if (json !== app.lastJson) {
      app.lastJson = json;
      try {
        view.render(data.value, route);
      } catch (e) {
        error = `cannot show this data (${e.message})`;
      }
    }
  } else {
    const e = data.reason;
    error = e instanceof ApiFailure ? `${e.status ? `HTTP ${e.status}: ` : ''}${e.message}` : String(e);
    if (e instanceof ApiFailure && e.status === 404 && route.view === 'incident') {
      $('#incident').replaceChildren(h('p', { class: 'error' }, e.message));
    }
  }
  if (!error && ks.status === 'rejected') error = `kill switch: ${ks.reason.message}`;
  setConnection(error);
  app.timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  $('#kill-switch-toggle').addEventListener('click', toggleKillSwitch);
  $('#token-button').addEventListener('click', () => {
    tokenDeclined = false;
    askToken('This correlator needs an API token.').then(refreshNow, () => {});
  });
  $('#skip-link').addEventListener('click', (ev) => {
    ev.preventDefault();
    $('#main').focus();
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshNow(); });
  window.addEventListener('hashchange', showRoute);
  setInterval(tickAges, 1000);
  showRoute();
});
