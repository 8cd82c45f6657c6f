// The Saga Explorer in a real browser, against a real tracker that tests/tests/ui.rs filled with
// real sagas through a real broker. The flow an on-call engineer follows:
//
//   search → open a saga → the timeline shows the failure and the compensation → a new event
//   appears without a reload → export (NDJSON and CSV) holds every matching saga → the trace
//   link carries the saga's trace id
//
// plus the overview, the quick box, paging, input errors, stuck and late markers, keyboard
// reach and labels of every control, and the API reference at /docs rendering offline. Every
// page is also checked by lib.mjs: no console error, no CSP violation, nothing fetched from a
// host other than the tracker.
//
// Environment (set by tests/tests/ui.rs): BASE_URL, UI_FIXTURE (JSON: what the Rust side
// seeded, see `Fixture` there), SCREENSHOT_DIR.

import { readFileSync } from 'node:fs';
import {
  assert,
  assertEq,
  eventually,
  expectPresent,
  here,
  log,
  screenshot,
  startHarness,
  url,
  visit,
  waitForRust,
} from './lib.mjs';

const fx = JSON.parse(process.env.UI_FIXTURE || '{}');
for (const key of ['topic', 'completed', 'failed', 'running', 'stuck', 'bulkType', 'bulkEuIds', 'bulkTraceId', 'failedTraceId']) {
  assert(fx[key] !== undefined, `UI_FIXTURE lacks ${key}`);
}

const SEARCH_PARAMS = [
  'sagaType', 'status', 'step', 'service', 'businessKey', 'traceId', 'startedAfter', 'startedBefore',
  'updatedAfter', 'updatedBefore', 'minDurationMs', 'stuck', 'metadata', 'sort', 'limit',
];
const STATUSES = ['STARTED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'COMPENSATING', 'COMPENSATED'];

const h = await startHarness();
const context = await h.newContext({ viewport: { width: 1280, height: 900 } });
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(url('/')).origin });
const page = await h.newPage(context);

/** The saga page's path for `id`. */
const sagaPath = (id) => `/ui/sagas/${encodeURIComponent(id)}`;

/** Both nav links, on whatever page is open. */
async function expectNav(what) {
  await expectPresent(page, 'nav a[href="/ui"]', `${what}: nav link to the Overview`);
  await expectPresent(page, 'nav a[href="/ui/sagas"]', `${what}: nav link to Search`);
  await expectPresent(page, 'form#go input#go-q[name="q"]', `${what}: the quick box`);
}

/** Saga ids of the result rows on the page. */
async function resultIds() {
  return page.locator('table#results tbody tr[data-saga-id]').evaluateAll((rows) => rows.map((r) => r.dataset.sagaId));
}

/** Sets the search form's control `name` to `value`, whatever kind of control it is. */
async function setControl(name, value) {
  const control = page.locator(`form#search-form [name="${name}"]`);
  const n = await control.count();
  assert(n > 0, `form#search-form has no control named ${name}`);
  const kind = await control.first().evaluate((e) => `${e.tagName.toLowerCase()}:${e.type || ''}`);
  if (kind.startsWith('select')) await control.first().selectOption(String(value));
  else if (kind === 'input:checkbox') {
    const box = page.locator(`form#search-form [name="${name}"][value="${value}"]`);
    assert((await box.count()) === 1, `form#search-form has no ${name} checkbox with value ${value}`);
    await box.check();
  } else await control.first().fill(String(value));
}

/** Submits the search form (its submit button, or Enter) and waits for the result page. */
async function submitSearch() {
  const submit = page.locator('form#search-form button[type="submit"], form#search-form input[type="submit"], form#search-form button:not([type])');
  const go = page.waitForURL((u) => u.pathname === '/ui/sagas' && u.search.length > 1);
  if (await submit.count()) await submit.first().click();
  else await page.locator('form#search-form [name="businessKey"]').press('Enter');
  await go;
}

/** Every page of a search, following a#next-page (bounded); returns the ids in order. */
async function followPages(startPath, maxPages = 20) {
  await visit(page, startPath);
  const ids = [];
  for (let i = 0; i < maxPages; i++) {
    const onPage = await resultIds();
    const countText = (await page.locator('#result-count').textContent()) ?? '';
    assert(countText.includes(String(onPage.length)), `#result-count says "${countText.trim()}" but the page shows ${onPage.length} rows (${here(page)})`);
    ids.push(...onPage);
    if (i > 0) await expectPresent(page, 'a#first-page', `page ${i + 1} of the results: link to the first page`);
    const next = page.locator('a#next-page');
    if ((await next.count()) === 0) return ids;
    const href = await next.getAttribute('href');
    assert(href && href.includes('cursor='), `a#next-page href carries no cursor=: ${href}`);
    await Promise.all([page.waitForURL((u) => u.search.includes('cursor=')), next.click()]);
  }
  throw new Error(`more than ${maxPages} pages of results for ${startPath}`);
}

const failedId = fx.failed;
const bulkFilter = `sagaType=${encodeURIComponent(fx.bulkType)}&metadata=${encodeURIComponent('region=eu')}`;

// ---------------------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------------------

await h.step('GET / redirects to the Overview at /ui', async () => {
  await visit(page, '/');
  assertEq(new URL(page.url()).pathname, '/ui', 'path after GET /');
  await expectNav('Overview');
}, { page });

await h.step('the Overview shows a card per saga type with numbers linking into search', async () => {
  await visit(page, '/ui?window=24h');
  for (const type of ['ORDER_CREATION', fx.bulkType]) {
    await expectPresent(page, `section.type-card[data-saga-type="${type}"]`, `card for ${type}`);
  }
  const card = page.locator(`section.type-card[data-saga-type="${fx.bulkType}"]`);
  const failed = card.locator('a[data-metric="failed"]');
  assert((await failed.count()) === 1, `the ${fx.bulkType} card has no a[data-metric=failed]`);
  const href = await failed.getAttribute('href');
  assert(href && href.startsWith('/ui/sagas?'), `a[data-metric=failed] links to ${href}, not into /ui/sagas?…`);
  assert(href.includes(`sagaType=${encodeURIComponent(fx.bulkType)}`), `a[data-metric=failed] (${href}) does not filter by sagaType`);
  const shown = Number(((await failed.textContent()) ?? '').replace(/[^0-9]/g, ''));
  assertEq(shown, fx.bulkFailed, `failed ${fx.bulkType} sagas in the last 24 h (a[data-metric=failed] text)`);
  const svgs = await page.locator('svg').count();
  assert(svgs >= 1, 'the Overview has no SVG chart');
  const text = await page.locator('main, body').first().innerText();
  assert(text.includes(fx.bulkFailedStep), `the Overview names no top failing step (${fx.bulkFailedStep})`);
  assert(/no[_ ]progress/i.test(text), 'the Overview lists no stuck sagas by reason (no_progress)');
  await screenshot(page, 'overview');
  await Promise.all([page.waitForURL((u) => u.pathname === '/ui/sagas'), failed.click()]);
  const ids = await resultIds();
  assertEq(ids.length, Math.min(shown, 50), `rows behind the failed-count link (${here(page)})`);
  const statuses = await page.locator('table#results tbody tr .badge[data-status]').evaluateAll((b) => b.map((e) => e.dataset.status));
  assert(statuses.every((s) => s === 'FAILED'), `the failed-count link lists sagas that are not FAILED: ${statuses}`);
}, { page });

await h.step('the Overview renders for each window (1h, 7d)', async () => {
  for (const w of ['1h', '7d']) {
    await visit(page, `/ui?window=${w}`);
    await expectPresent(page, 'section.type-card[data-saga-type]', `Overview window=${w}`);
  }
}, { page });

// ---------------------------------------------------------------------------------------
// Keyboard and labels
// ---------------------------------------------------------------------------------------

await h.step('Tab reaches the quick box and every search control', async () => {
  await visit(page, '/ui/sagas');
  await expectNav('Search');
  await page.locator('body').click({ position: { x: 1, y: 1 } }).catch(() => {});
  await page.evaluate(() => document.activeElement && document.activeElement.blur && document.activeElement.blur());
  const reached = new Set();
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press('Tab');
    const name = await page.evaluate(() => {
      const e = document.activeElement;
      if (!e || e === document.body) return '';
      const inSearch = e.closest('form#search-form') ? 'search:' : '';
      return e.id === 'go-q' ? 'go-q' : `${inSearch}${e.getAttribute('name') || e.id || e.tagName}`;
    });
    reached.add(name);
    if (reached.has('go-q') && SEARCH_PARAMS.every((p) => reached.has(`search:${p}`))) break;
  }
  assert(reached.has('go-q'), `Tab never focused input#go-q (reached: ${[...reached].join(', ')})`);
  const missed = SEARCH_PARAMS.filter((p) => !reached.has(`search:${p}`));
  assert(missed.length === 0, `Tab never reached search controls: ${missed.join(', ')}`);
}, { page });

await h.step('every search control and the quick box has an accessible label', async () => {
  await visit(page, '/ui/sagas');
  const controls = page.locator('#go-q, form#search-form input:not([type=hidden]):not([type=submit]), form#search-form select, form#search-form textarea');
  const n = await controls.count();
  assert(n >= SEARCH_PARAMS.length, `only ${n} labelled-control candidates in the search form`);
  const unlabelled = [];
  for (let i = 0; i < n; i++) {
    const c = controls.nth(i);
    const info = await c.evaluate((e, i) => {
      e.setAttribute('data-label-probe', String(i));
      const byLabel = e.labels && e.labels.length ? e.labels[0].innerText : '';
      const byAria = e.getAttribute('aria-label') || '';
      const byRef = (e.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean)
        .map((id) => document.getElementById(id)?.innerText || '').join(' ');
      return { name: e.getAttribute('name') || e.id, value: e.value, label: (byLabel || byAria || byRef).trim() };
    }, i);
    if (!info.label) {
      unlabelled.push(`${info.name}${info.value ? `=${info.value}` : ''}`);
      continue;
    }
    const found = await page.getByLabel(info.label, { exact: true }).and(page.locator(`[data-label-probe="${i}"]`)).count();
    if (found !== 1) unlabelled.push(`${info.name} (label "${info.label}" does not find it with getByLabel)`);
  }
  assert(unlabelled.length === 0, `controls without an accessible label: ${unlabelled.join(', ')}`);
  for (const s of STATUSES) {
    assert((await page.locator(`form#search-form input[type=checkbox][name=status][value="${s}"]`).count()) === 1, `no status checkbox with value ${s}`);
  }
  // The contract asks for a checkbox value=true; a select that also offers true is the same URL.
  const stuckBox = await page.locator('form#search-form input[type=checkbox][name=stuck][value=true]').count();
  const stuckOption = await page.locator('form#search-form select[name=stuck] option[value=true]').count();
  assert(stuckBox + stuckOption === 1, `no stuck control with value=true (checkbox: ${stuckBox}, select option: ${stuckOption})`);
  for (const p of ['startedAfter', 'startedBefore', 'updatedAfter', 'updatedBefore']) {
    assertEq(await page.locator(`form#search-form [name=${p}]`).getAttribute('type'), 'datetime-local', `type of the ${p} input`);
  }
  assertEq(await page.locator('form#search-form textarea[name=metadata]').count(), 1, 'textarea[name=metadata]');
  const sorts = await page.locator('form#search-form select[name=sort] option').evaluateAll((o) => o.map((e) => e.value));
  assert(sorts.includes('startedAt') && sorts.includes('updatedAt'), `select[name=sort] offers ${sorts}`);
  assertEq(await page.locator('form#search-form select[name=limit]').count(), 1, 'select[name=limit]');
  const method = ((await page.locator('form#search-form').getAttribute('method')) || 'get').toLowerCase();
  assertEq(method, 'get', 'form#search-form method');
}, { page });

// ---------------------------------------------------------------------------------------
// Search → saga
// ---------------------------------------------------------------------------------------

await h.step('searching by type and status finds the compensated saga', async () => {
  await visit(page, '/ui/sagas');
  await setControl('sagaType', 'ORDER_CREATION');
  await setControl('status', 'FAILED');
  await setControl('status', 'COMPENSATED');
  await setControl('metadata', 'region=eu');
  await submitSearch();
  const q = new URL(page.url()).searchParams;
  assertEq(q.get('sagaType'), 'ORDER_CREATION', 'sagaType in the result URL');
  assert(q.getAll('status').join(',').includes('COMPENSATED'), `status in the result URL: ${page.url()}`);
  const ids = await resultIds();
  assert(ids.includes(failedId), `${failedId} is not among the results: ${ids}`);
  assert(!ids.includes(fx.completed), `${fx.completed} (COMPLETED) matched a FAILED/COMPENSATED search`);
  const row = page.locator(`table#results tbody tr[data-saga-id="${failedId}"]`);
  await expectPresent(page, `table#results tbody tr[data-saga-id="${failedId}"] .badge[data-status="COMPENSATED"]`, 'status badge of the compensated saga');
  await Promise.all([page.waitForURL((u) => u.pathname === sagaPath(failedId)), row.locator('a.saga-link').first().click()]);
}, { page });

await h.step('the saga page shows the failure and the compensation on the timeline', async () => {
  if (new URL(page.url()).pathname !== sagaPath(failedId)) await visit(page, sagaPath(failedId));
  await expectNav('Saga page');
  const title = (await page.locator('h1').first().textContent()) ?? '';
  assert(title.includes(failedId), `h1 "${title.trim()}" does not name ${failedId}`);
  await expectPresent(page, '#saga-status .badge[data-status="COMPENSATED"]', 'saga status badge');
  await expectPresent(page, 'svg#timeline', 'the timeline');
  for (const svc of fx.failedServices) {
    await expectPresent(page, `svg#timeline g.lane[data-service="${svc}"]`, `timeline lane of ${svc}`);
  }
  await expectPresent(page, `svg#timeline rect.bar[data-step="${fx.failedStep}"][data-status="FAILED"]`, 'the failed step bar');
  for (const step of fx.compensatedSteps) {
    await expectPresent(page, `svg#timeline rect.bar.compensation[data-step="${step}"]`, `compensation bar of ${step}`);
  }
  const failure = (await (await expectPresent(page, '#failure', 'failure block')).innerText());
  for (const part of [fx.failedStep, fx.failedCode, fx.failedMessage]) {
    assert(failure.includes(part), `#failure does not mention "${part}": ${failure}`);
  }
  const rows = page.locator('table#events tbody tr[data-event-id]');
  assertEq(await rows.count(), fx.failedEventCount, 'event rows of the compensated saga');
  const head = (await page.locator('table#events thead').innerText()).toLowerCase();
  for (const col of ['topic', 'partition', 'offset']) assert(head.includes(col), `table#events has no ${col} column (header: ${head})`);
  const firstRow = await rows.first().innerText();
  assert(firstRow.includes(fx.topic), `event row does not show the Kafka topic ${fx.topic}: ${firstRow}`);
  await screenshot(page, 'saga-failed-compensated');
}, { page });

await h.step('the saga JSON is embedded and the copy button copies it', async () => {
  const embedded = JSON.parse(await page.locator('script#saga-json[type="application/json"]').textContent());
  assertEq(embedded.sagaId, failedId, 'sagaId in script#saga-json');
  await page.locator('button#copy-json').click();
  const copied = await eventually(async () => page.evaluate(() => navigator.clipboard.readText()), 5000, 'the clipboard to hold the saga JSON');
  assertEq(JSON.parse(copied).sagaId, failedId, 'sagaId in the copied JSON');
}, { page });

await h.step('the trace link and the log link carry the saga\'s ids and time range', async () => {
  const trace = page.locator(`a.trace-link[data-trace-id="${fx.failedTraceId}"]`);
  assert((await trace.count()) >= 1, `no a.trace-link[data-trace-id=${fx.failedTraceId}] (links: ${await page.locator('a.trace-link').evaluateAll((a) => a.map((e) => e.dataset.traceId))})`);
  assertEq(await trace.first().getAttribute('href'), `http://127.0.0.1:9/trace/${fx.failedTraceId}`, 'trace link href');
  const logHref = await (await expectPresent(page, 'a#log-link', 'log link')).getAttribute('href');
  const u = new URL(logHref);
  assertEq(`${u.origin}${u.pathname}`, 'http://127.0.0.1:9/logs', 'log link target');
  assertEq(u.searchParams.get('saga'), failedId, 'saga in the log link');
  const saga = JSON.parse(await page.locator('script#saga-json').textContent());
  const from = Number(u.searchParams.get('from'));
  const to = Number(u.searchParams.get('to'));
  assert(Number.isInteger(from) && from <= Date.parse(saga.startedAt), `log link from=${from} is not at or before startedAt ${saga.startedAt}`);
  assert(Number.isInteger(to) && to >= Date.parse(saga.endedAt ?? saga.updatedAt), `log link to=${to} is not at or after the saga's end ${saga.endedAt}`);
}, { page });

await h.step('a late event is marked on the completed saga', async () => {
  await visit(page, sagaPath(fx.completed));
  await expectPresent(page, '#saga-status .badge[data-status="COMPLETED"]', 'status of the completed saga');
  await expectPresent(page, '.late-marker', 'late-event marker');
  const lateRow = page.locator('table#events tbody tr[data-event-id]').filter({ has: page.locator('.late-marker') });
  assert((await lateRow.count()) >= 1, 'the .late-marker is not on an event row');
}, { page });

await h.step('a stuck saga shows a banner with its reason, and is marked in search', async () => {
  await visit(page, sagaPath(fx.stuck));
  const banner = (await (await expectPresent(page, '#stuck-banner', 'stuck banner')).innerText());
  assert(/no[_ ]progress/i.test(banner), `#stuck-banner gives no reason (no_progress): ${banner}`);
  await visit(page, '/ui/sagas?stuck=true&sagaType=ORDER_CREATION');
  const ids = await resultIds();
  assert(ids.includes(fx.stuck), `stuck=true does not list ${fx.stuck}: ${ids}`);
  assert(!ids.includes(fx.running), `stuck=true lists the fresh running saga ${fx.running}`);
  await expectPresent(page, `table#results tbody tr[data-saga-id="${fx.stuck}"] .stuck-marker`, 'stuck marker in the results');
}, { page });

// ---------------------------------------------------------------------------------------
// Live update
// ---------------------------------------------------------------------------------------

await h.step('a new event appears on the open saga page without a reload', async () => {
  await visit(page, sagaPath(fx.running));
  await expectPresent(page, '#saga-status .badge[data-status="IN_PROGRESS"]', 'status of the running saga before');
  const rowsBefore = await page.locator('table#events tbody tr[data-event-id]').count();
  assertEq(rowsBefore, fx.runningEventCount, 'event rows of the running saga before the live event');
  let navigations = 0;
  const onNav = (f) => { if (f === page.mainFrame()) navigations += 1; };
  page.on('framenavigated', onNav);
  const marker = `m${Math.random()}`;
  await page.evaluate((m) => { window.__uiTestMarker = m; }, marker);
  try {
    await waitForRust('live-event', [fx.running]);
    await page.waitForFunction(
      (n) => document.querySelectorAll('table#events tbody tr[data-event-id]').length >= n,
      rowsBefore + fx.liveEventCount,
      { timeout: 30_000 },
    ).catch(async () => {
      throw new Error(`table#events still has ${await page.locator('table#events tbody tr[data-event-id]').count()} rows 30 s after the live events (want ${rowsBefore + fx.liveEventCount})`);
    });
    await page.locator('#saga-status .badge[data-status="COMPLETED"]').waitFor({ timeout: 15_000 }).catch(() => {
      throw new Error('#saga-status did not turn COMPLETED after the live events');
    });
    await page.locator(`svg#timeline g.lane[data-service="${fx.liveService}"]`).waitFor({ timeout: 15_000 }).catch(() => {
      throw new Error(`the timeline grew no lane for ${fx.liveService}`);
    });
    await page.locator(`svg#timeline rect.bar[data-step="${fx.liveStep}"]`).waitFor({ timeout: 15_000 }).catch(() => {
      throw new Error(`the timeline grew no bar for ${fx.liveStep}`);
    });
    const live = ((await page.locator('#live-status').textContent()) ?? '').trim();
    assert(live.length > 0, '#live-status is empty');
    assertEq(await page.evaluate(() => window.__uiTestMarker), marker, 'the window marker (a reload would have lost it)');
    assertEq(navigations, 0, 'main-frame navigations during the live update');
  } finally {
    page.off('framenavigated', onNav);
  }
}, { page });

// ---------------------------------------------------------------------------------------
// Paging and export
// ---------------------------------------------------------------------------------------

await h.step('paging walks every matching saga once', async () => {
  const ids = await followPages(`/ui/sagas?${bulkFilter}&limit=50`);
  assertEq(new Set(ids).size, ids.length, 'distinct ids across pages');
  assertEq(ids.length, fx.bulkEuIds.length, 'sagas across all pages (the REST API counts)');
  assertEq([...ids].sort().join(','), [...fx.bulkEuIds].sort().join(','), 'the ids across all pages');
  const viaMeta = await followPages(`/ui/sagas?sagaType=${encodeURIComponent(fx.bulkType)}&meta.region=eu&limit=50`);
  assertEq(viaMeta.length, fx.bulkEuIds.length, 'sagas across pages with the API spelling meta.region=eu');
}, { page });

await h.step('the search page is the one in the screenshot', async () => {
  await visit(page, `/ui/sagas?sagaType=${encodeURIComponent(fx.bulkType)}&limit=25`);
  await screenshot(page, 'search');
}, { page });

/** Clicks an export link, checks the download and returns its text. */
async function download(selector, format) {
  const link = await expectPresent(page, selector, `${format} export link`);
  const href = await link.getAttribute('href');
  assert(href && href.startsWith(`/ui/export?`), `${selector} href is ${href}`);
  const q = new URL(url(href)).searchParams;
  assertEq(q.get('format'), format, `format in ${selector}`);
  assertEq(q.get('sagaType'), fx.bulkType, `sagaType carried into ${selector}`);
  assert(q.get('metadata') === 'region=eu' || q.get('meta.region') === 'eu', `the metadata filter is not carried into ${selector}: ${href}`);
  const resp = await page.context().request.get(url(href), { timeout: 30_000 });
  assertEq(resp.status(), 200, `GET ${href}`);
  const disposition = resp.headers()['content-disposition'] || '';
  assert(disposition.startsWith('attachment'), `${href} Content-Disposition is "${disposition}"`);
  const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 30_000 }), link.click()]);
  const failure = await dl.failure();
  assert(!failure, `the ${format} download failed: ${failure}`);
  const file = await dl.path();
  return { name: dl.suggestedFilename(), text: readFileSync(file, 'utf8') };
}

await h.step('export downloads every matching saga as NDJSON and as CSV', async () => {
  await visit(page, `/ui/sagas?${bulkFilter}&limit=25`);
  const want = [...fx.bulkEuIds].sort();
  const nd = await download('a#export-ndjson', 'ndjson');
  assert(/\.ndjson$|\.jsonl$/.test(nd.name), `NDJSON download named ${nd.name}`);
  const lines = nd.text.split('\n').filter((l) => l.trim());
  const ndIds = lines.map((l, i) => {
    try { return JSON.parse(l).sagaId; } catch (e) { throw new Error(`NDJSON line ${i + 1} is not JSON: ${l.slice(0, 120)}`); }
  });
  assertEq(ndIds.length, want.length, 'NDJSON lines (the REST API counts)');
  assertEq([...ndIds].sort().join(','), want.join(','), 'saga ids in the NDJSON export');

  const csv = await download('a#export-csv', 'csv');
  assert(/\.csv$/.test(csv.name), `CSV download named ${csv.name}`);
  const rows = csv.text.split(/\r?\n/).filter((l) => l.trim());
  assert(/saga_?id/i.test(rows[0]), `CSV header names no saga id column: ${rows[0]}`);
  assertEq(rows.length - 1, want.length, 'CSV data rows (the REST API counts)');
  for (const id of want) assert(csv.text.includes(id), `CSV export lacks ${id}`);
}, { page });

// ---------------------------------------------------------------------------------------
// Quick box, input errors
// ---------------------------------------------------------------------------------------

async function quick(q) {
  await visit(page, '/ui');
  await page.locator('input#go-q').fill(q);
  await Promise.all([page.waitForURL((u) => u.pathname !== '/ui' && u.pathname !== '/ui/go'), page.locator('input#go-q').press('Enter')]);
  return new URL(page.url());
}

await h.step('the quick box goes straight to a saga by id, business key or trace id', async () => {
  assertEq((await quick(fx.completed)).pathname, sagaPath(fx.completed), 'quick box with a saga id');
  assertEq((await quick(fx.failedBusinessKey)).pathname, sagaPath(failedId), 'quick box with a business key');
  assertEq((await quick(fx.failedTraceId)).pathname, sagaPath(failedId), 'quick box with a trace id');
  const many = await quick(fx.bulkTraceId);
  assertEq(many.pathname, '/ui/sagas', 'quick box with a trace id several sagas share');
  assert((await resultIds()).length > 1, `the search for a shared trace id lists ${await resultIds()}`);
}, { page });

await h.step('invalid search input is named next to the form', async () => {
  await h.allow(/status of 400|Failed to load resource/, async () => {
    await page.goto(url('/ui/sagas?minDurationMs=soon&startedAfter=yesterday'));
  });
  await expectPresent(page, '.form-errors li[data-param="minDurationMs"]', 'error for minDurationMs');
  await expectPresent(page, '.form-errors li[data-param="startedAfter"]', 'error for startedAfter');
  await expectNav('Search with errors');
}, { page });

// ---------------------------------------------------------------------------------------
// /docs
// ---------------------------------------------------------------------------------------

await h.step('/docs renders the API reference offline with its operations', async () => {
  await visit(page, '/docs');
  await page.locator('.opblock').first().waitFor({ timeout: 30_000 }).catch(() => {
    throw new Error('/docs listed no operations (.opblock) within 30 s');
  });
  const paths = await page.locator('.opblock-summary-path').evaluateAll((e) => e.map((x) => x.getAttribute('data-path') || x.textContent.trim()));
  for (const p of ['/api/v1/sagas', '/api/v1/sagas/{sagaId}']) {
    assert(paths.some((x) => x.replace(/\u200b/g, '') === p), `/docs does not list ${p} (lists ${paths.join(', ')})`);
  }
  assert(h.offHost.length === 0, `requests off-host: ${h.offHost.join(', ')}`);
  await screenshot(page, 'docs');
}, { page });

log(`requests to other hosts in the whole run: ${h.offHost.length}`);
await h.finish();
