// The harness of the browser tests: a real headless Chromium (Debian's, via playwright-core),
// the checks every page must pass, and the line protocol with the Rust test that drives the
// tracker (tests/tests/ui.rs).
//
// What every scenario gets for free, on every page it opens:
//
//   - a console error or an uncaught page error fails the run;
//   - a request to any host but 127.0.0.1 / localhost fails the run: the UI must load nothing
//     from elsewhere (fonts, scripts, analytics) — the tracker runs in closed networks;
//   - a Content-Security-Policy violation (Chromium reports it on the console) fails the run.
//
// Protocol on stdio (stdout carries protocol lines only; diagnostics go to stderr):
//
//   script → Rust   `WAIT <tag> <args…>`   then waits for one line on stdin
//   Rust → script   `GO [payload]`         (anything else, e.g. `FAIL <why>`, fails the step)
//   script → Rust   `PASS <step>` / `FAIL <step>: <message>` per step, `DONE <passed> <failed>`
//
// Environment: BASE_URL (required), CHROMIUM_BIN (default /usr/bin/chromium), SCREENSHOT_DIR
// (where screenshot() writes; none taken when unset), UI_TOTAL_TIMEOUT_MS (a watchdog for the
// whole script, default 300 000).
//
// Everything is bounded: each step, each wait for the Rust side, each page action (Playwright's
// default timeouts are set short), and the whole script.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const BASE_URL = requireEnv('BASE_URL').replace(/\/+$/, '');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || '';
const TOTAL_TIMEOUT_MS = Number(process.env.UI_TOTAL_TIMEOUT_MS || 300_000);

/** Upper bound for one page action (click, fill, wait for a selector). */
export const ACTION_TIMEOUT_MS = 15_000;
/** Upper bound for one navigation. */
export const NAV_TIMEOUT_MS = 30_000;
/** Upper bound for one step of a scenario. */
export const STEP_TIMEOUT_MS = 90_000;

// Without these, Chromium phones home (component updates, safe browsing, sync, QUIC probes)
// and floods a closed network with connection attempts.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
  '--metrics-recording-only',
  '--no-default-browser-check',
];

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
const IGNORED_SCHEMES = new Set(['data:', 'blob:', 'about:', 'chrome:', 'chrome-error:']);

function requireEnv(name) {
  const v = process.env[name];
  if (!v) {
    process.stderr.write(`lib.mjs: ${name} is not set (tests/tests/ui.rs sets it)\n`);
    process.exit(2);
  }
  return v;
}

/** An assertion error whose message is what the reader of a CI log needs. */
export class AssertionError extends Error {}

/** Fails with `message` unless `cond` holds. */
export function assert(cond, message) {
  if (!cond) throw new AssertionError(message);
}

/** Fails unless `actual === expected`, naming both. */
export function assertEq(actual, expected, what) {
  if (actual !== expected) {
    throw new AssertionError(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

/** Rejects after `ms` with a message naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new AssertionError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `fn` (every 100 ms, at most `ms`) until it returns a truthy value; returns it. */
export async function eventually(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = `returned ${JSON.stringify(v)}`;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() >= deadline) throw new AssertionError(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Diagnostics, on stderr (stdout is the protocol). */
export function log(...parts) {
  process.stderr.write(`[ui ${new Date().toISOString().slice(11, 23)}] ${parts.join(' ')}\n`);
}

function send(line) {
  process.stdout.write(`${line.replace(/\n/g, ' ')}\n`);
}

// One reader for stdin; lines queue up until a wait() takes them.
const stdinLines = [];
const stdinWaiters = [];
let stdinClosed = false;
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const waiter = stdinWaiters.shift();
  if (waiter) waiter(line);
  else stdinLines.push(line);
});
rl.on('close', () => {
  stdinClosed = true;
  while (stdinWaiters.length) stdinWaiters.shift()(null);
});

function nextStdinLine() {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  if (stdinClosed) return Promise.resolve(null);
  return new Promise((resolve) => stdinWaiters.push(resolve));
}

/**
 * Asks the Rust side to do something (`WAIT <tag> <args…>`) and waits, at most `ms`, for its
 * `GO [payload]`; returns the payload (possibly empty).
 */
export async function waitForRust(tag, args = [], ms = 60_000) {
  send(['WAIT', tag, ...args].join(' '));
  const line = await withTimeout(nextStdinLine(), ms, `the Rust test to answer WAIT ${tag}`);
  if (line === null) throw new AssertionError(`stdin closed while waiting for GO after WAIT ${tag}`);
  if (line === 'GO' || line.startsWith('GO ')) return line.slice(3);
  throw new AssertionError(`the Rust test answered WAIT ${tag} with: ${line}`);
}

/**
 * The browser for one script run and the recorders every page gets.
 *
 * Playwright refuses a `--user-data-dir` argument to launch() (that is launchPersistentContext,
 * which cannot make the isolated contexts the login tests need), and creates its own fresh
 * profile under os.tmpdir() instead. So the profile lives in a directory of ours: TMPDIR points
 * at a fresh mkdtemp for the launch, and the whole directory is removed at the end.
 */
export class Harness {
  constructor() {
    this.problems = [];
    this.passed = [];
    this.failed = [];
    this.allowed = [];
    this.browser = null;
    this.profileRoot = null;
    this.offHost = [];
  }

  async start() {
    this.profileRoot = mkdtempSync(join(tmpdir(), 'saga-ui-test-'));
    // Whatever ends the script (a crash, the watchdog), the profile goes with it; Playwright
    // kills the browser on exit by itself.
    const root = this.profileRoot;
    process.on('exit', () => rmSync(root, { recursive: true, force: true }));
    const oldTmp = process.env.TMPDIR;
    process.env.TMPDIR = this.profileRoot;
    try {
      this.browser = await chromium.launch({
        executablePath: CHROMIUM_BIN,
        headless: true,
        args: CHROMIUM_ARGS,
        timeout: 60_000,
        // The test talks to 127.0.0.1 only; a proxy from the environment must not interfere.
        env: { ...process.env, TMPDIR: this.profileRoot, http_proxy: '', https_proxy: '', HTTP_PROXY: '', HTTPS_PROXY: '' },
      });
    } finally {
      if (oldTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = oldTmp;
    }
    log(`chromium ${this.browser.version()} (${CHROMIUM_BIN}), profile under ${this.profileRoot}`);
    return this;
  }

  /** A fresh, isolated context (own cookies), with every page in it recorded. */
  async newContext(options = {}) {
    const context = await this.browser.newContext({ acceptDownloads: true, ...options });
    context.setDefaultTimeout(ACTION_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(NAV_TIMEOUT_MS);
    context.on('request', (req) => this.checkHost(req.url(), req.frame()?.url?.() ?? ''));
    context.on('page', (page) => this.record(page));
    return context;
  }

  /** A new page in `context` (a new context when none is given). */
  async newPage(context) {
    const ctx = context ?? (await this.newContext());
    const page = await ctx.newPage();
    return page;
  }

  checkHost(url, from) {
    let u;
    try {
      u = new URL(url);
    } catch {
      return;
    }
    if (IGNORED_SCHEMES.has(u.protocol)) return;
    if (!LOCAL_HOSTS.has(u.hostname)) {
      const msg = `request to another host: ${url} (from ${from || 'the browser'})`;
      this.offHost.push(url);
      this.problem(msg);
    }
  }

  record(page) {
    page.on('console', (msg) => {
      const text = msg.text();
      const where = `${page.url()}`;
      if (/Content[- ]Security[- ]Policy/i.test(text)) {
        this.problem(`CSP violation on ${where}: ${text}`);
      } else if (msg.type() === 'error') {
        this.problem(`console error on ${where}: ${text}`);
      }
    });
    page.on('pageerror', (err) => this.problem(`uncaught error on ${page.url()}: ${err.message}`));
    page.on('crash', () => this.problem(`page crashed: ${page.url()}`));
  }

  /** Records a problem unless an allow() is in force for it. */
  problem(message) {
    if (this.allowed.some((re) => re.test(message))) {
      log(`(allowed) ${message}`);
      return;
    }
    log(`PROBLEM ${message}`);
    this.problems.push(message);
  }

  /**
   * Runs `fn` with console messages matching `pattern` tolerated — for a step that provokes an
   * error status on purpose (a bad login answers 401, which Chromium logs as a failed resource).
   */
  async allow(pattern, fn) {
    this.allowed.push(pattern);
    try {
      return await fn();
    } finally {
      // Late console events of the provoked response arrive asynchronously.
      await new Promise((r) => setTimeout(r, 200));
      this.allowed.splice(this.allowed.indexOf(pattern), 1);
    }
  }

  /**
   * Runs one named step, bounded by `ms`. A failure is reported (`FAIL <name>: …`, a screenshot
   * `FAIL-<name>.png` of `page` when given) and counted, and the script goes on to the next
   * step, so one run lists every contract point that does not hold. Console errors and
   * off-host requests seen during the step fail it too.
   */
  async step(name, fn, { page, ms = STEP_TIMEOUT_MS } = {}) {
    const before = this.problems.length;
    const started = Date.now();
    log(`--- ${name}`);
    try {
      await withTimeout(Promise.resolve().then(fn), ms, `step "${name}"`);
      const fresh = this.problems.slice(before);
      if (fresh.length) throw new AssertionError(`${fresh.length} page problem(s): ${fresh.join(' | ')}`);
      this.passed.push(name);
      send(`PASS ${name}`);
      log(`ok ${name} (${Date.now() - started} ms)`);
      return true;
    } catch (e) {
      const message = (e && e.message ? e.message : String(e)).split('\n').slice(0, 6).join(' / ');
      this.failed.push(`${name}: ${message}`);
      send(`FAIL ${name}: ${message}`);
      log(`FAILED ${name}: ${e && e.stack ? e.stack : e}`);
      if (page) await screenshot(page, `FAIL-${name.replace(/[^A-Za-z0-9_-]+/g, '_')}`).catch(() => {});
      return false;
    }
  }

  /** Closes the browser, removes the profile, reports and exits (non-zero on any failure). */
  async finish() {
    try {
      if (this.browser) await withTimeout(this.browser.close(), 20_000, 'closing the browser');
    } catch (e) {
      log(`closing the browser: ${e.message}`);
    }
    if (this.profileRoot) rmSync(this.profileRoot, { recursive: true, force: true });
    send(`DONE ${this.passed.length} ${this.failed.length}`);
    if (this.failed.length) {
      log(`${this.failed.length} step(s) failed:\n  ${this.failed.join('\n  ')}`);
    }
    process.exit(this.failed.length ? 1 : 0);
  }
}

/** Starts the watchdog and the harness; every scenario script begins with this. */
export async function startHarness() {
  const watchdog = setTimeout(() => {
    send(`FAIL watchdog: the script did not finish within ${TOTAL_TIMEOUT_MS} ms`);
    process.exit(3);
  }, TOTAL_TIMEOUT_MS);
  watchdog.unref();
  const crash = (what) => (err) => {
    send(`FAIL ${what}: ${err && err.message ? err.message.split('\n')[0] : err}`);
    log(`${what}: ${err && err.stack ? err.stack : err}`);
    process.exit(4);
  };
  process.on('uncaughtException', crash('uncaught exception in the script'));
  process.on('unhandledRejection', crash('unhandled rejection in the script'));
  const h = new Harness();
  await h.start();
  return h;
}

/** A full-page PNG `<name>.png` in SCREENSHOT_DIR (nothing when it is unset). */
export async function screenshot(page, name) {
  if (!SCREENSHOT_DIR) return null;
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true, timeout: ACTION_TIMEOUT_MS, animations: 'disabled' });
  log(`screenshot ${path}`);
  return path;
}

/** `BASE_URL` + `path`. */
export function url(path) {
  return `${BASE_URL}${path.startsWith('/') ? '' : '/'}${path}`;
}

/** Navigates and fails unless the answer is `status` (default 200). */
export async function visit(page, path, { status = 200 } = {}) {
  const resp = await page.goto(url(path), { waitUntil: 'load' });
  assert(resp, `no response for ${path}`);
  assertEq(resp.status(), status, `HTTP status of GET ${path} (landed on ${page.url()})`);
  return resp;
}

/** The path + query of the page's current URL. */
export function here(page) {
  const u = new URL(page.url());
  return `${u.pathname}${u.search}`;
}

/** Count of elements matching `selector`. */
export async function count(page, selector) {
  return page.locator(selector).count();
}

/** Fails unless `selector` matches at least one element, naming the contract point. */
export async function expectPresent(page, selector, what) {
  const n = await page.locator(selector).count();
  assert(n > 0, `${what}: no element matches ${selector} on ${here(page)}`);
  return page.locator(selector);
}
