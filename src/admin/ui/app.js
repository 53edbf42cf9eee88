// Warren's management page: a client of the management HTTP API (/api/...)
// like any other. Plain DOM, no framework. Everything that comes from the
// API is put on the page as text nodes (textContent), never as HTML.
'use strict';

(function () {
  const REFRESH_MS = 5000; // RabbitMQ's default collect_statistics_interval
  const SESSION_KEY = 'warren.auth';

  // ------------------------------------------------------------ DOM helpers

  /** h('tag', {attr: value, onclick: fn, text: 'x'}, child, ...) */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else if (k === 'value') el.value = v;
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    add(el, children);
    return el;
  }

  function add(el, ...children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c)); // strings become text nodes
    }
    return el;
  }

  function fill(el, ...children) {
    el.replaceChildren();
    return add(el, children);
  }

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------- formatting

  function num(n) {
    if (n === null || n === undefined || n === '') return '';
    const x = Number(n);
    return Number.isFinite(x) ? x.toLocaleString('en-US') : String(n);
  }

  function rateOf(obj, key) {
    const d = obj && obj[key + '_details'];
    return d && typeof d.rate === 'number' ? d.rate : null;
  }

  function fmtRate(r) {
    if (r === null || r === undefined) return '';
    return (Math.abs(r) >= 100 ? r.toFixed(0) : r.toFixed(2)) + '/s';
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let x = Number(b);
    let i = 0;
    while (Math.abs(x) >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    return (i === 0 ? String(Math.round(x)) : x.toFixed(1)) + ' ' + units[i];
  }

  function fmtByteRate(r) {
    return r === null || r === undefined ? '' : fmtBytes(r) + '/s';
  }

  function fmtTime(ms) {
    if (!ms) return '';
    const d = new Date(ms);
    return isNaN(d) ? String(ms) : d.toLocaleString();
  }

  function yesNo(b) { return b ? 'yes' : 'no'; }

  function json(v) {
    return JSON.stringify(v, null, 1).replace(/\n\s*/g, ' ');
  }

  function isEmpty(obj) { return !obj || Object.keys(obj).length === 0; }

  /** Short feature tags, as RabbitMQ's lists show them. */
  function features(o) {
    const out = [];
    if (o.durable) out.push(['D', 'durable']);
    if (o.auto_delete) out.push(['AD', 'auto-delete']);
    if (o.exclusive) out.push(['Excl', 'exclusive']);
    if (o.internal) out.push(['I', 'internal']);
    for (const k of Object.keys(o.arguments || {})) {
      out.push([k.replace(/^x-/, ''), k + ': ' + json(o.arguments[k])]);
    }
    return out.map(([label, title]) => h('abbr', { class: 'tag', title }, label));
  }

  // -------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, error, reason) {
      super(reason || error || ('HTTP ' + status));
      this.status = status;
      this.error = error || '';
      this.reason = reason || error || ('HTTP ' + status);
    }
  }

  function session() {
    try { return JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null'); } catch (e) { return null; }
  }

  function basic(user, password) {
    const bytes = new TextEncoder().encode(user + ':' + password);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return 'Basic ' + btoa(bin);
  }

  /** A 401 that means "these credentials cannot use the API" (wrong
   *  password, no management tag, guest from afar), as opposed to "you
   *  may not touch this vhost or object". */
  function isLoginFailure(err) {
    if (err.status !== 401) return false;
    if (!err.error || err.error === 'not_authorized') return true;
    return /^(Not management user|User can only log in via localhost)/.test(err.reason);
  }

  /** `api(method, path, body)`: the JSON answer, or throws an ApiError
   *  carrying the API's `reason`. */
  async function api(method, path, body, auth) {
    const a = auth || session();
    if (!a) { const e = new ApiError(401, 'not_authorized', 'Not logged in'); e.loggedOut = true; throw e; }
    // credentials 'omit': the Authorization header is ours; the browser
    // must neither add cached credentials nor prompt for a password when
    // a failed login answers with a Basic challenge.
    const init = { method, headers: { Authorization: a.authorization }, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch('/api' + path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'Cannot reach the broker (' + e.message + ')');
    }
    const text = await res.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (e) { data = null; } }
    if (!res.ok) {
      const reason = data && typeof data === 'object' ? (data.reason || data.error) : null;
      const err = new ApiError(res.status, data && data.error, reason || (res.status + ' ' + res.statusText));
      if (!auth && isLoginFailure(err)) {
        err.loggedOut = true;
        loggedOut(err.reason);
      }
      throw err;
    }
    return data;
  }

  const enc = encodeURIComponent;
  const xPath = (name) => enc(name === '' ? 'amq.default' : name);

  // ----------------------------------------------------------- log in/out

  function showLogin(reason) {
    $('app').hidden = true;
    $('login').hidden = false;
    const err = $('login-error');
    err.hidden = !reason;
    err.textContent = reason || '';
    document.title = 'Warren: log in';
    const user = $('login-username');
    (user.value ? $('login-password') : user).focus();
  }

  function loggedOut(reason) {
    sessionStorage.removeItem(SESSION_KEY);
    current = null;
    $('view').replaceChildren();
    showLogin(reason);
  }

  async function logIn(event) {
    event.preventDefault();
    const username = $('login-username').value;
    const password = $('login-password').value;
    const auth = { username, authorization: basic(username, password) };
    const button = $('login-submit');
    button.disabled = true;
    try {
      const me = await api('GET', '/whoami', undefined, auth);
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ username: me.name || username, authorization: auth.authorization }));
      $('login-password').value = '';
      startApp();
    } catch (err) {
      showLogin(err.reason);
      $('login-password').select();
    } finally {
      button.disabled = false;
    }
  }

  function startApp() {
    const s = session();
    $('login').hidden = true;
    $('app').hidden = false;
    $('current-user').textContent = s.username;
    api('GET', '/overview').then(o => showProduct(o)).catch(() => {});
    route();
  }

  function showProduct(o) {
    if (!o) return;
    $('product-version').textContent = (o.product_version ? 'v' + o.product_version : '') +
      (o.rabbitmq_version ? ' · RabbitMQ ' + o.rabbitmq_version + ' compatible' : '');
  }

  // --------------------------------------------------- views and refresh

  let current = null; // {update: async () => void, name}

  const ROUTES = [
    [/^\/(?:overview)?$/, 'overview', overviewView],
    [/^\/connections$/, 'connections', connectionsView],
    [/^\/channels$/, 'channels', channelsView],
    [/^\/exchanges$/, 'exchanges', exchangesView],
    [/^\/exchanges\/([^/]+)\/([^/]*)$/, 'exchanges', exchangeView],
    [/^\/queues$/, 'queues', queuesView],
    [/^\/queues\/([^/]+)\/([^/]+)$/, 'queues', queueView],
    [/^\/links$/, 'links', linksView],
    [/^\/schemas$/, 'schemas', schemasView],
  ];

  function route() {
    if (!session()) { showLogin(); return; }
    const path = location.hash.replace(/^#/, '') || '/overview';
    let found = null;
    for (const [re, tab, fn] of ROUTES) {
      const m = re.exec(path);
      if (m) {
        let args;
        try { args = m.slice(1).map(decodeURIComponent); }
        catch (e) { continue; }
        found = { tab, fn, args };
        break;
      }
    }
    const view = $('view');
    view.replaceChildren();
    for (const a of document.querySelectorAll('#tabs a')) a.removeAttribute('aria-current');
    if (!found) {
      current = null;
      add(view, h('h2', null, 'Not found'), h('p', null, 'There is no page here. ', h('a', { href: '#/overview' }, 'Overview')));
      return;
    }
    $('tab-' + found.tab).setAttribute('aria-current', 'page');
    const errorBox = h('p', { id: 'view-error', class: 'error', role: 'alert', 'data-testid': 'view-error', hidden: true });
    const v = found.fn(...found.args);
    document.title = 'Warren: ' + v.title;
    add(view, v.heading || h('h2', { id: 'view-title' }, v.title), errorBox, v.body);
    current = { update: v.update, errorBox, busy: false };
    refresh(current);
  }

  async function refresh(view) {
    view = view || current;
    if (!view || view.busy || view !== current) return;
    view.busy = true;
    try {
      await view.update();
      if (view === current) {
        view.errorBox.hidden = true;
        $('refresh-status').textContent = 'Updated ' + new Date().toLocaleTimeString() + ' · refreshes every 5 s';
      }
    } catch (err) {
      if (!err.loggedOut && view === current) {
        view.errorBox.textContent = err.reason || err.message;
        view.errorBox.hidden = false;
      }
      if (!(err instanceof ApiError)) console.warn(err);
    } finally {
      view.busy = false;
    }
  }

  /** Refresh now (after an action), then on the usual timer. */
  function refreshSoon() { if (current) refresh(current); }

  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);

  // ------------------------------------------------------------ tables

  /** A table whose body is replaced on each refresh. columns: [label |
   *  {label, num, title}]. Returns {el, set(rows)} where each row is
   *  {cells: [...], attrs: {...}}; cells are text, nodes, or
   *  {v, num, attrs}. */
  function dataTable(opts) {
    const thead = h('thead', null, h('tr', null, opts.columns.map(c => {
      const col = typeof c === 'string' ? { label: c } : c;
      return h('th', { scope: 'col', class: col.num ? 'num' : null, title: col.title }, col.label);
    })));
    const tbody = h('tbody');
    const table = h('table', { id: opts.id, 'data-testid': opts.testid || opts.id, class: 'data' },
      opts.caption ? h('caption', { class: 'sr-only' }, opts.caption) : null, thead, tbody);
    const numeric = opts.columns.map(c => typeof c === 'object' && c.num);
    return {
      el: h('div', { class: 'table-wrap' }, table),
      set(rows, empty) {
        if (!rows.length) {
          fill(tbody, h('tr', { class: 'empty' }, h('td', { colspan: opts.columns.length }, empty || 'Nothing to show')));
          return;
        }
        fill(tbody, rows.map(r => h('tr', r.attrs, r.cells.map((c, i) => {
          if (c && typeof c === 'object' && !(c instanceof Node) && !Array.isArray(c)) {
            return h('td', Object.assign({ class: numeric[i] ? 'num' : null }, c.attrs), c.v);
          }
          return h('td', { class: numeric[i] ? 'num' : null }, c);
        }))));
      },
    };
  }

  /** A two-column table of label/value pairs. */
  function kvTable(id, caption) {
    const tbody = h('tbody');
    return {
      el: h('table', { id, 'data-testid': id, class: 'kv' }, caption ? h('caption', { class: 'sr-only' }, caption) : null, tbody),
      set(pairs) {
        fill(tbody, pairs.filter(Boolean).map(([label, value, key]) =>
          h('tr', null, h('th', { scope: 'row' }, label),
            h('td', { id: key ? id + '-' + key : null, 'data-testid': key ? id + '-' + key : null }, value))));
      },
    };
  }

  function section(title, ...children) {
    return h('section', { class: 'box' }, h('h3', null, title), children);
  }

  function queueLink(vhost, name) {
    return h('a', { href: '#/queues/' + enc(vhost) + '/' + enc(name), class: 'name' }, name);
  }

  function exchangeLink(vhost, name) {
    return h('a', { href: '#/exchanges/' + enc(vhost) + '/' + xPath(name), class: 'name' }, name === '' ? '(AMQP default)' : name);
  }

  /** A result line under a form: role=status for successes, alert for errors. */
  function resultLine(id) {
    const el = h('p', { id, 'data-testid': id, class: 'result', 'aria-live': 'polite' });
    return {
      el,
      ok(text) { el.className = 'result ok'; el.setAttribute('role', 'status'); el.textContent = text; },
      fail(err) {
        if (err && err.loggedOut) return;
        el.className = 'result error'; el.setAttribute('role', 'alert');
        el.textContent = (err && (err.reason || err.message)) || String(err);
      },
      clear() { el.className = 'result'; el.textContent = ''; },
    };
  }

  function field(id, label, control, hint) {
    control.id = id;
    return h('div', { class: 'field' }, h('label', { for: id }, label), control,
      hint ? h('small', { class: 'hint' }, hint) : null);
  }

  function select(options, value) {
    return h('select', null, options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
  }

  function parseJsonField(text, what) {
    if (!text.trim()) return null;
    let v;
    try { v = JSON.parse(text); } catch (e) { throw new ApiError(0, 'bad_request', what + ' is not valid JSON: ' + e.message); }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ApiError(0, 'bad_request', what + ' must be a JSON object');
    return v;
  }

  async function busyWhile(button, fn) {
    button.disabled = true;
    try { return await fn(); } finally { button.disabled = false; }
  }

  // ------------------------------------------------------------ overview

  const MESSAGE_RATES = [
    ['publish', 'Publish'], ['confirm', 'Publisher confirm'], ['deliver_get', 'Deliver / get'],
    ['deliver', 'Deliver (manual ack)'], ['deliver_no_ack', 'Deliver (auto ack)'],
    ['get', 'Get (manual ack)'], ['get_no_ack', 'Get (auto ack)'], ['get_empty', 'Get (empty)'],
    ['redeliver', 'Redelivered'], ['ack', 'Consumer ack'],
    ['return_unroutable', 'Unroutable (returned)'], ['drop_unroutable', 'Unroutable (dropped)'],
  ];

  const CHURN = [
    ['connection_created', 'Connections opened'], ['connection_closed', 'Connections closed'],
    ['channel_created', 'Channels opened'], ['channel_closed', 'Channels closed'],
    ['queue_declared', 'Queues declared'], ['queue_created', 'Queues created'], ['queue_deleted', 'Queues deleted'],
  ];

  /** Rows for each known `name` of a message_stats-like object, then any
   *  other `*_details` the API added. */
  function statRows(stats, known) {
    stats = stats || {};
    const seen = new Set();
    const rows = [];
    for (const [key, label] of known) {
      seen.add(key);
      if (!(key in stats) && !((key + '_details') in stats)) continue;
      rows.push({ attrs: { 'data-stat': key }, cells: [label, fmtRate(rateOf(stats, key)), num(stats[key])] });
    }
    for (const k of Object.keys(stats)) {
      const base = k.replace(/_details$/, '');
      if (k === base || seen.has(base)) continue;
      seen.add(base);
      rows.push({ attrs: { 'data-stat': base }, cells: [base.replace(/_/g, ' '), fmtRate(rateOf(stats, base)), num(stats[base])] });
    }
    return rows;
  }

  function overviewView() {
    const totals = dataTable({ id: 'queued-messages', caption: 'Queued messages', columns: ['', { label: 'Count', num: true }, { label: 'Rate', num: true }] });
    const objects = kvTable('object-totals', 'Global counts');
    const rates = dataTable({ id: 'message-rates', caption: 'Message rates', columns: ['Operation', { label: 'Rate', num: true }, { label: 'Total', num: true }] });
    const churn = dataTable({ id: 'churn-rates', caption: 'Churn', columns: ['Event', { label: 'Rate', num: true }, { label: 'Total', num: true }] });
    const node = kvTable('node-info', 'Node');
    const listeners = dataTable({ id: 'listeners', caption: 'Listeners', columns: ['Protocol', 'Bound to', { label: 'Port', num: true }] });
    const body = h('div', { class: 'grid' },
      section('Queued messages', totals.el),
      section('Totals', objects.el),
      section('Message rates', rates.el),
      section('Churn', churn.el),
      section('Node', node.el),
      section('Listeners', listeners.el));
    return {
      title: 'Overview',
      body,
      async update() {
        const o = await api('GET', '/overview');
        showProduct(o);
        const q = o.queue_totals || {};
        totals.set([
          ['Ready', 'messages_ready'], ['Unacked', 'messages_unacknowledged'], ['Total', 'messages'],
        ].map(([label, key]) => ({ attrs: { 'data-stat': key }, cells: [label, { v: num(q[key] || 0), attrs: { 'data-testid': 'total-' + key } }, fmtRate(rateOf(q, key))] })));
        const t = o.object_totals || {};
        objects.set([
          ['Connections', num(t.connections), 'connections'], ['Channels', num(t.channels), 'channels'],
          ['Exchanges', num(t.exchanges), 'exchanges'], ['Queues', num(t.queues), 'queues'],
          ['Consumers', num(t.consumers), 'consumers'],
        ]);
        rates.set(statRows(o.message_stats, MESSAGE_RATES), 'No messages yet');
        churn.set(statRows(o.churn_rates, CHURN));
        node.set([
          ['Product', [o.product_name || 'Warren', ' ', o.product_version || ''].join(''), 'product'],
          ['Compatible with', o.rabbitmq_version ? 'RabbitMQ ' + o.rabbitmq_version : '', 'compat'],
          ['Node', o.node, 'node'],
          ['Cluster', o.cluster_name, 'cluster'],
          ['Runtime', o.erlang_full_version || o.erlang_version, 'runtime'],
          ['Statistics', o.rates_mode, 'rates-mode'],
        ]);
        listeners.set((o.listeners || []).map(l => ({ cells: [l.protocol, l.ip_address, String(l.port)] })));
      },
    };
  }

  // -------------------------------------------------------------- queues

  let queueFilter = ''; // kept across visits and refreshes

  function queuesView() {
    const filter = h('input', { type: 'search', value: queueFilter, placeholder: 'part of a name', autocomplete: 'off' });
    const shown = h('span', { id: 'queues-count', class: 'muted', 'data-testid': 'queues-count', 'aria-live': 'polite' });
    const table = dataTable({
      id: 'queues-table', caption: 'Queues',
      columns: ['Virtual host', 'Name', 'Type', 'Features', 'State',
        { label: 'Ready', num: true }, { label: 'Unacked', num: true }, { label: 'Total', num: true },
        { label: 'Consumers', num: true }, { label: 'Incoming', num: true, title: 'publish rate' },
        { label: 'Deliver / get', num: true }, { label: 'Ack', num: true }],
    });
    let all = [];

    function render() {
      const needle = queueFilter.toLowerCase();
      const rows = all.filter(q => q.name.toLowerCase().includes(needle));
      shown.textContent = needle ? rows.length + ' of ' + all.length + ' queues match' : all.length + ' queues';
      table.set(rows.map(q => {
        const s = q.message_stats || {};
        return {
          attrs: { 'data-testid': 'queue-row', 'data-vhost': q.vhost, 'data-name': q.name },
          cells: [q.vhost, queueLink(q.vhost, q.name), q.type, h('span', null, features(q)), q.state,
            { v: num(q.messages_ready), attrs: { 'data-col': 'ready' } },
            { v: num(q.messages_unacknowledged), attrs: { 'data-col': 'unacked' } },
            { v: num(q.messages), attrs: { 'data-col': 'total' } },
            { v: num(q.consumers), attrs: { 'data-col': 'consumers' } },
            fmtRate(rateOf(s, 'publish')), fmtRate(rateOf(s, 'deliver_get')), fmtRate(rateOf(s, 'ack'))],
        };
      }), needle ? 'No queue matches the filter' : 'No queues');
    }

    filter.addEventListener('input', () => { queueFilter = filter.value; render(); });

    const vhostList = h('datalist', { id: 'vhost-list' }, h('option', { value: '/' }));
    const addForm = addQueueForm(vhostList, () => refreshSoon());

    const body = h('div', null,
      h('div', { class: 'toolbar' }, field('queue-filter', 'Filter by name', filter), shown),
      table.el,
      addForm);
    return {
      title: 'Queues',
      body,
      async update() {
        const qs = await api('GET', '/queues');
        all = Array.isArray(qs) ? qs : (qs && qs.items) || [];
        render();
        const vhosts = [...new Set(['/', ...all.map(q => q.vhost)])].sort();
        fill(vhostList, vhosts.map(v => h('option', { value: v })));
      },
    };
  }

  function addQueueForm(vhostList, done) {
    const vhost = h('input', { value: '/', list: 'vhost-list', required: true, autocomplete: 'off' });
    const name = h('input', { required: true, autocomplete: 'off' });
    const durability = select([['true', 'Durable'], ['false', 'Transient']], 'true');
    const autoDelete = select([['false', 'No'], ['true', 'Yes']], 'false');
    const args = h('textarea', { rows: 2, placeholder: '{"x-max-length": 1000}' });
    const result = resultLine('add-queue-result');
    const submit = h('button', { id: 'add-queue-submit', type: 'submit' }, 'Add queue');
    const form = h('form', { id: 'add-queue-form', class: 'form', novalidate: true },
      vhostList,
      field('add-queue-vhost', 'Virtual host', vhost),
      field('add-queue-name', 'Name', name),
      field('add-queue-durable', 'Durability', durability),
      field('add-queue-auto-delete', 'Auto delete', autoDelete),
      field('add-queue-arguments', 'Arguments (JSON)', args, 'optional'),
      h('div', { class: 'actions' }, submit), result.el);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      result.clear();
      if (!name.value) { result.fail(new ApiError(0, 'bad_request', 'Give the queue a name')); return; }
      busyWhile(submit, async () => {
        try {
          const body = { durable: durability.value === 'true', auto_delete: autoDelete.value === 'true' };
          const a = parseJsonField(args.value, 'Arguments');
          if (a) body.arguments = a;
          await api('PUT', '/queues/' + enc(vhost.value) + '/' + enc(name.value), body);
          result.ok('Queue ' + name.value + ' declared.');
          name.value = '';
          done();
        } catch (err) { result.fail(err); }
      });
    });
    return h('details', { class: 'box', id: 'add-queue' }, h('summary', null, 'Add a new queue'), form);
  }

  // ---------------------------------------------------------- one queue

  function queueView(vhost, name) {
    const heading = h('h2', { id: 'view-title' }, 'Queue ', h('span', { class: 'name', 'data-testid': 'queue-name' }, name),
      h('span', { class: 'muted' }, ' in virtual host ', h('span', { 'data-testid': 'queue-vhost' }, vhost)));
    const qPath = '/queues/' + enc(vhost) + '/' + enc(name);
    const details = kvTable('queue-details', 'Details');
    const counts = dataTable({
      id: 'queue-counts', caption: 'Messages',
      columns: ['', { label: 'Total', num: true }, { label: 'Ready', num: true }, { label: 'Unacked', num: true }],
    });
    const rates = dataTable({ id: 'queue-rates', caption: 'Message rates', columns: ['Operation', { label: 'Rate', num: true }, { label: 'Total', num: true }] });
    const consumers = dataTable({
      id: 'consumers-table', caption: 'Consumers',
      columns: ['Channel', 'Consumer tag', 'Ack required', 'Exclusive', { label: 'Prefetch', num: true }, 'Active', { label: 'Priority', num: true }, 'Arguments'],
    });
    const bindings = dataTable({ id: 'queue-bindings', caption: 'Bindings', columns: ['From exchange', 'Routing key', 'Arguments'] });

    const publish = publishForm({ vhost, exchange: '', routingKey: name, done: () => refreshSoon() });
    const get = getForm(qPath, () => refreshSoon());

    const purgeResult = resultLine('purge-result');
    const purgeButton = h('button', { id: 'purge-button', type: 'button', class: 'danger' }, 'Purge messages');
    purgeButton.addEventListener('click', () => {
      purgeResult.clear();
      if (!confirm('Purge all ready messages of queue "' + name + '"? They cannot be recovered.')) return;
      busyWhile(purgeButton, async () => {
        try {
          await api('DELETE', qPath + '/contents');
          purgeResult.ok('Queue purged.');
          refreshSoon();
        } catch (err) { purgeResult.fail(err); }
      });
    });

    // Warren's queue control: pause / resume, browse, move.
    let paused = false;
    const pauseResult = resultLine('pause-result');
    const pauseButton = h('button', { id: 'pause-button', type: 'button' }, 'Pause deliveries');
    pauseButton.addEventListener('click', () => {
      pauseResult.clear();
      busyWhile(pauseButton, async () => {
        try {
          await api('PUT', qPath + (paused ? '/resume' : '/pause'), {});
          pauseResult.ok(paused ? 'Deliveries resumed.' : 'Deliveries paused.');
          refreshSoon();
        } catch (err) { pauseResult.fail(err); }
      });
    });
    const browseCount = h('input', { type: 'number', min: 1, value: '10', inputmode: 'numeric' });
    const browseButton = h('button', { id: 'browse-button', type: 'button' }, 'Browse');
    const browseResult = resultLine('browse-result');
    const browsed = dataTable({ id: 'browse-table', caption: 'First messages', columns: ['Routing key', 'Redelivered', 'Payload'] });
    browseButton.addEventListener('click', () => {
      browseResult.clear();
      busyWhile(browseButton, async () => {
        try {
          const n = Math.max(1, parseInt(browseCount.value, 10) || 1);
          const msgs = await api('GET', qPath + '/messages?count=' + n);
          browsed.set(msgs.map(m => ({ attrs: { 'data-testid': 'browsed-row' }, cells: [m.routing_key, yesNo(m.redelivered), m.payload] })), 'No ready messages');
        } catch (err) { browseResult.fail(err); }
      });
    });
    const moveTo = h('input', { id: 'move-destination', autocomplete: 'off' });
    const moveCount = h('input', { type: 'number', min: 1, inputmode: 'numeric', placeholder: 'all' });
    const moveButton = h('button', { id: 'move-button', type: 'button' }, 'Move messages');
    const moveResult = resultLine('move-result');
    moveButton.addEventListener('click', () => {
      moveResult.clear();
      busyWhile(moveButton, async () => {
        try {
          const body = { destination: moveTo.value };
          if (moveCount.value !== '') body.count = Math.max(1, parseInt(moveCount.value, 10) || 1);
          const r = await api('POST', qPath + '/move', body);
          moveResult.ok('Moved ' + r.moved + ' messages.');
          refreshSoon();
        } catch (err) { moveResult.fail(err); }
      });
    });

    const deleteResult = resultLine('delete-result');
    const ifEmpty = h('input', { type: 'checkbox', id: 'delete-if-empty' });
    const ifUnused = h('input', { type: 'checkbox', id: 'delete-if-unused' });
    const deleteButton = h('button', { id: 'delete-button', type: 'button', class: 'danger' }, 'Delete queue');
    deleteButton.addEventListener('click', () => {
      deleteResult.clear();
      if (!confirm('Delete queue "' + name + '" and its messages? This cannot be undone.')) return;
      busyWhile(deleteButton, async () => {
        try {
          const q = [ifEmpty.checked ? 'if-empty=true' : '', ifUnused.checked ? 'if-unused=true' : ''].filter(Boolean).join('&');
          await api('DELETE', qPath + (q ? '?' + q : ''));
          flash('Queue "' + name + '" deleted.');
          location.hash = '#/queues';
        } catch (err) { deleteResult.fail(err); }
      });
    });

    const body = h('div', null,
      h('p', null, h('a', { href: '#/queues' }, '← All queues')),
      h('div', { class: 'grid' },
        section('Details', details.el),
        h('div', null, section('Messages', counts.el), section('Message rates', rates.el))),
      section('Consumers', consumers.el),
      section('Bindings', bindings.el),
      h('div', { class: 'grid' },
        section('Publish message', h('p', { class: 'muted' }, 'Published through the default exchange with routing key ', h('code', null, name), '.'), publish),
        section('Get messages', h('p', { class: 'muted' }, 'Getting messages is destructive unless they are requeued.'), get)),
      h('div', { class: 'grid' },
        section('Pause', h('p', null, 'A paused queue keeps its messages and delivers none (kept across restarts).'), pauseButton, pauseResult.el),
        section('Browse', h('p', { class: 'muted' }, 'The first messages, left in place.'),
          field('browse-count', 'Messages', browseCount), browseButton, browseResult.el, browsed.el)),
      section('Move messages', h('p', { class: 'muted' }, 'To another queue of this virtual host, keeping properties and x-death (dead-letter redrive).'),
        field('move-to', 'Destination queue', moveTo), field('move-count', 'How many', moveCount, 'optional'), moveButton, moveResult.el),
      h('div', { class: 'grid' },
        section('Purge', h('p', null, 'Remove every ready message from this queue.'), purgeButton, purgeResult.el),
        section('Delete', h('div', { class: 'checks' },
          h('label', null, ifEmpty, ' only if empty'), h('label', null, ifUnused, ' only if unused')),
        deleteButton, deleteResult.el)));

    return {
      title: 'Queue ' + name,
      heading,
      body,
      async update() {
        const [q, bs] = await Promise.all([api('GET', qPath), api('GET', qPath + '/bindings')]);
        paused = q.state === 'paused';
        pauseButton.textContent = paused ? 'Resume deliveries' : 'Pause deliveries';
        details.set([
          ['Virtual host', q.vhost, 'vhost'],
          ['Type', q.type, 'type'],
          ['State', q.state, 'state'],
          ['Features', h('span', null, features(q)), 'features'],
          ['Arguments', isEmpty(q.arguments) ? '' : json(q.arguments), 'arguments'],
          ['Policy', q.policy || '', 'policy'],
          q.owner_pid_details ? ['Exclusive owner', q.owner_pid_details.name, 'owner'] : null,
          ['Consumers', num(q.consumers), 'consumers'],
          ['Consumer capacity', q.consumer_capacity === undefined ? '' : Math.round(q.consumer_capacity * 100) + '%', 'capacity'],
          ['Memory', fmtBytes(q.memory), 'memory'],
          ['Idle since', q.idle_since ? new Date(q.idle_since).toLocaleString() : 'active', 'idle'],
          ['Node', q.node, 'node'],
        ]);
        counts.set([
          { attrs: { 'data-row': 'messages' }, cells: ['Messages',
            { v: num(q.messages), attrs: { id: 'q-total', 'data-testid': 'q-total' } },
            { v: num(q.messages_ready), attrs: { id: 'q-ready', 'data-testid': 'q-ready' } },
            { v: num(q.messages_unacknowledged), attrs: { id: 'q-unacked', 'data-testid': 'q-unacked' } }] },
          { attrs: { 'data-row': 'bytes' }, cells: ['Message body bytes', fmtBytes(q.message_bytes), fmtBytes(q.message_bytes_ready), fmtBytes(q.message_bytes_unacknowledged)] },
          { attrs: { 'data-row': 'rates' }, cells: ['Rate', fmtRate(rateOf(q, 'messages')), fmtRate(rateOf(q, 'messages_ready')), fmtRate(rateOf(q, 'messages_unacknowledged'))] },
        ]);
        rates.set(statRows(q.message_stats, [['publish', 'Publish'], ['deliver_get', 'Deliver / get'], ['deliver', 'Deliver (manual ack)'],
          ['deliver_no_ack', 'Deliver (auto ack)'], ['get', 'Get (manual ack)'], ['get_no_ack', 'Get (auto ack)'],
          ['redeliver', 'Redelivered'], ['ack', 'Consumer ack']]), 'No messages yet');
        consumers.set((q.consumer_details || []).map(c => ({
          attrs: { 'data-testid': 'consumer-row' },
          cells: [(c.channel_details && c.channel_details.name) || '', c.consumer_tag, yesNo(c.ack_required), yesNo(c.exclusive),
            num(c.prefetch_count), c.active === undefined ? '' : yesNo(c.active), num(c.priority), isEmpty(c.arguments) ? '' : json(c.arguments)],
        })), 'No consumers');
        bindings.set((bs || []).map(b => ({
          cells: [b.source === '' ? '(Default exchange binding)' : exchangeLink(b.vhost, b.source), b.routing_key, isEmpty(b.arguments) ? '' : json(b.arguments)],
        })), 'No bindings');
      },
    };
  }

  function getForm(qPath, done) {
    const ackmode = select([
      ['ack_requeue_true', 'Requeue: put the messages back (ack_requeue_true)'],
      ['ack_requeue_false', 'Ack: remove the messages (ack_requeue_false)'],
      ['reject_requeue_true', 'Reject and requeue (reject_requeue_true)'],
      ['reject_requeue_false', 'Reject, no requeue: dead-letter or drop (reject_requeue_false)'],
    ], 'ack_requeue_true');
    const encoding = select([['auto', 'Automatic string/base64'], ['base64', 'base64']], 'auto');
    const count = h('input', { type: 'number', min: 1, value: '1', inputmode: 'numeric' });
    const truncate = h('input', { type: 'number', min: 0, value: '50000', inputmode: 'numeric' });
    const submit = h('button', { id: 'get-submit', type: 'submit' }, 'Get messages');
    const status = resultLine('get-status');
    const out = h('div', { id: 'get-result', 'data-testid': 'get-result' });
    const form = h('form', { id: 'get-form', class: 'form', novalidate: true },
      field('get-ackmode', 'Ack mode', ackmode),
      field('get-encoding', 'Encoding', encoding),
      field('get-count', 'Messages', count),
      field('get-truncate', 'Truncate payloads at (bytes)', truncate),
      h('div', { class: 'actions' }, submit), status.el, out);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      status.clear();
      busyWhile(submit, async () => {
        try {
          const body = { count: Math.max(1, parseInt(count.value, 10) || 1), ackmode: ackmode.value, encoding: encoding.value };
          if (truncate.value !== '') body.truncate = Math.max(0, parseInt(truncate.value, 10) || 0);
          const msgs = await api('POST', qPath + '/get', body);
          fill(out, msgs.map((m, i) => messageBox(m, i + 1)));
          status.ok(msgs.length ? msgs.length + (msgs.length === 1 ? ' message' : ' messages') + ' fetched.' : 'Queue is empty.');
          done();
        } catch (err) { out.replaceChildren(); status.fail(err); }
      });
    });
    return form;
  }

  function messageBox(m, n) {
    const props = m.properties || {};
    const propRows = Object.keys(props).filter(k => k !== 'headers').map(k => h('div', null, h('span', { class: 'key' }, k + ': '), String(props[k])));
    const headerRows = Object.keys(props.headers || {}).map(k => h('div', null, h('span', { class: 'key' }, k + ': '), json(props.headers[k])));
    const kv = kvTable('message-' + n, 'Message ' + n);
    kv.set([
      ['Exchange', m.exchange === '' ? '(AMQP default)' : m.exchange],
      ['Routing key', m.routing_key],
      ['Redelivered', yesNo(m.redelivered)],
      ['Messages left', num(m.message_count)],
      ['Properties', propRows.length ? h('div', { 'data-testid': 'message-properties' }, propRows) : ''],
      ['Headers', headerRows.length ? h('div', { 'data-testid': 'message-headers' }, headerRows) : ''],
      ['Payload', num(m.payload_bytes) + ' bytes, encoding: ' + m.payload_encoding],
    ]);
    return h('article', { class: 'message', 'data-testid': 'message' },
      h('h4', null, 'Message ' + n),
      kv.el,
      h('pre', { class: 'payload', 'data-testid': 'message-payload' }, m.payload));
  }

  // ---------------------------------------------------------- publishing

  /** The publish form of a queue (exchange '' and a fixed routing key) or
   *  of an exchange (routingKey null: a routing key field). */
  function publishForm({ vhost, exchange, routingKey, done }) {
    const key = routingKey === null ? h('input', { autocomplete: 'off' }) : null;
    const mode = select([['1', '1 - Non-persistent'], ['2', '2 - Persistent']], '1');
    const headers = h('textarea', { rows: 2, placeholder: '{"key": "value"}' });
    const props = h('textarea', { rows: 2, placeholder: '{"content_type": "text/plain", "message_id": "1"}' });
    const encoding = select([['string', 'String'], ['base64', 'base64']], 'string');
    const payload = h('textarea', { rows: 4 });
    const submit = h('button', { id: 'publish-submit', type: 'submit' }, 'Publish message');
    const result = resultLine('publish-result');
    const form = h('form', { id: 'publish-form', class: 'form', novalidate: true },
      key ? field('publish-routing-key', 'Routing key', key) : null,
      field('publish-delivery-mode', 'Delivery mode', mode),
      field('publish-headers', 'Headers (JSON)', headers, 'optional'),
      field('publish-properties', 'Properties (JSON)', props, 'optional: content_type, correlation_id, expiration, message_id, priority, reply_to, type, …'),
      field('publish-encoding', 'Payload encoding', encoding),
      field('publish-payload', 'Payload', payload),
      h('div', { class: 'actions' }, submit), result.el);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      result.clear();
      busyWhile(submit, async () => {
        try {
          const properties = parseJsonField(props.value, 'Properties') || {};
          const hs = parseJsonField(headers.value, 'Headers');
          if (hs) properties.headers = hs;
          properties.delivery_mode = Number(mode.value);
          const r = await api('POST', '/exchanges/' + enc(vhost) + '/' + xPath(exchange) + '/publish', {
            routing_key: key ? key.value : routingKey,
            payload: payload.value,
            payload_encoding: encoding.value,
            properties,
          });
          result.ok(r && r.routed === false ? 'Message published, but not routed.' : 'Message published.');
          done();
        } catch (err) { result.fail(err); }
      });
    });
    return form;
  }

  // ----------------------------------------------------------- exchanges

  /** Shovels and federation links: where each moves messages from and
   *  to, its state, and what it moved. */
  function linksView() {
    const shovels = dataTable({
      id: 'shovels-table', caption: 'Shovels',
      columns: ['Virtual host', 'Name', 'State', 'Source', 'Destination', { label: 'Moved', num: true }, { label: 'Reconnects', num: true }],
    });
    const federation = dataTable({
      id: 'federation-table', caption: 'Federation links',
      columns: ['Virtual host', 'Federated', 'Upstream', 'URI', 'Status', { label: 'Moved', num: true }, { label: 'Reconnects', num: true }],
    });
    const endpoint = (uri, queue, exchange, key) =>
      h('span', null, uri || '', h('br'), h('span', { class: 'muted' },
        queue ? 'queue ' + queue : exchange ? 'exchange ' + exchange + (key ? ' (' + key + ')' : '') : ''));
    return {
      title: 'Links',
      body: h('div', null,
        section('Shovels', shovels.el),
        section('Federation links', federation.el)),
      async update() {
        const [ss, fs] = await Promise.all([api('GET', '/shovels'), api('GET', '/federation-links')]);
        shovels.set((ss || []).map(s => ({
          attrs: { 'data-testid': 'shovel-row', 'data-name': s.name },
          cells: [s.vhost, s.name,
            { v: s.state + (s.reason ? ': ' + s.reason : ''), attrs: { 'data-col': 'state' } },
            endpoint(s.src_uri, s.src_queue, s.src_exchange, s.src_exchange_key),
            endpoint(s.dest_uri, s.dest_queue, s.dest_exchange, s.dest_exchange_key),
            { v: num(s.forwarded), attrs: { 'data-col': 'forwarded' } }, num(s.reconnects)],
        })), 'No shovels');
        federation.set((fs || []).map(f => ({
          attrs: { 'data-testid': 'federation-row', 'data-name': f.exchange || f.queue },
          cells: [f.vhost,
            f.type === 'queue' ? h('span', null, 'queue ', queueLink(f.vhost, f.queue)) : h('span', null, 'exchange ', exchangeLink(f.vhost, f.exchange)),
            f.upstream, f.uri,
            { v: f.status + (f.error ? ': ' + f.error : ''), attrs: { 'data-col': 'status' } },
            num(f.forwarded), num(f.reconnects)],
        })), 'No federation links');
      },
    };
  }

  /** The event catalogue: each schema subject, its versions, and the
   *  exchanges and queues bound to it. */
  function schemasView() {
    const table = dataTable({
      id: 'schemas-table', caption: 'Schema subjects',
      columns: ['Virtual host', 'Subject', 'Type', 'Versions', 'Compatibility', 'Bound to'],
    });
    return {
      title: 'Schemas',
      body: h('div', null,
        h('p', { class: 'muted' }, 'Register versions with PUT /api/schemas/{vhost}/{subject}; bind a subject with the x-schema-subject queue argument or a policy\'s schema-subject.'),
        table.el),
      async update() {
        const subjects = await api('GET', '/schemas');
        table.set((subjects || []).map(s => {
          const latest = s.versions[s.versions.length - 1];
          const bound = s.bound_to.map(b => {
            const link = b.type === 'queue' ? queueLink(s.vhost, b.name) : exchangeLink(s.vhost, b.name);
            return h('span', { 'data-testid': 'schema-binding' }, b.type + ' ', link,
              b.version ? ' (v' + b.version + ')' : '', ' ');
          });
          return {
            attrs: { 'data-testid': 'schema-row', 'data-vhost': s.vhost, 'data-name': s.subject },
            cells: [s.vhost, s.subject, latest ? latest.schemaType : '',
              { v: s.versions.map(v => v.version).join(', '), attrs: { 'data-col': 'versions' } },
              s.compatibility, bound.length ? h('span', null, bound) : h('span', { class: 'muted' }, 'not bound')],
          };
        }), 'No schema subjects');
      },
    };
  }

  function exchangesView() {
    const table = dataTable({
      id: 'exchanges-table', caption: 'Exchanges',
      columns: ['Virtual host', 'Name', 'Type', 'Features', { label: 'Message rate in', num: true }, { label: 'Message rate out', num: true }],
    });
    return {
      title: 'Exchanges',
      body: table.el,
      async update() {
        const xs = await api('GET', '/exchanges');
        table.set((xs || []).map(x => ({
          attrs: { 'data-testid': 'exchange-row', 'data-vhost': x.vhost, 'data-name': x.name },
          cells: [x.vhost, exchangeLink(x.vhost, x.name), x.type, h('span', null, features(x)),
            fmtRate(rateOf(x.message_stats, 'publish_in')), fmtRate(rateOf(x.message_stats, 'publish_out'))],
        })), 'No exchanges');
      },
    };
  }

  function exchangeView(vhost, name) {
    if (name === 'amq.default') name = '';
    const shown = name === '' ? '(AMQP default)' : name;
    const heading = h('h2', { id: 'view-title' }, 'Exchange ', h('span', { class: 'name', 'data-testid': 'exchange-name' }, shown),
      h('span', { class: 'muted' }, ' in virtual host ', vhost));
    const xUrl = '/exchanges/' + enc(vhost) + '/' + xPath(name);
    const details = kvTable('exchange-details', 'Details');
    const bindings = dataTable({ id: 'exchange-bindings', caption: 'Bindings from this exchange', columns: ['To', 'Type', 'Routing key', 'Arguments'] });
    const publish = publishForm({ vhost, exchange: name, routingKey: null, done: () => refreshSoon() });
    const body = h('div', null,
      h('p', null, h('a', { href: '#/exchanges' }, '← All exchanges')),
      h('div', { class: 'grid' },
        section('Details', details.el),
        section('Publish message', publish)),
      section('Bindings from this exchange', name === '' ? h('p', { class: 'muted' }, 'The default exchange routes to the queue named by the routing key.') : bindings.el));
    return {
      title: 'Exchange ' + shown,
      heading,
      body,
      async update() {
        const [x, bs] = await Promise.all([api('GET', xUrl), name === '' ? Promise.resolve([]) : api('GET', xUrl + '/bindings/source')]);
        const s = x.message_stats || {};
        details.set([
          ['Type', x.type, 'type'],
          ['Features', h('span', null, features(x)), 'features'],
          ['Arguments', isEmpty(x.arguments) ? '' : json(x.arguments), 'arguments'],
          ['Policy', x.policy || '', 'policy'],
          ['Message rate in', fmtRate(rateOf(s, 'publish_in')) + ' (' + num(s.publish_in || 0) + ' total)', 'rate-in'],
          ['Message rate out', fmtRate(rateOf(s, 'publish_out')) + ' (' + num(s.publish_out || 0) + ' total)', 'rate-out'],
        ]);
        bindings.set((bs || []).map(b => ({
          cells: [b.destination_type === 'queue' ? queueLink(b.vhost, b.destination) : exchangeLink(b.vhost, b.destination),
            b.destination_type, b.routing_key, isEmpty(b.arguments) ? '' : json(b.arguments)],
        })), 'No bindings');
      },
    };
  }

  // ------------------------------------------- connections and channels

  function connectionsView() {
    const table = dataTable({
      id: 'connections-table', caption: 'Connections',
      columns: ['Virtual host', 'Name', 'User', 'State', 'TLS', 'Protocol', 'Client',
        { label: 'Channels', num: true }, { label: 'From client', num: true }, { label: 'To client', num: true }, 'Connected at'],
    });
    return {
      title: 'Connections',
      body: table.el,
      async update() {
        const cs = await api('GET', '/connections');
        table.set((cs || []).map(c => {
          const cp = c.client_properties || {};
          const client = [cp.product, cp.version].filter(x => typeof x === 'string').join(' ');
          return {
            attrs: { 'data-testid': 'connection-row', 'data-name': c.name },
            cells: [c.vhost,
              h('span', null, h('span', { class: 'name' }, c.name), c.user_provided_name ? h('span', { class: 'muted' }, ' (' + c.user_provided_name + ')') : null),
              c.user, c.state, c.ssl ? (c.ssl_protocol || 'yes') : 'no', c.protocol, client,
              num(c.channels), fmtByteRate(rateOf(c, 'recv_oct')), fmtByteRate(rateOf(c, 'send_oct')), fmtTime(c.connected_at)],
          };
        }), 'No connections');
      },
    };
  }

  function channelsView() {
    const table = dataTable({
      id: 'channels-table', caption: 'Channels',
      columns: ['Channel', 'Virtual host', 'User', { label: 'Mode', title: 'C: confirm, T: transactional' }, 'State',
        { label: 'Unconfirmed', num: true }, { label: 'Prefetch', num: true }, { label: 'Unacked', num: true },
        { label: 'Consumers', num: true }, { label: 'Publish', num: true }, { label: 'Deliver / get', num: true }, { label: 'Ack', num: true }],
    });
    return {
      title: 'Channels',
      body: table.el,
      async update() {
        const chs = await api('GET', '/channels');
        table.set((chs || []).map(c => {
          const s = c.message_stats || {};
          const modeTags = [c.confirm ? h('abbr', { class: 'tag', title: 'confirm' }, 'C') : null,
            c.transactional ? h('abbr', { class: 'tag', title: 'transactional' }, 'T') : null];
          const prefetch = [c.prefetch_count ? num(c.prefetch_count) : '', c.global_prefetch_count ? num(c.global_prefetch_count) + ' (global)' : ''].filter(Boolean).join(' ');
          return {
            attrs: { 'data-testid': 'channel-row', 'data-name': c.name },
            cells: [h('span', { class: 'name' }, c.name), c.vhost, c.user, h('span', null, modeTags), c.state,
              num(c.messages_unconfirmed), prefetch, num(c.messages_unacknowledged), num(c.consumer_count),
              fmtRate(rateOf(s, 'publish')), fmtRate(rateOf(s, 'deliver_get')), fmtRate(rateOf(s, 'ack'))],
          };
        }), 'No channels');
      },
    };
  }

  // ------------------------------------------------------------- flash

  /** A message that survives one navigation (e.g. "queue deleted"). */
  function flash(text) {
    const el = $('flash') || h('p', { id: 'flash', class: 'result ok', role: 'status', 'data-testid': 'flash' });
    el.textContent = text;
    $('app').insertBefore(el, $('view'));
    setTimeout(() => { if (el.textContent === text) el.remove(); }, 8000);
  }

  // -------------------------------------------------------------- start

  $('login-form').addEventListener('submit', logIn);
  $('logout').addEventListener('click', () => loggedOut(null));
  // The skip link moves focus without touching the route in the hash.
  document.querySelector('a.skip').addEventListener('click', (e) => { e.preventDefault(); $('view').focus(); });
  window.addEventListener('hashchange', () => {
    if (!session()) { showLogin(); return; }
    route();
    const title = $('view-title');
    if (title) { title.setAttribute('tabindex', '-1'); title.focus({ preventScroll: true }); }
  });

  if (session()) startApp(); else showLogin();
})();
