// The Saga Explorer with API access control on (`auth.enabled`, API keys from a file), in a
// real browser: the login page, a bad key, a good key landing on where the user was going,
// signing out, the session cookie never opening the REST API, and a real nginx in front that
// adds `Authorization: Bearer <key>` so the same pages open without any login.
//
// Environment (set by tests/tests/ui.rs): BASE_URL (the tracker itself), PROXY_URL (nginx in
// front of it), READER_KEY (a reader API key the tracker accepts), SCREENSHOT_DIR.

import { assert, assertEq, expectPresent, here, screenshot, startHarness, url, BASE_URL } from './lib.mjs';

const PROXY_URL = (process.env.PROXY_URL || '').replace(/\/+$/, '');
const READER_KEY = process.env.READER_KEY || '';
assert(PROXY_URL && READER_KEY, 'PROXY_URL and READER_KEY must be set');

const h = await startHarness();
// A 401 or a redirect to the login page is what these steps provoke; Chromium logs the 401
// document loads as failed resources.
const EXPECTED_401 = /status of 401|Failed to load resource/;

/** Submits the login form with `token`; returns the answer to the POST (before redirects). */
async function login(page, token) {
  await page.getByLabel(await labelOf(page, '#token'), { exact: true }).fill(token);
  const form = page.locator('form#login-form');
  const submit = form.locator('button[type="submit"], input[type="submit"], button:not([type])');
  const posted = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/ui/login');
  const answered = page.waitForNavigation({ waitUntil: 'load' });
  if (await submit.count()) await submit.first().click();
  else await page.locator('#token').press('Enter');
  const resp = await posted;
  await answered;
  return resp;
}

/** The text of the label of `selector` (fails when it has none). */
async function labelOf(page, selector) {
  const text = await page.locator(selector).evaluate((e) => (e.labels && e.labels[0] ? e.labels[0].innerText : e.getAttribute('aria-label') || '').trim());
  assert(text, `${selector} has no label`);
  return text;
}

const direct = await h.newContext({ viewport: { width: 1280, height: 800 } });
const page = await h.newPage(direct);

await h.step('an unauthenticated browser is sent to the login page', async () => {
  const resp = await page.goto(url('/ui/sagas?sagaType=ORDER_CREATION'));
  assert(resp, 'no response');
  const u = new URL(page.url());
  assertEq(u.pathname, '/ui/login', `path after opening /ui/sagas without a credential (landed on ${here(page)})`);
  assertEq(u.searchParams.get('next'), '/ui/sagas?sagaType=ORDER_CREATION', 'next= on the login URL');
  await expectPresent(page, 'form#login-form', 'login form');
  await expectPresent(page, 'form#login-form input#token[name="token"]', 'token input');
  assertEq(await page.locator('#token').getAttribute('type'), 'password', 'type of the token input (not echoed on screen)');
  await labelOf(page, '#token');
  await screenshot(page, 'login');
}, { page });

await h.step('a wrong key is refused on the login page', async () => {
  const resp = await h.allow(EXPECTED_401, () => login(page, 'not-a-valid-key-0000000000000000'));
  assertEq(resp.status(), 401, 'status of POST /ui/login with a wrong key');
  assertEq(new URL(page.url()).pathname, '/ui/login', 'path after a wrong key');
  const errors = (await (await expectPresent(page, '.form-errors', 'login error')).innerText()).trim();
  assert(errors.length > 0, '.form-errors is empty after a wrong key');
  assert(!errors.includes('not-a-valid-key'), 'the login error echoes the token');
  assertEq((await direct.cookies()).length, 0, 'cookies after a refused login');
}, { page });

await h.step('a reader key lands on the page the user was going to', async () => {
  await h.allow(EXPECTED_401, () => page.goto(url('/ui/sagas?sagaType=ORDER_CREATION')));
  const resp = await login(page, READER_KEY);
  const said = (await page.locator('.form-errors').allInnerTexts()).join(' ').trim();
  assert(resp.status() >= 300 && resp.status() < 400, `POST /ui/login with a reader key answered ${resp.status()}, not a redirect${said ? ` (the page says: ${said})` : ''}`);
  assertEq(here(page), '/ui/sagas?sagaType=ORDER_CREATION', 'page after logging in');
  await expectPresent(page, 'form#search-form', 'the search page after logging in');
  await expectPresent(page, 'form#logout', 'the sign-out form');
  const cookies = await direct.cookies();
  assert(cookies.length >= 1, 'no session cookie after logging in');
  for (const c of cookies) {
    assert(c.httpOnly, `cookie ${c.name} is not HttpOnly`);
    assert(c.sameSite === 'Strict' || c.sameSite === 'Lax', `cookie ${c.name} has SameSite=${c.sameSite}`);
  }
  const overview = await page.goto(url('/ui'));
  assertEq(overview.status(), 200, 'the Overview with the session');
}, { page });

await h.step('the session cookie never opens the REST API', async () => {
  const api = await direct.request.get(url('/api/v1/sagas'), { timeout: 15_000 });
  assertEq(api.status(), 401, 'GET /api/v1/sagas with only the session cookie');
  assert((await direct.cookies()).length >= 1, 'the browser holds no session cookie (the reader-key login did not set one)');
  await h.allow(EXPECTED_401, async () => {
    const r = await page.goto(url('/api/v1/sagas'));
    assertEq(r.status(), 401, 'the browser opening /api/v1/sagas with its session');
  });
}, { page });

await h.step('the login page sends nobody to another host', async () => {
  const other = await h.newContext();
  const p = await other.newPage();
  await p.goto(url(`/ui/login?next=${encodeURIComponent('http://127.0.0.2:9/phish')}`));
  await login(p, READER_KEY);
  assertEq(new URL(p.url()).origin, new URL(BASE_URL).origin, `origin after logging in with an off-site next= (landed on ${p.url()})`);
  await other.close();
}, { page });

await h.step('signing out ends the session', async () => {
  await page.goto(url('/ui'));
  const form = await expectPresent(page, 'form#logout', 'the sign-out form of a signed-in browser');
  const submit = form.locator('button, input[type="submit"]');
  await h.allow(EXPECTED_401, async () => {
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), submit.first().click()]);
    const resp = await page.goto(url('/ui'));
    assert(resp, 'no response');
  });
  assertEq(new URL(page.url()).pathname, '/ui/login', `path of /ui after signing out (${here(page)})`);
}, { page });

await h.step('behind a proxy that sends the key, the UI opens without a login', async () => {
  const proxied = await h.newContext({ viewport: { width: 1280, height: 800 } });
  const p = await proxied.newPage();
  for (const path of ['/ui', '/ui/sagas?sagaType=ORDER_CREATION', '/docs']) {
    const resp = await p.goto(`${PROXY_URL}${path}`);
    assertEq(resp.status(), 200, `GET ${path} through the proxy`);
    assert(!new URL(p.url()).pathname.startsWith('/ui/login'), `${path} through the proxy went to the login page`);
  }
  await p.goto(`${PROXY_URL}/ui`);
  await expectPresent(p, 'section.type-card[data-saga-type]', 'Overview through the proxy');
  assertEq((await proxied.cookies()).length, 0, 'cookies set on a proxied browser');
  await proxied.close();
  // Without the proxy, the same page still needs a login.
  const bare = await h.newContext();
  const b = await bare.newPage();
  await h.allow(EXPECTED_401, () => b.goto(url('/ui')));
  assertEq(new URL(b.url()).pathname, '/ui/login', 'path of /ui without the proxy');
  await bare.close();
}, { page });

await h.finish();
