// workq dashboard: plain JavaScript over this server's /api/v1, live through one EventSource.
//
// Every piece of data reaches the DOM as text (textContent, text nodes, attribute values),
// never as markup: job commands, logs, labels and worker names are whatever users typed.
(function () {
  'use strict';

  const API = '/api/v1';
  // Refreshes are batched: at most one round per this many milliseconds (4 per second), so a
  // burst of events (a thousand jobs finishing) costs a few requests, not thousands.
  const MIN_GAP_MS = 250;
  // Events can be missed (a reconnect, a store without change signals) and ages go stale on
  // their own, so the visible parts are also refreshed this often.
  const SAFETY_POLL_MS = 15000;
  // The chart changes by the minute; more often would only repeat the same query.
  const THROUGHPUT_GAP_MS = 10000;
  const PAGE_SIZE = 50;
  // A log view keeps at most this much text so a chatty job cannot exhaust the tab's memory.
  const LOG_MAX_CHARS = 2000000;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (sel) => document.querySelector(sel);

  // ---- DOM helpers: elements from data, text only ----

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    setProps(e, props);
    for (const c of children) add(e, c);
    return e;
  }

  function svg(tag, props) {
    const e = document.createElementNS(SVG_NS, tag);
    setProps(e, props);
    return e;
  }

  function setProps(e, props) {
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k === 'className' ? 'class' : k, v === true ? '' : String(v));
    }
  }

  function add(parent, c) {
    if (c === undefined || c === null || c === false) return;
    if (Array.isArray(c)) {
      c.forEach((x) => add(parent, x));
      return;
    }
    // A string becomes a text node, so markup in it stays text.
    parent.append(c instanceof Node ? c : String(c));
  }

  function clear(node) {
    node.replaceChildren();
  }

  // ---- formatting ----

  function ms(iso) {
    if (!iso) return null;
    const t = Date.parse(iso);
    return Number.isNaN(t) ? null : t;
  }

  function fmtDuration(millis) {
    if (millis === null || millis === undefined || Number.isNaN(millis)) return '—';
    if (millis < 0) millis = 0;
    if (millis < 1000) return Math.round(millis) + 'ms';
    const s = Math.floor(millis / 1000);
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + String(s % 60).padStart(2, '0') + 's';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + String(m % 60).padStart(2, '0') + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }

  function fmtAge(iso) {
    const t = ms(iso);
    if (t === null) return '—';
    const d = Date.now() - t;
    if (d < 0) return 'in ' + fmtDuration(-d);
    if (d < 2000) return 'just now';
    return fmtDuration(d).split(' ')[0] + ' ago';
  }

  function fmtTime(iso) {
    const t = ms(iso);
    return t === null ? '—' : new Date(t).toLocaleString();
  }

  // A time cell: the age, with the exact local time on hover and for screen readers.
  function timeEl(iso) {
    if (!iso) return el('span', { className: 'muted', text: '—' });
    return el('time', { datetime: iso, title: fmtTime(iso), text: fmtAge(iso) });
  }

  function span(startIso, endIso) {
    const a = ms(startIso);
    if (a === null) return null;
    const b = endIso ? ms(endIso) : Date.now();
    return b === null ? null : b - a;
  }

  // The command as a shell would take it back: `sh -c` jobs show their script, other argv
  // elements are quoted when they need it.
  function commandText(argv) {
    if (!Array.isArray(argv)) return '';
    if (argv.length === 3 && argv[0] === 'sh' && argv[1] === '-c') return argv[2];
    return argv
      .map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'"))
      .join(' ');
  }

  const JOB_TONES = {
    queued: 'info', scheduled: 'info', waiting: 'info', running: 'warn',
    succeeded: 'ok', failed: 'bad', cancelled: '',
  };
  const WORKER_TONES = {
    busy: 'ok', idle: 'ok', running: 'ok', starting: 'warn', paused: 'warn', draining: 'warn',
    stopped: '', dead: 'bad', 'crash-looping': 'bad', hung: 'bad',
  };
  const ALARMING = new Set(['dead', 'crash-looping', 'hung']);
  const CANCELLABLE = new Set(['queued', 'scheduled', 'waiting', 'running']);
  const RETRYABLE = new Set(['failed', 'cancelled']);
  const WORKER_LIVE = new Set(['busy', 'idle', 'running', 'starting', 'paused', 'draining', 'hung']);

  function badge(text, tone) {
    return el('span', { className: 'badge', dataset: { tone: tone || '' }, text });
  }

  // ---- the API ----

  class ApiError extends Error {
    constructor(status, kind, message, hint) {
      super(message);
      this.status = status;
      this.kind = kind;
      this.hint = hint || '';
    }
    get full() {
      return this.hint ? this.message + ' (' + this.hint + ')' : this.message;
    }
  }

  async function api(path, options) {
    const opts = options || {};
    const init = {
      method: opts.method || 'GET',
      // The token, when the server has one, lives in an HttpOnly cookie set at sign-in.
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
    };
    if (opts.body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let resp;
    try {
      resp = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'the server did not answer (' + e.message + ')', 'is workq serve still running?');
    }
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      if (resp.status === 401) signedOut();
      const e = (body && body.error) || {};
      throw new ApiError(resp.status, e.kind || 'http', e.message || resp.status + ' ' + resp.statusText, e.hint);
    }
    return body;
  }

  function signedOut() {
    const b = $('#banner');
    clear(b);
    add(b, ['The server asks for its token again. ', el('a', { href: '/', text: 'Sign in' }), '.']);
    b.hidden = false;
    b.dataset.kind = 'auth';
  }

  function showBanner(err) {
    const b = $('#banner');
    if (b.dataset.kind === 'auth' && err && err.status === 401) return;
    b.dataset.kind = 'error';
    b.textContent = 'Could not refresh: ' + (err.full || err.message || String(err));
    b.hidden = false;
  }

  function hideBanner() {
    const b = $('#banner');
    if (b.dataset.kind !== 'auth') b.hidden = true;
  }

  // ---- refresh scheduling ----

  const dirty = new Set();
  const loaders = {};
  let flushTimer = null;
  let flushing = false;
  let lastFlush = 0;
  // Callbacks for when everything marked dirty before them has been loaded.
  let afterFlush = [];

  function markDirty(...parts) {
    parts.forEach((p) => dirty.add(p));
    schedule();
  }

  function schedule() {
    if (flushing || flushTimer !== null || dirty.size === 0 || document.hidden) return;
    flushTimer = setTimeout(flush, Math.max(0, lastFlush + MIN_GAP_MS - Date.now()));
  }

  async function flush() {
    flushTimer = null;
    flushing = true;
    lastFlush = Date.now();
    const parts = [...dirty];
    dirty.clear();
    const done = afterFlush;
    afterFlush = [];
    const results = await Promise.allSettled(parts.map((p) => loaders[p]()));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) showBanner(failed.reason);
    else hideBanner();
    flushing = false;
    done.forEach((f) => f(!failed));
    schedule();
  }

  document.addEventListener('visibilitychange', () => {
    // A hidden tab keeps its dirty marks and catches up in one round when shown again.
    if (!document.hidden) markDirty('status', 'workers', 'jobs', 'job', 'throughput');
  });

  // ---- connection to /api/v1/events ----

  let source = null;

  function setConn(state, text) {
    const c = $('#conn');
    c.dataset.state = state;
    c.textContent = text;
  }

  function connect() {
    setConn('connecting', 'connecting…');
    const es = new EventSource(API + '/events');
    source = es;
    es.onopen = () => {
      setConn('connecting', 'catching up…');
      // Whatever happened before the stream opened shows now; only then is the page live
      // (every later change arrives as an event).
      afterFlush.push(() => {
        if (source === es && es.readyState === EventSource.OPEN) setConn('live', 'live');
      });
      markDirty('status', 'workers', 'jobs', 'job', 'throughput');
    };
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (a 401 or 403, or the server went away for good): try again
        // later ourselves, so a restarted server is picked up without a reload.
        setConn('down', 'offline');
        es.close();
        setTimeout(connect, 5000);
      } else {
        setConn('connecting', 'reconnecting…');
      }
    };
    es.addEventListener('job', (ev) => {
      const d = parse(ev.data);
      markDirty('status', 'jobs');
      if (d && jobView.id !== null && Number(d.id) === jobView.id) markDirty('job');
      if (d && ['succeeded', 'failed', 'cancelled'].includes(d.state)) markDirty('throughput');
    });
    es.addEventListener('worker', () => markDirty('workers', 'status'));
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      return null;
    }
  }

  // ---- results of actions ----

  function showResults(title, rows, summary) {
    $('#results-title').textContent = title;
    $('#results-summary').textContent = summary;
    const list = $('#results-list');
    clear(list);
    for (const r of rows) {
      list.append(el('li', { dataset: { resultId: r.id, done: String(!!r.done) } }, r.text));
    }
    const box = $('#results');
    box.hidden = false;
    box.classList.remove('flash');
    // Restart the highlight so a repeated action is noticed too.
    void box.offsetWidth;
    box.classList.add('flash');
  }

  // Rows of a bulk answer ({results, done, skipped}) as readable lines.
  function bulkRows(answer) {
    return (answer.results || []).map((r) => {
      const what = r.state !== undefined ? r.state : r.result;
      const why = r.detail ? ' — ' + r.detail : '';
      return { id: r.id, done: r.done, text: 'job ' + r.id + ': ' + (r.done ? '' : 'skipped, ') + what + why };
    });
  }

  function bulkSummary(answer) {
    const n = (answer.results || []).length;
    if (n === 0) return 'No job matched: nothing was done.';
    return answer.done + ' done, ' + answer.skipped + ' skipped.';
  }

  async function bulk(verb, body, title) {
    try {
      const answer = await api('/jobs/' + verb, { method: 'POST', body });
      showResults(title, bulkRows(answer), bulkSummary(answer));
      return answer;
    } catch (e) {
      showResults(title, [], 'Refused: ' + e.full);
      return null;
    } finally {
      markDirty('status', 'jobs', 'job');
    }
  }

  async function oneJob(verb, id) {
    const title = (verb === 'cancel' ? 'Cancel' : 'Retry') + ' job ' + id;
    try {
      const row = await api('/jobs/' + id + '/' + verb, { method: 'POST' });
      const answer = { results: [row], done: row.done ? 1 : 0, skipped: row.done ? 0 : 1 };
      showResults(title, bulkRows(answer), bulkSummary(answer));
    } catch (e) {
      // 409: it had already ended, or is not retryable; the message says which.
      showResults(title, [{ id, done: false, text: 'job ' + id + ': skipped — ' + e.full }], '0 done, 1 skipped.');
    } finally {
      markDirty('status', 'jobs', 'job');
    }
  }

  function confirmCancel(id, command) {
    return confirm('Cancel job ' + id + '?\n\n' + command + '\n\nIf it is running, its whole process group is stopped.');
  }

  function confirmRetry(id, command) {
    return confirm('Retry job ' + id + '? It is queued again.\n\n' + command);
  }

  // ---- queues ----

  const overview = { queues: [], throughput: null, lastThroughput: 0, throughputTimer: null };

  loaders.status = async () => {
    if (!overviewShown()) return;
    const st = await api('/status');
    overview.queues = st.queues || [];
    renderQueues();
    updateQueueFilter();
  };

  loaders.throughput = async () => {
    if (!overviewShown()) return;
    const wait = overview.lastThroughput + THROUGHPUT_GAP_MS - Date.now();
    if (wait > 0) {
      if (overview.throughputTimer === null) {
        overview.throughputTimer = setTimeout(() => {
          overview.throughputTimer = null;
          markDirty('throughput');
        }, wait);
      }
      return;
    }
    overview.lastThroughput = Date.now();
    overview.throughput = await api('/throughput?minutes=60');
    renderQueues();
  };

  // Per queue: 60 one-minute buckets ending now, each {ok, bad}.
  function buckets() {
    const out = new Map();
    const t = overview.throughput;
    if (!t || !Array.isArray(t.points)) return out;
    const now = Date.now();
    const width = (t.bucket_secs || 60) * 1000;
    for (const p of t.points) {
      const at = ms(p.at);
      if (at === null) continue;
      const i = 59 - Math.floor((now - at) / width);
      if (i < 0 || i > 59) continue;
      if (!out.has(p.queue)) out.set(p.queue, Array.from({ length: 60 }, () => ({ ok: 0, bad: 0 })));
      const b = out.get(p.queue)[i];
      b.ok += p.succeeded || 0;
      b.bad += p.failed || 0;
    }
    return out;
  }

  function chart(series) {
    const data = series || Array.from({ length: 60 }, () => ({ ok: 0, bad: 0 }));
    const ok = data.reduce((s, b) => s + b.ok, 0);
    const bad = data.reduce((s, b) => s + b.bad, 0);
    const peak = Math.max(1, ...data.map((b) => b.ok + b.bad));
    const label = 'Last hour: ' + ok + ' succeeded, ' + bad + ' failed or cancelled' +
      (ok + bad ? ', at most ' + peak + ' in a minute' : '');
    const s = svg('svg', {
      class: 'spark', viewBox: '0 0 60 20', preserveAspectRatio: 'none', role: 'img', 'aria-label': label,
    });
    const title = svg('title');
    title.textContent = label;
    s.append(title);
    s.append(svg('line', { class: 'base', x1: 0, y1: 19.75, x2: 60, y2: 19.75 }));
    data.forEach((b, i) => {
      const hOk = (b.ok / peak) * 19;
      const hBad = (b.bad / peak) * 19;
      if (hOk > 0) s.append(svg('rect', { class: 'ok', x: i + 0.1, y: 20 - hOk, width: 0.8, height: hOk }));
      if (hBad > 0) s.append(svg('rect', { class: 'bad', x: i + 0.1, y: 20 - hOk - hBad, width: 0.8, height: hBad }));
    });
    return s;
  }

  const QUEUE_COLUMNS = ['Queue', 'Queued', 'Scheduled', 'Running', 'Succeeded', 'Failed', 'Cancelled', 'Workers', 'Mean run', 'Last hour', 'Actions'];

  function renderQueues() {
    const body = $('#queues tbody');
    const series = buckets();
    const rows = overview.queues.map((q) => {
      const count = (n, state) => {
        const td = el('td', { className: 'num' + (n ? '' : ' zero') });
        if (n) {
          // A count opens the jobs list filtered to it.
          td.append(el('a', {
            href: '#/jobs', text: String(n), 'aria-label': n + ' ' + state + ' in ' + q.queue,
            onclick: () => setFilters({ queue: q.queue, state }),
          }));
        } else td.append('0');
        return td;
      };
      const actions = el('td', {}, el('span', { className: 'actions' },
        el('button', {
          type: 'button', dataset: { action: 'retry-queue', queue: q.queue }, disabled: !q.failed,
          'aria-label': 'Retry every failed job of queue ' + q.queue, text: 'Retry all failed',
          onclick: () => {
            if (!confirm('Retry all ' + q.failed + ' failed jobs of queue "' + q.queue + '"? They are queued again.')) return;
            bulk('retry', { queue: q.queue, state: 'failed' }, 'Retry failed jobs of ' + q.queue);
          },
        }),
        el('button', {
          type: 'button', className: 'danger', dataset: { action: 'cancel-queue', queue: q.queue },
          disabled: !(q.queued || q.scheduled), 'aria-label': 'Cancel every queued job of queue ' + q.queue,
          text: 'Cancel all queued',
          onclick: () => {
            if (!confirm('Cancel every queued job of queue "' + q.queue + '" (' + (q.queued + q.scheduled) +
              ', scheduled and waiting ones included)? Running jobs are left alone.')) return;
            bulk('cancel', { queue: q.queue, state: 'queued' }, 'Cancel queued jobs of ' + q.queue);
          },
        })));
      const cells = [
        el('td', {}, el('strong', { text: q.queue }), q.paused ? [' ', badge('paused', 'warn')] : null),
        count(q.queued, 'queued'), count(q.scheduled, 'scheduled'), count(q.running, 'running'),
        count(q.succeeded, 'succeeded'), count(q.failed, 'failed'), count(q.cancelled, 'cancelled'),
        el('td', { className: 'num' + (q.workers ? '' : ' zero'), text: String(q.workers) }),
        el('td', { className: 'num', text: q.mean_duration_secs == null ? '—' : fmtDuration(q.mean_duration_secs * 1000) }),
        el('td', {}, chart(series.get(q.queue))),
        actions,
      ];
      label(cells, QUEUE_COLUMNS);
      return el('tr', { dataset: { key: q.queue, queue: q.queue } }, cells);
    });
    reconcile(body, rows);
    $('#queues-empty').hidden = rows.length > 0;
  }

  // Puts `rows` (fresh elements, each with data-key) into `tbody`, keeping each existing row
  // that looks the same, so a refresh leaves focus, hover and text selection alone; a row that
  // did change is replaced, with focus moved to the same control in its new version.
  function reconcile(tbody, rows) {
    const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
    const active = document.activeElement;
    let refocus = null;
    const nodes = rows.map((fresh) => {
      const prev = old.get(fresh.dataset.key);
      if (!prev) return fresh;
      if (prev.outerHTML === fresh.outerHTML && prev.extra === fresh.extra) return prev;
      if (active && prev.contains(active)) {
        const sel = ['action', 'select', 'attempt'].find((k) => active.dataset && active.dataset[k] !== undefined);
        if (sel) refocus = fresh.querySelector('[data-' + sel + '="' + CSS.escape(active.dataset[sel]) + '"]');
      }
      return fresh;
    });
    nodes.forEach((n, i) => {
      if (tbody.children[i] !== n) tbody.insertBefore(n, tbody.children[i] || null);
    });
    while (tbody.children.length > nodes.length) tbody.lastElementChild.remove();
    if (refocus) refocus.focus();
  }

  // Card layout on narrow screens names each cell by its column.
  function label(cells, names) {
    cells.forEach((td, i) => td.setAttribute('data-label', names[i]));
  }

  // ---- workers ----

  loaders.workers = async () => {
    if (!overviewShown()) return;
    const all = $('#workers-all').checked;
    const list = await api('/workers' + (all ? '?all=1' : ''));
    renderWorkers(Array.isArray(list) ? list : []);
  };

  const WORKER_COLUMNS = ['Worker', 'State', 'Heartbeat', 'Slots in use', 'Done', 'Failed', 'CPU · RSS', 'Queues', 'Up', 'Actions'];

  function fmtBytes(n) {
    if (n == null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  }

  function renderWorkers(list) {
    const rows = list.map((w) => {
      const live = WORKER_LIVE.has(w.state);
      const alarm = ALARMING.has(w.state);
      const used = Math.min(w.running_jobs || 0, w.slots || 0);
      const meter = el('span', { className: 'meter', 'aria-hidden': 'true' }, el('span'));
      meter.firstChild.style.width = (w.slots ? Math.round((100 * used) / w.slots) : 0) + '%';
      let beat;
      if (live) beat = timeEl(w.heartbeat_at);
      else {
        beat = el('span', { className: 'muted' }, 'ended ', timeEl(w.stopped_at),
          w.stop_reason ? ' (' + w.stop_reason + ')' : '');
      }
      const actions = el('span', { className: 'actions' });
      if (live) {
        const pausing = w.state !== 'paused';
        actions.append(el('button', {
          type: 'button', dataset: { action: pausing ? 'pause' : 'resume' },
          'aria-label': (pausing ? 'Pause' : 'Resume') + ' worker ' + w.name + ' on ' + w.host,
          text: pausing ? 'Pause' : 'Resume',
          onclick: () => pauseWorker(w, pausing),
        }));
      }
      const cells = [
        el('td', {}, el('strong', { text: w.name }), el('div', { className: 'muted', text: w.host + ' · pid ' + w.pid })),
        el('td', {}, badge(w.state, WORKER_TONES[w.state])),
        el('td', {}, beat),
        el('td', {}, meter, (w.running_jobs || 0) + '/' + (w.slots || 0)),
        el('td', { className: 'num', text: String(w.jobs_done || 0) }),
        el('td', { className: 'num' + (w.jobs_failed ? '' : ' zero'), text: String(w.jobs_failed || 0) }),
        el('td', { className: 'num', dataset: { field: 'usage' },
          text: w.cpu_percent == null ? '–' : w.cpu_percent + '% · ' + fmtBytes(w.rss_bytes) }),
        el('td', { text: (w.queues || []).join(', ') }),
        el('td', { text: fmtDuration((w.uptime_secs || 0) * 1000) }),
        el('td', {}, actions),
      ];
      label(cells, WORKER_COLUMNS);
      return el('tr', {
        dataset: { key: w.id, workerId: w.id, workerName: w.name, workerHost: w.host, state: w.state, alarm: String(alarm) },
      }, cells);
    });
    reconcile($('#workers tbody'), rows);
    $('#workers-empty').hidden = rows.length > 0;
    const bad = list.filter((w) => ALARMING.has(w.state)).length;
    const title = $('#workers-title');
    clear(title);
    add(title, ['Workers', bad ? [' ', badge(bad + ' need' + (bad === 1 ? 's' : '') + ' attention', 'bad')] : null]);
  }

  async function pauseWorker(w, pausing) {
    const verb = pausing ? 'pause' : 'resume';
    const question = pausing
      ? 'Pause worker "' + w.name + '" on ' + w.host + '? It takes no new jobs until resumed; running jobs finish.'
      : 'Resume worker "' + w.name + '" on ' + w.host + '? It takes jobs again.';
    if (!confirm(question)) return;
    const title = (pausing ? 'Pause' : 'Resume') + ' worker ' + w.name;
    try {
      const r = await api('/workers/' + encodeURIComponent(w.name) + '/' + verb + '?host=' + encodeURIComponent(w.host), { method: 'POST' });
      const how = r.running ? 'its process has seen it' : 'it is not running; the flag holds when it starts';
      showResults(title, [{ id: w.name, done: true, text: w.name + ': ' + (r.paused ? 'paused' : 'resumed') + ' (' + how + ')' }], 'Done.');
    } catch (e) {
      showResults(title, [{ id: w.name, done: false, text: w.name + ': ' + e.full }], 'Refused.');
    } finally {
      markDirty('workers', 'status');
    }
  }

  // ---- jobs list ----

  const jobsList = {
    filters: { state: '', queue: '', label: '', q: '' },
    before: null, // the cursor of the page shown (null: the newest)
    newer: [], // cursors of the pages before it, to go back
    next: null,
    seq: 0,
    seen: new Set(),
    loaded: false,
    rows: [],
  };
  const selected = new Set();

  function jobsQuery() {
    const f = jobsList.filters;
    const p = new URLSearchParams();
    if (f.state) p.set('state', f.state);
    if (f.queue) p.set('queue', f.queue);
    if (f.label) p.set('label', f.label);
    if (f.q) p.set('q', f.q);
    p.set('limit', String(PAGE_SIZE));
    if (jobsList.before !== null) p.set('before', String(jobsList.before));
    return p.toString();
  }

  loaders.jobs = async () => {
    if (!overviewShown()) return;
    const labelText = jobsList.filters.label;
    const labelInput = $('#f-label');
    if (labelText && !/^[^=]+=/.test(labelText)) {
      labelInput.setAttribute('aria-invalid', 'true');
      labelInput.title = 'Write the label as key=value';
      return;
    }
    labelInput.removeAttribute('aria-invalid');
    labelInput.removeAttribute('title');
    // A filter change while a page loads makes that page's answer stale: only the latest counts.
    const seq = ++jobsList.seq;
    const r = await api('/jobs?' + jobsQuery());
    if (seq !== jobsList.seq) return;
    jobsList.next = r.next === undefined ? null : r.next;
    renderJobs(r.jobs || []);
  };

  const JOB_COLUMNS = ['Select', 'Id', 'State', 'Queue', 'Command', 'Attempt', 'Submitted', 'Ran for', 'Worker', 'Actions'];

  function renderJobs(jobs) {
    jobsList.rows = jobs;
    const rows = jobs.map((j) => {
      const command = commandText(j.command);
      const check = el('input', {
        type: 'checkbox', 'aria-label': 'Select job ' + j.id, dataset: { select: j.id },
        onchange: (ev) => {
          if (ev.target.checked) selected.add(j.id);
          else selected.delete(j.id);
          const tr = ev.target.closest('tr');
          tr.classList.toggle('selected', ev.target.checked);
          tr.extra = String(ev.target.checked);
          updateSelection();
        },
      });
      check.checked = selected.has(j.id);
      const actions = el('span', { className: 'actions' });
      if (CANCELLABLE.has(j.state)) {
        actions.append(el('button', {
          type: 'button', className: 'danger', dataset: { action: 'cancel', jobId: j.id },
          'aria-label': 'Cancel job ' + j.id, text: 'Cancel',
          onclick: () => confirmCancel(j.id, command) && oneJob('cancel', j.id),
        }));
      }
      if (RETRYABLE.has(j.state)) {
        actions.append(el('button', {
          type: 'button', dataset: { action: 'retry', jobId: j.id },
          'aria-label': 'Retry job ' + j.id, text: 'Retry',
          onclick: () => confirmRetry(j.id, command) && oneJob('retry', j.id),
        }));
      }
      const labels = Object.entries(j.labels || {}).map(([k, v]) => el('span', { className: 'badge', text: k + '=' + v }));
      const cells = [
        el('td', { className: 'check' }, check),
        el('td', { className: 'num' }, el('a', { href: '#/jobs/' + Number(j.id), text: String(j.id) })),
        el('td', {}, badge(j.state, JOB_TONES[j.state])),
        el('td', { text: j.queue }),
        el('td', { className: 'cmd', title: command }, el('code', { text: command }), labels.length ? [' ', labels] : null),
        el('td', { text: j.attempt + '/' + j.max_attempts }),
        el('td', {}, timeEl(j.created_at)),
        el('td', { text: j.started_at ? fmtDuration(span(j.started_at, j.finished_at)) : '—' }),
        el('td', { text: j.worker || '—' }),
        el('td', {}, actions),
      ];
      label(cells, JOB_COLUMNS);
      const tr = el('tr', { dataset: { key: j.id, jobId: j.id, state: j.state } }, cells);
      // The checkbox's state is a property, which outerHTML does not show.
      tr.extra = String(selected.has(j.id));
      if (selected.has(j.id)) tr.classList.add('selected');
      // A job that appeared since the last refresh is highlighted once.
      if (jobsList.loaded && !jobsList.seen.has(j.id)) tr.classList.add('flash');
      jobsList.seen.add(j.id);
      return tr;
    });
    jobsList.loaded = true;
    reconcile($('#jobs tbody'), rows);
    $('#jobs-empty').hidden = rows.length > 0;
    $('#jobs-older').disabled = jobsList.next === null;
    $('#jobs-newest').disabled = jobsList.before === null;
    $('#jobs-page').textContent = jobsList.before === null ? '' : 'page ' + (jobsList.newer.length + 1);
    updateSelection();
  }

  function updateSelection() {
    const n = selected.size;
    $('#cancel-selected').disabled = n === 0;
    $('#retry-selected').disabled = n === 0;
    $('#selected-count').textContent = n ? n + ' selected' : '';
    const boxes = [...document.querySelectorAll('#jobs tbody input[data-select]')];
    const all = $('#select-all');
    all.checked = boxes.length > 0 && boxes.every((b) => b.checked);
    all.indeterminate = !all.checked && boxes.some((b) => b.checked);
  }

  function selectedIds() {
    return [...selected].sort((a, b) => b - a);
  }

  function idList(ids) {
    return ids.length > 12 ? ids.slice(0, 12).join(', ') + ', …' : ids.join(', ');
  }

  async function actOnSelected(verb) {
    const ids = selectedIds();
    if (ids.length === 0) return;
    const question = verb === 'cancel'
      ? 'Cancel ' + ids.length + ' selected job(s)? (' + idList(ids) + ')\n\nRunning ones are stopped; ended ones are skipped.'
      : 'Retry ' + ids.length + ' selected job(s)? (' + idList(ids) + ')\n\nOnly failed or cancelled ones are queued again.';
    if (!confirm(question)) return;
    const answer = await bulk(verb, { ids }, (verb === 'cancel' ? 'Cancel' : 'Retry') + ' selected jobs');
    if (answer) {
      for (const r of answer.results || []) if (r.done) selected.delete(r.id);
      updateSelection();
    }
  }

  function setFilters(f) {
    const fl = jobsList.filters;
    Object.assign(fl, f);
    $('#f-state').value = fl.state;
    ensureQueueOption(fl.queue);
    $('#f-queue').value = fl.queue;
    $('#f-label').value = fl.label;
    $('#f-q').value = fl.q;
    filtersChanged();
  }

  function filtersChanged() {
    jobsList.before = null;
    jobsList.newer = [];
    selected.clear();
    markDirty('jobs');
  }

  function readFilters() {
    const f = jobsList.filters;
    const next = {
      state: $('#f-state').value,
      queue: $('#f-queue').value,
      label: $('#f-label').value.trim(),
      q: $('#f-q').value.trim(),
    };
    if (next.state === f.state && next.queue === f.queue && next.label === f.label && next.q === f.q) return;
    Object.assign(f, next);
    filtersChanged();
  }

  function ensureQueueOption(name) {
    if (!name) return;
    const sel = $('#f-queue');
    if (![...sel.options].some((o) => o.value === name)) sel.append(el('option', { value: name, text: name }));
  }

  function updateQueueFilter() {
    const sel = $('#f-queue');
    const current = sel.value;
    const names = overview.queues.map((q) => q.queue);
    if (current && !names.includes(current)) names.push(current);
    const have = [...sel.options].slice(1).map((o) => o.value);
    if (have.length === names.length && have.every((n, i) => n === names[i])) return;
    sel.replaceChildren(el('option', { value: '', text: 'any' }), ...names.map((n) => el('option', { value: n, text: n })));
    sel.value = current;
  }

  // ---- one job ----

  const jobView = {
    id: null,
    job: null,
    // The log being shown: which attempt, its request, and whether the user picked it.
    log: { attempt: 0, ctrl: null, streaming: false, pinned: false, chars: 0, retry: null },
  };

  loaders.job = async () => {
    const id = jobView.id;
    if (id === null) return;
    let j;
    try {
      j = await api('/jobs/' + id);
    } catch (e) {
      if (e.status === 404 && jobView.id === id) {
        $('#job-title').textContent = 'Job ' + id;
        clear($('#job-state'));
        clear($('#job-actions'));
        const f = $('#job-fields');
        clear(f);
        f.append(el('dt', { text: 'Not found' }), el('dd', { text: e.message }));
        setLogStatus('');
        return;
      }
      throw e;
    }
    if (jobView.id !== id) return;
    jobView.job = j;
    renderJob(j);
    advanceLog(j);
  };

  function field(dl, name, value) {
    if (value === undefined || value === null || value === '' || (Array.isArray(value) && value.length === 0)) return;
    dl.append(el('dt', { text: name }), el('dd', {}, value instanceof Node || Array.isArray(value) ? value : String(value)));
  }

  function renderJob(j) {
    const command = commandText(j.command);
    $('#job-title').textContent = 'Job ' + j.id;
    document.title = 'workq: job ' + j.id + ' (' + j.state + ')';
    const st = $('#job-state');
    st.replaceChildren(badge(j.state, JOB_TONES[j.state]));
    st.dataset.state = j.state;
    const actions = $('#job-actions');
    clear(actions);
    if (CANCELLABLE.has(j.state)) {
      actions.append(el('button', {
        type: 'button', className: 'danger', dataset: { action: 'cancel', jobId: j.id }, text: 'Cancel',
        'aria-label': 'Cancel job ' + j.id,
        onclick: () => confirmCancel(j.id, command) && oneJob('cancel', j.id),
      }));
    }
    if (RETRYABLE.has(j.state)) {
      actions.append(el('button', {
        type: 'button', dataset: { action: 'retry', jobId: j.id }, text: 'Retry', 'aria-label': 'Retry job ' + j.id,
        onclick: () => confirmRetry(j.id, command) && oneJob('retry', j.id),
      }));
    }

    const dl = $('#job-fields');
    clear(dl);
    field(dl, 'Command', el('code', { text: command }));
    field(dl, 'Queue', j.queue);
    field(dl, 'Priority', j.priority);
    field(dl, 'Attempt', j.attempt + ' of ' + j.max_attempts);
    field(dl, 'Exit code', j.exit_code);
    field(dl, 'Last error', j.last_error);
    field(dl, 'Submitted', timeWithAge(j.created_at));
    if (j.state === 'scheduled') field(dl, 'Runs at', timeWithAge(j.run_at));
    field(dl, 'Started', j.started_at ? timeWithAge(j.started_at) : null);
    field(dl, 'Finished', j.finished_at ? timeWithAge(j.finished_at) : null);
    field(dl, 'Ran for', j.started_at ? fmtDuration(span(j.started_at, j.finished_at)) : null);
    field(dl, 'Worker', j.worker);
    field(dl, 'Time limit', j.timeout_secs ? fmtDuration(j.timeout_secs * 1000) : null);
    field(dl, 'Labels', Object.entries(j.labels || {}).map(([k, v]) => [el('span', { className: 'badge', text: k + '=' + v }), ' ']));
    field(dl, 'Directory', j.cwd);
    field(dl, 'Unique key', j.unique_key);
    field(dl, 'Idempotency key', j.idempotency_key);
    field(dl, 'Rescued', j.rescues ? j.rescues + ' time(s) from a lost worker' : null);
    if (j.container) {
      field(dl, 'Container', j.container.runtime + ' ' + j.container.image + (j.container.user ? ' as ' + j.container.user : ''));
    }
    const env = Object.entries(j.env || {});
    if (env.length) {
      // Environment values may be secrets: folded away until asked for.
      const details = el('details', {}, el('summary', { text: env.length + ' variable(s)' }),
        el('pre', { className: 'mono', text: env.map(([k, v]) => k + '=' + v).join('\n') }));
      field(dl, 'Environment', details);
    }

    const rows = (j.attempts || []).map((a) => {
      const running = !a.ended_at;
      const outcome = running ? 'running' : a.outcome || 'ended';
      const exit = a.exit_code != null ? String(a.exit_code) : a.signal != null ? 'signal ' + a.signal : '—';
      const cells = [
        el('td', { className: 'num', text: String(a.attempt) }),
        el('td', {}, badge(outcome, running ? 'warn' : outcome === 'succeeded' ? 'ok' : outcome === 'cancelled' ? '' : 'bad')),
        el('td', { text: exit }),
        el('td', { text: fmtDuration(span(a.started_at, a.ended_at)) + (running ? ' so far' : '') }),
        el('td', { text: (a.worker || '?') + (a.host ? ' on ' + a.host : '') + (a.pid ? ' (pid ' + a.pid + ')' : '') }),
        el('td', {}, timeEl(a.started_at)),
        el('td', { text: a.error || '' }),
        el('td', {}, el('button', {
          type: 'button', dataset: { action: 'show-log', attempt: a.attempt }, text: 'Output',
          'aria-label': 'Show the output of attempt ' + a.attempt,
          onclick: () => pinLog(a.attempt),
        })),
      ];
      label(cells, ['Attempt', 'Outcome', 'Exit', 'Duration', 'Worker', 'Started', 'Error', 'Log']);
      return el('tr', { dataset: { key: a.attempt, attempt: a.attempt, outcome } }, cells);
    });
    reconcile($('#attempts tbody'), rows);
    $('#attempts-empty').hidden = rows.length > 0;
  }

  function timeWithAge(iso) {
    return [fmtTime(iso), ' ', el('span', { className: 'muted', text: '(' + fmtAge(iso) + ')' })];
  }

  // ---- a job's log, tailed live ----

  function setLogStatus(text) {
    $('#log-status').textContent = text;
  }

  function resetLog() {
    stopLog();
    const L = jobView.log;
    L.attempt = 0;
    L.pinned = false;
    L.chars = 0;
    clear($('#job-log'));
    setLogStatus('');
    $('#log-latest').hidden = true;
  }

  function stopLog() {
    const L = jobView.log;
    if (L.ctrl) L.ctrl.abort();
    L.ctrl = null;
    L.streaming = false;
    if (L.retry !== null) clearTimeout(L.retry);
    L.retry = null;
  }

  // Opens the next attempt's log once it exists: the latest one first, then each later one
  // as retries start. Called after every refresh of the job.
  function advanceLog(job) {
    const L = jobView.log;
    if (L.streaming || L.pinned || L.retry !== null) return;
    if (job.attempt === 0) {
      setLogStatus(job.state === 'cancelled' ? 'it never ran' : 'waiting for it to start…');
      return;
    }
    const next = L.attempt === 0 ? job.attempt : L.attempt + 1;
    if (next > job.attempt) return;
    openLog(job.id, next);
  }

  function pinLog(attempt) {
    const id = jobView.id;
    if (id === null) return;
    resetLog();
    jobView.log.pinned = true;
    $('#log-latest').hidden = false;
    openLog(id, attempt);
  }

  function followLatest() {
    resetLog();
    if (jobView.job) advanceLog(jobView.job);
  }

  function appendLog(text, className) {
    if (!text) return;
    const pre = $('#job-log');
    const L = jobView.log;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
    const target = className ? pre : pre.lastElementChild && pre.lastElementChild.dataset.logAttempt ? pre.lastElementChild : pre;
    if (className) target.append(el('span', { className, text }));
    else target.append(text);
    L.chars += text.length;
    // Drop the oldest output past the cap, whole nodes at a time.
    while (L.chars > LOG_MAX_CHARS && pre.firstChild) {
      const first = pre.firstChild;
      if (first.nodeType === Node.ELEMENT_NODE && first.dataset.logAttempt && first.firstChild) {
        L.chars -= first.firstChild.textContent.length;
        first.firstChild.remove();
      } else {
        L.chars -= first.textContent.length;
        first.remove();
      }
    }
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function openLog(id, attempt) {
    const L = jobView.log;
    const pre = $('#job-log');
    const ctrl = new AbortController();
    L.ctrl = ctrl;
    L.streaming = true;
    L.attempt = attempt;
    // Each attempt's output lives in its own element, so a broken stream can start it over.
    const old = pre.querySelector('[data-log-attempt="' + attempt + '"]');
    if (old) {
      L.chars -= old.textContent.length;
      old.remove();
    } else if (pre.childNodes.length || (jobView.job && jobView.job.attempt > 1)) {
      appendLog((pre.childNodes.length ? '\n' : '') + '── attempt ' + attempt + ' ──\n', 'sep');
    }
    pre.append(el('span', { dataset: { logAttempt: attempt } }));
    setLogStatus('attempt ' + attempt + ': following…');
    let broke = null;
    try {
      const resp = await fetch(API + '/jobs/' + id + '/log?attempt=' + attempt + '&follow=1', {
        credentials: 'same-origin',
        signal: ctrl.signal,
      });
      if (!resp.ok) {
        const body = parse(await resp.text());
        const e = (body && body.error) || {};
        throw new ApiError(resp.status, e.kind, e.message || 'HTTP ' + resp.status, e.hint);
      }
      // The body is the log as the job writes it; the server ends it when the attempt ends.
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (L.ctrl !== ctrl) return;
        appendLog(decoder.decode(value, { stream: true }));
      }
      appendLog(decoder.decode());
    } catch (e) {
      broke = e;
    }
    // Another log took over (navigation, a picked attempt): this one has nothing more to say.
    if (L.ctrl !== ctrl || ctrl.signal.aborted) return;
    L.ctrl = null;
    L.streaming = false;
    if (broke) {
      if (broke.status === 404 || broke.status === 400) {
        setLogStatus('attempt ' + attempt + ': ' + (broke.full || broke.message));
        return;
      }
      // The connection broke mid-attempt: read this attempt again from its start shortly.
      setLogStatus('attempt ' + attempt + ': the stream broke (' + broke.message + '); reconnecting…');
      L.retry = setTimeout(() => {
        L.retry = null;
        if (jobView.id === id && L.ctrl === null) openLog(id, attempt);
      }, 3000);
      return;
    }
    const empty = !(pre.querySelector('[data-log-attempt="' + attempt + '"]') || {}).textContent;
    setLogStatus('attempt ' + attempt + ': ended' + (empty ? ', with no output' : ''));
    // A retry may follow; the refresh reopens the next attempt if there is one.
    markDirty('job');
  }

  // ---- routing ----

  function overviewShown() {
    return !$('#overview').hidden;
  }

  function route() {
    const hash = location.hash || '#/';
    const m = /^#\/jobs\/(\d+)$/.exec(hash);
    if (m) {
      showJob(Number(m[1]));
      return;
    }
    $('#job-view').hidden = true;
    $('#overview').hidden = false;
    document.title = 'workq';
    if (jobView.id !== null) {
      resetLog();
      jobView.id = null;
      jobView.job = null;
    }
    const target = { '#/workers': '#workers-section', '#/jobs': '#jobs-section' }[hash];
    if (target) $(target).scrollIntoView();
    else window.scrollTo(0, 0);
    markDirty('status', 'workers', 'jobs', 'throughput');
  }

  function showJob(id) {
    $('#overview').hidden = true;
    $('#job-view').hidden = false;
    if (jobView.id !== id) {
      resetLog();
      jobView.id = id;
      jobView.job = null;
      $('#job-title').textContent = 'Job ' + id;
      clear($('#job-state'));
      clear($('#job-actions'));
      clear($('#job-fields'));
      $('#attempts tbody').replaceChildren();
      document.title = 'workq: job ' + id;
      window.scrollTo(0, 0);
    }
    markDirty('job');
  }

  // ---- wiring ----

  function start() {
    const form = $('#job-filters');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      readFilters();
    });
    $('#f-state').addEventListener('change', readFilters);
    $('#f-queue').addEventListener('change', readFilters);
    $('#f-label').addEventListener('change', readFilters);
    let typing = null;
    $('#f-q').addEventListener('input', () => {
      // Search as one types, once the typing pauses.
      clearTimeout(typing);
      typing = setTimeout(readFilters, 300);
    });
    $('#select-all').addEventListener('change', (ev) => {
      for (const b of document.querySelectorAll('#jobs tbody input[data-select]')) {
        b.checked = ev.target.checked;
        const id = Number(b.dataset.select);
        if (b.checked) selected.add(id);
        else selected.delete(id);
        const tr = b.closest('tr');
        tr.classList.toggle('selected', b.checked);
        tr.extra = String(b.checked);
      }
      updateSelection();
    });
    $('#cancel-selected').addEventListener('click', () => actOnSelected('cancel'));
    $('#retry-selected').addEventListener('click', () => actOnSelected('retry'));
    $('#jobs-older').addEventListener('click', () => {
      if (jobsList.next === null) return;
      jobsList.newer.push(jobsList.before);
      jobsList.before = jobsList.next;
      markDirty('jobs');
      $('#jobs-section').scrollIntoView();
    });
    $('#jobs-newest').addEventListener('click', () => {
      jobsList.before = null;
      jobsList.newer = [];
      markDirty('jobs');
    });
    $('#workers-all').addEventListener('change', () => markDirty('workers'));
    $('#results-close').addEventListener('click', () => {
      $('#results').hidden = true;
    });
    $('#log-latest').addEventListener('click', followLatest);
    window.addEventListener('hashchange', route);
    setInterval(() => markDirty('status', 'workers', 'jobs', 'job'), SAFETY_POLL_MS);
    setInterval(() => markDirty('throughput'), 60000);
    route();
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
