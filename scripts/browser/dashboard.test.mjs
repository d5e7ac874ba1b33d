// Browser test of the queue-server dashboard: Debian's chromium, driven by playwright-core,
// against the real queue-server binary on loopback ports. Run through scripts/browser-test.sh,
// which builds the binary and installs chromium and playwright-core when they are missing.
//
// Every wait is bounded; any console error in the page fails the test it happens in, except
// the network errors a test expects (listed where it expects them).

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { harness } from "./harness.mjs";

const BIN = process.env.MEMQ_SERVER_BIN;
const SHOTS = process.env.SCREENSHOT_DIR || "target/screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TOKEN = "browser-test-token";
const TEST_TIMEOUT = 45_000;
const SUITE_TIMEOUT = 170_000;

if (!BIN || !fs.existsSync(BIN)) {
  console.error(`MEMQ_SERVER_BIN must name the built queue-server binary (got ${BIN})`);
  process.exit(2);
}

const suiteTimer = setTimeout(() => {
  console.error(`browser: the suite took longer than ${SUITE_TIMEOUT / 1000} s; giving up`);
  process.exit(1);
}, SUITE_TIMEOUT);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------- servers ----------

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// The consumer Jobs of the main server live in a real Kubernetes API server (browser-test.sh).
const JOBS_KUBECONFIG = process.env.MEMQ_JOBS_KUBECONFIG;
const JOBS_NAMESPACE = process.env.MEMQ_JOBS_NAMESPACE;
if (!JOBS_KUBECONFIG || !JOBS_NAMESPACE) {
  console.error("MEMQ_JOBS_KUBECONFIG and MEMQ_JOBS_NAMESPACE must name a kubeconfig and namespace for the Jobs panel; run scripts/browser-test.sh");
  process.exit(2);
}

class Server {
  constructor(name, args = [], port = 0, env = {}) {
    this.name = name;
    this.args = args;
    this.port = port;
    this.env = env;
    this.log = [];
    this.proc = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const proc = spawn(BIN, ["--listen", `127.0.0.1:${this.port}`, ...this.args], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, RUST_LOG: "warn", ...this.env },
    });
    this.proc = proc;
    proc.stderr.on("data", (d) => {
      this.log.push(d.toString());
      if (this.log.length > 50) this.log.shift();
    });
    proc.exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      if (proc.exitCode !== null) break;
      try {
        const resp = await fetch(`${this.url}/healthz`);
        if (resp.ok) return this;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`${this.name} did not come up on ${this.url}:\n${this.log.join("")}`);
  }

  /** SIGTERM, as Kubernetes stops a pod; SIGKILL if it takes more than 5 s. */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGTERM");
    const done = await Promise.race([proc.exited, sleep(5000).then(() => null)]);
    if (!done) {
      proc.kill("SIGKILL");
      await proc.exited;
      throw new Error(`${this.name} did not stop within 5 s of SIGTERM`);
    }
    if (done.code !== 0) throw new Error(`${this.name} exited with ${JSON.stringify(done)}`);
  }

  async api(method, p, { body, token, type } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (type) headers["Content-Type"] = type;
    const resp = await fetch(`${this.url}/memq/server${p}`, { method, body, headers });
    const text = await resp.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // not JSON
    }
    if (!resp.ok && resp.status !== 404) throw new Error(`${method} ${p}: ${resp.status} ${text}`);
    return { status: resp.status, json };
  }

  createQueue(name, config, token) {
    return this.api("PUT", `/queues/${name}`, { body: config ? JSON.stringify(config) : undefined, token });
  }

  enqueueLines(name, items, token) {
    return this.api("POST", `/queues/${name}/enqueue?batch=lines`, { body: items.join("\n"), token, type: "text/plain" });
  }
}

// ---------- browser ----------

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "memq-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
  ],
  viewport: { width: 1440, height: 900 },
  colorScheme: "light",
});
context.setDefaultTimeout(10_000);
// The queue table renders the rows in view only: these tell which rows are in view, wholly, in
// its scroll box and below its sticky heading.
await context.addInitScript(() => {
  window.__rowsInView = () => {
    const wrap = document.querySelector("#table-wrap");
    const head = document.querySelector("#queue-table thead");
    if (!wrap || !head) return { names: [], first: null, last: null };
    const top = head.getBoundingClientRect().bottom - 0.5;
    const bottom = wrap.getBoundingClientRect().bottom + 0.5;
    const names = [];
    for (const tr of document.querySelectorAll("#rows tr")) {
      const r = tr.getBoundingClientRect();
      if (r.height > 0 && r.top >= top && r.bottom <= bottom) names.push(tr.dataset.queue);
    }
    return { names, first: names[0] ?? null, last: names.at(-1) ?? null };
  };
});

async function openPage(url, allow = [], setup = null) {
  const page = await context.newPage();
  // Every console error fails the test (but the ones a test expects): a server without --jobs
  // tells the page so, and the page asks nothing of /jobs.
  page.allowed = allow;
  page.problems = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const line = `${m.text()} @ ${m.location()?.url || ""}`;
    if (!page.allowed.some((re) => re.test(line))) page.problems.push(line);
  });
  page.on("pageerror", (e) => page.problems.push(`uncaught: ${e.message}`));
  if (setup) await setup(page);
  await page.goto(url);
  return page;
}

function assertClean(page) {
  if (page.problems.length) throw new Error(`console errors:\n    ${page.problems.join("\n    ")}`);
}

const row = (name) => `#rows tr[data-queue="${name}"]`;
const cell = (name, col) => `${row(name)} td[data-col="${col}"]`;

/** Waits until `selector`'s text is `expected`; on timeout says what it was instead. */
async function waitText(page, selector, expected, timeout = 8000) {
  try {
    await page.waitForFunction(
      ([sel, want]) => {
        const el = document.querySelector(sel);
        return el !== null && (want instanceof RegExp ? want.test(el.textContent) : el.textContent.trim() === want);
      },
      [selector, expected],
      { timeout },
    );
  } catch {
    const actual = await page.$eval(selector, (el) => el.textContent.trim()).catch(() => "(missing)");
    throw new Error(`${selector}: wanted ${expected}, saw ${JSON.stringify(actual)} after ${timeout} ms`);
  }
}

async function waitFor(page, fn, arg, what, timeout = 8000) {
  try {
    await page.waitForFunction(fn, arg, { timeout });
  } catch {
    throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
  }
}

// ---------- harness ----------

const { test, counts } = harness(TEST_TIMEOUT);

// ---------- a server with work going on ----------

const main = await new Server("server", ["--jobs", "--namespace", JOBS_NAMESPACE], 0, { KUBECONFIG: JOBS_KUBECONFIG }).start();
await main.createQueue("keygen");
await main.createQueue("emails");
await main.enqueueLines("emails", Array.from({ length: 1240 }, (_, i) => `mail-${i}`));
await main.api("POST", "/queues/emails/pause");
await main.createQueue("search-index");
await main.enqueueLines("search-index", Array.from({ length: 48210 }, (_, i) => `doc-${i}`));
await main.createQueue("thumbnails", { maxAttempts: 1, leaseSeconds: 60 });
await main.enqueueLines("thumbnails", ["img-1.png", "img-2.png", "img-3.png", "img-4.png", "img-5.png"]);
{
  // Three items fail once and, at maxAttempts 1, go to the dead letters.
  const { json } = await main.api("POST", "/queues/thumbnails/dequeue?lease=30&max=3");
  for (const m of json.messages) await main.api("POST", `/queues/thumbnails/leases/${m.lease.id}/nack`);
}
await main.createQueue("reports");
await main.enqueueLines("reports", Array.from({ length: 25 }, (_, i) => `report-${i}`));

// keygen: a producer at 30 items/s for 12 s and consumers leasing 12/s throughout, each item
// acked 2 s after it was leased, so its charts show a rise and a fall and items in flight.
const loadStarted = Date.now();
let loadStopped = false;
let produced = 0;
const producer = (async () => {
  while (!loadStopped && Date.now() - loadStarted < 12_000) {
    await main.enqueueLines("keygen", Array.from({ length: 6 }, () => `key-${produced++}`)).catch(() => {});
    await sleep(200);
  }
})();
const consumer = (async () => {
  const held = [];
  while (!loadStopped) {
    await sleep(250);
    const r = await main.api("POST", "/queues/keygen/dequeue?lease=30&max=3").catch(() => null);
    for (const m of r?.json?.messages ?? []) held.push({ lease: m.lease.id, at: Date.now() });
    const due = [];
    while (held.length && Date.now() - held[0].at > 2000) due.push(held.shift().lease);
    if (due.length) await main.api("POST", "/queues/keygen/ack", { body: JSON.stringify(due), type: "application/json" }).catch(() => {});
  }
})();

console.log(`browser: chromium ${context.browser()?.version() ?? ""}, queue-server at ${main.url}`);
const page = await openPage(`${main.url}/`);

await test("the page follows the stats stream and shows every queue", async () => {
  await waitText(page, "#conn-text", "live");
  for (const name of ["keygen", "emails", "search-index", "thumbnails", "reports"]) {
    await page.waitForSelector(row(name), { timeout: 5000 });
  }
  await waitText(page, cell("emails", "depth"), "1.2k");
  await waitText(page, cell("search-index", "depth"), "48.2k");
  await waitText(page, cell("thumbnails", "dead"), "3");
  if (!(await page.isVisible(`${row("emails")} .badge.paused`))) throw new Error("emails is not marked paused");
  if (await page.isVisible(`${row("reports")} .badge.paused`)) throw new Error("reports is marked paused");
  await waitText(page, cell("emails", "eta"), "paused");
  await waitText(page, "#t-queues", "5");
  assertClean(page);
});

await test("an enqueue through the API shows in the row without a reload", async () => {
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  await waitText(page, cell("reports", "depth"), "25");
  await main.enqueueLines("reports", ["late-1", "late-2", "late-3", "late-4", "late-5", "late-6", "late-7"]);
  await waitText(page, cell("reports", "depth"), "32", 5000);
  await waitText(page, cell("reports", "enqueued"), "32");
  if (!(await page.evaluate(() => window.__sameDocument === true))) throw new Error("the page reloaded");
  // Numbers change under load (keygen), the geometry does not.
  const geometry = () =>
    page.evaluate(() =>
      [...document.querySelectorAll('#rows tr[data-queue="keygen"] td, #queue-table thead th, .totals dd')]
        .map((el) => {
          const r = el.getBoundingClientRect();
          return `${r.x},${r.y},${r.width},${r.height}`;
        })
        .join(" "),
    );
  const before = await geometry();
  const enqueuedBefore = await page.textContent(cell("keygen", "enqueued"));
  await waitFor(page, (was) => document.querySelector('#rows tr[data-queue="keygen"] td[data-col="enqueued"]').textContent !== was, enqueuedBefore, "keygen to change");
  await sleep(1100);
  if ((await geometry()) !== before) throw new Error("the table or the totals moved when the numbers changed");
  assertClean(page);
});

await test("drain through the UI asks to confirm and empties the queue", async () => {
  await page.click(`${row("reports")} .qname`);
  await waitText(page, "#detail-title", "reports");
  await waitText(page, "#d-depth", "32");
  let question = "";
  page.once("dialog", (d) => {
    question = d.message();
    d.accept();
  });
  await page.click("#a-drain");
  await waitText(page, cell("reports", "depth"), "0", 5000);
  await waitText(page, "#d-depth", "0");
  if (!/^Drain reports\?/.test(question)) throw new Error(`confirm said ${JSON.stringify(question)}`);
  const { json } = await main.api("GET", "/queues/reports");
  if (json.depth !== 0 || json.drained !== 32) throw new Error(`server says depth ${json.depth}, drained ${json.drained}`);
  // Dismissing the confirm changes nothing.
  await main.enqueueLines("reports", ["keep-me"]);
  await waitText(page, "#d-depth", "1");
  page.once("dialog", (d) => d.dismiss());
  await page.click("#a-drain");
  await sleep(1200);
  await waitText(page, "#d-depth", "1");
  assertClean(page);
});

await test("enqueue through the UI, one item per line, and peek at them", async () => {
  await page.fill("#enqueue-text", "first item\nsecond item\nthird item\n");
  await page.click("#enqueue-form button[type=submit]");
  await waitText(page, cell("reports", "depth"), "4", 5000);
  await waitText(page, "#peek li:nth-child(1) code", "keep-me");
  await waitText(page, "#peek li:nth-child(2) code", "first item");
  await waitText(page, "#peek li:nth-child(4) code", "third item");
  if ((await page.inputValue("#enqueue-text")) !== "") throw new Error("the text box was not cleared");
  assertClean(page);
});

await test("the detail shows config, dead letters with attempts, and charts with axes", async () => {
  await page.click(`${row("thumbnails")} .qname`);
  await waitText(page, "#detail-title", "thumbnails");
  await waitText(page, "#d-attempts", "1");
  await waitText(page, "#d-lease", "1m");
  await waitFor(page, () => document.querySelectorAll("#dead tr").length === 3, null, "three dead letters");
  const attempts = await page.$$eval("#dead tr td:nth-child(2)", (tds) => tds.map((td) => td.textContent));
  if (attempts.join() !== "1,1,1") throw new Error(`attempts shown: ${attempts}`);
  await waitFor(page, () => document.querySelectorAll("#chart-depth path.line").length >= 1, null, "a depth line");
  const labels = await page.$$eval("#chart-depth text", (ts) => ts.map((t) => t.textContent));
  for (const want of ["items", "now"]) if (!labels.includes(want)) throw new Error(`depth chart lacks "${want}": ${labels}`);
  if (!labels.some((l) => /^−\d+ (s|min)$/.test(l))) throw new Error(`depth chart has no time axis: ${labels}`);
  const rateLabels = await page.$$eval("#chart-rate text", (ts) => ts.map((t) => t.textContent));
  if (!rateLabels.includes("items/s")) throw new Error(`rate chart lacks its unit: ${rateLabels}`);
  // Requeue is not destructive (no confirm); purge is.
  await page.click("#a-requeue");
  await waitText(page, cell("thumbnails", "dead"), "0", 5000);
  await waitText(page, cell("thumbnails", "depth"), "5");
  assertClean(page);
});

await test("sorting, filtering and opening a queue work from the keyboard", async () => {
  await page.click('thead button[data-sort="depth"]');
  await waitFor(page, () => document.querySelector("#rows tr")?.dataset.queue === "search-index", null, "search-index first by depth");
  const sort = await page.getAttribute('thead th:has(button[data-sort="depth"])', "aria-sort");
  if (sort !== "descending") throw new Error(`aria-sort is ${sort}`);
  await page.evaluate(() => document.activeElement?.blur());
  await page.keyboard.press("/");
  if ((await page.evaluate(() => document.activeElement?.id)) !== "filter") throw new Error("/ does not focus the filter");
  await page.keyboard.type("mail");
  await waitFor(page, () => document.querySelectorAll("#rows tr").length === 1, null, "one row for 'mail'");
  await page.fill("#filter", "");
  await waitFor(page, () => document.querySelectorAll("#rows tr").length === 5, null, "all rows back");
  await page.focus(`${row("emails")} .qname`);
  await page.keyboard.press("Enter");
  await waitText(page, "#detail-title", "emails");
  await waitText(page, "#a-pause", "Resume");
  await page.keyboard.press("Escape");
  await waitFor(page, () => document.querySelector("#detail-body").hidden, null, "the detail to close on Escape");
  await page.click('thead button[data-sort="name"]');
  assertClean(page);
});

/** Seconds of a duration as the page writes it: 42s, 2m 10s, 5m, 3h 5m. */
function seconds(text) {
  const m = /^(?:(\d+)h)? ?(?:(\d+)m)? ?(?:(\d+)s)?$/.exec(text.trim());
  if (!m || !text.trim()) return NaN;
  return (Number(m[1] || 0) * 60 + Number(m[2] || 0)) * 60 + Number(m[3] || 0);
}

await test("the oldest item's age counts on while the stream does not send its queue again", async () => {
  // emails: 1,240 items since the start, paused, so nothing changes its figures: once its rates
  // are 0 the server leaves its row out of the stream's changes.
  await waitText(page, cell("emails", "rateIn"), "0", 15_000);
  await sleep(1100);
  const ctl = new AbortController();
  const events = [];
  const listening = (async () => {
    const resp = await fetch(`${main.url}/memq/server/stats/stream?changes=true`, { signal: ctl.signal });
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of resp.body) {
      buf += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const data = buf.slice(0, end).split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
        buf = buf.slice(end + 2);
        if (data) events.push(JSON.parse(data));
      }
    }
  })().catch((e) => {
    if (e.name !== "AbortError") throw e;
  });
  const before = seconds(await page.textContent(cell("emails", "oldest")));
  await sleep(3200);
  const after = seconds(await page.textContent(cell("emails", "oldest")));
  ctl.abort();
  await listening;
  const deltas = events.filter((e) => e.kind === "statsDelta");
  if (events[0]?.kind !== "stats" || deltas.length < 2) throw new Error(`the stream sent ${events.map((e) => e.kind).join(", ")}`);
  const resent = deltas.filter((e) => e.queues.some((r) => r.name === "emails")).length;
  if (resent) throw new Error(`emails was sent again in ${resent} of ${deltas.length} changes`);
  if (!(after - before >= 2 && after - before <= 5)) throw new Error(`emails' oldest item was ${before} s old, then ${after} s, 3.2 s later`);
  assertClean(page);
});

await test("screenshots, light and dark", async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  // Two thumbnails fail for good again, so the table shows dead letters.
  const { json } = await main.api("POST", "/queues/thumbnails/dequeue?lease=30&max=2");
  for (const m of json.messages) await main.api("POST", `/queues/thumbnails/leases/${m.lease.id}/nack`);
  await page.click(`${row("keygen")} .qname`);
  await waitText(page, "#detail-title", "keygen");
  // Let the load's rise and fall reach the charts.
  const waitMore = 16_000 - (Date.now() - loadStarted);
  if (waitMore > 0) await sleep(waitMore);
  await waitFor(page, () => document.querySelectorAll("#chart-rate path.line").length === 2, null, "both rate lines");
  await waitText(page, cell("thumbnails", "dead"), "2");
  await waitFor(page, () => document.querySelector("#toast").hidden, null, "the last message to fade", 10_000);
  await page.mouse.move(0, 0);
  const light = path.join(SHOTS, "dashboard-light.png");
  // The whole page: the queue table, the detail and, below them, the Consumer Jobs panel.
  await page.screenshot({ path: light, fullPage: true });
  const lightBg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.emulateMedia({ colorScheme: "dark" });
  await sleep(300);
  const darkBg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.screenshot({ path: path.join(SHOTS, "dashboard-dark.png") });
  await page.emulateMedia({ colorScheme: "light" });
  if (lightBg === darkBg) throw new Error(`dark mode did not change the background (${lightBg})`);
  assertClean(page);
});

loadStopped = true;
await Promise.all([producer, consumer]);
await page.close();
await main.stop();

await test("with --token the page asks for the token once and keeps it for the tab", async () => {
  const server = await new Server("token server", ["--token", TOKEN]).start();
  try {
    await server.createQueue("secret-work", null, TOKEN);
    // The page itself comes with a 401; the wrong token below is refused with a 401 too.
    const p = await openPage(`${server.url}/`, [/status of 401 .*@ http:\/\/127\.0\.0\.1:\d+\/(dashboard\/session)?$/]);
    await waitFor(p, () => document.querySelector("#token-dialog").open, null, "the token dialog");
    if ((await p.evaluate(() => document.activeElement?.id)) !== "token-input") throw new Error("the token field has no focus");
    await p.screenshot({ path: path.join(SHOTS, "dashboard-token.png") });
    await p.fill("#token-input", "not-the-token");
    await p.click("#token-form button[type=submit]");
    await waitText(p, "#token-error", /refused/);
    await p.fill("#token-input", TOKEN);
    await p.click("#token-form button[type=submit]");
    await waitFor(p, () => !document.querySelector("#token-dialog").open, null, "the dialog to close");
    await p.waitForSelector(row("secret-work"), { timeout: 5000 });
    await waitText(p, "#conn-text", "live");
    if (!(await p.isVisible("#create-form"))) throw new Error("signed in, but the page is read-only");
    if ((await p.evaluate(() => sessionStorage.getItem("memq-token"))) !== TOKEN) throw new Error("token not kept in sessionStorage");
    // Asks once: a reload in the same tab goes straight to the queues.
    await p.reload();
    await p.waitForSelector(row("secret-work"), { timeout: 5000 });
    if (await p.evaluate(() => document.querySelector("#token-dialog").open)) throw new Error("asked again after a reload");
    // Steering works with the token.
    await p.click(`${row("secret-work")} .qname`);
    await p.fill("#enqueue-text", "a\nb");
    await p.click("#enqueue-form button[type=submit]");
    await waitText(p, cell("secret-work", "depth"), "2", 5000);
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

/** Takes one item of `queue` with a 60 s lease, as `consumer` (no X-Memq-Consumer header when null). */
async function takeLease(server, queue, consumer) {
  const headers = { Authorization: `Bearer ${TOKEN}` };
  if (consumer) headers["X-Memq-Consumer"] = consumer;
  const resp = await fetch(`${server.url}/memq/server/queues/${queue}/dequeue?lease=60`, { method: "POST", headers });
  if (resp.status !== 200) throw new Error(`dequeue from ${queue}: ${resp.status} ${await resp.text()}`);
  return resp.json();
}

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

await test("the queue panel lists the leases and releases one after a confirm, once per click", async () => {
  const server = await new Server("leases server", ["--token", TOKEN]).start();
  try {
    await server.createQueue("leased", null, TOKEN);
    await server.enqueueLines("leased", ["job-1", "job-2", "job-3"], TOKEN);
    const a = await takeLease(server, "leased", "pod-a");
    const b = await takeLease(server, "leased", null);
    const figures = async () => {
      const { json } = await server.api("GET", "/queues/leased", { token: TOKEN });
      return `depth ${json.depth}, inflight ${json.inflight}`;
    };
    if ((await figures()) !== "depth 1, inflight 2") throw new Error(`before: ${await figures()}`);
    // The page itself comes with a 401 (it asks for the token).
    const p = await openPage(`${server.url}/`, [/status of 401 .*@ http:\/\/127\.0\.0\.1:\d+\/(dashboard\/session)?$/]);
    const releases = [];
    p.on("request", (r) => {
      if (/\/release$/.test(r.url())) releases.push(`${r.method()} ${r.url().slice(server.url.length)} ${r.postData()}`);
    });
    await waitFor(p, () => document.querySelector("#token-dialog").open, null, "the token dialog");
    await p.fill("#token-input", TOKEN);
    await p.click("#token-form button[type=submit]");
    await waitFor(p, () => !document.querySelector("#token-dialog").open, null, "the dialog to close");
    await p.click(`${row("leased")} .qname`);
    await waitText(p, "#detail-title", "leased");
    // In flight: two leases, one of a named consumer (pod-a), one anonymous.
    await waitText(p, cell("leased", "inflight"), "2 by 1");
    await waitFor(p, () => document.querySelectorAll("#leases tr").length === 2, null, "two leases in the table");
    const shown = await p.$$eval("#leases tr", (trs) =>
      trs.map((tr) => ({
        lease: tr.dataset.lease,
        item: tr.cells[0].title,
        consumer: tr.cells[1].textContent,
        attempt: tr.cells[2].textContent,
        held: tr.cells[3].textContent,
        expires: tr.cells[4].textContent,
        release: tr.cells[5].querySelector("button")?.checkVisibility() ?? false,
      })),
    );
    // Oldest first: pod-a's lease, then the anonymous one.
    const want = [
      { lease: a.lease.id, item: a.id, consumer: "pod-a", attempt: "1" },
      { lease: b.lease.id, item: b.id, consumer: "—", attempt: "1" },
    ];
    want.forEach((w, i) => {
      const s = shown[i];
      const ok =
        Object.entries(w).every(([k, v]) => s[k] === v) && /^\d+s$/.test(s.held) && /^(1m|5\ds)$/.test(s.expires) && s.release;
      if (!ok) throw new Error(`lease row ${i + 1}: wanted ${JSON.stringify(w)}, held for Ns, expires in ~1m and a Release button; saw ${JSON.stringify(s)}`);
    });
    const note = await p.textContent("#leases-note");
    if (note !== "") throw new Error(`note under two leases: ${JSON.stringify(note)}`);
    fs.mkdirSync(SHOTS, { recursive: true });
    await p.$eval("#leases-title", (el) => el.scrollIntoView({ block: "center" }));
    await p.mouse.move(0, 0);
    await p.screenshot({ path: path.join(SHOTS, "leases.png") });

    // Release pod-a's lease with a double click: one question, one request.
    const questions = [];
    const accept = (d) => {
      questions.push(d.message());
      d.accept();
    };
    p.on("dialog", accept);
    try {
      await p.dblclick(`#leases tr[data-lease="${a.lease.id}"] button`);
      await waitFor(p, (id) => !document.querySelector(`#leases tr[data-lease="${id}"]`), a.lease.id, "pod-a's lease to leave the table");
    } finally {
      p.off("dialog", accept);
    }
    await waitText(p, "#toast", /^Released item …\w{6}: it is ready again\.$/);
    if (questions.length !== 1 || !questions[0].startsWith(`Release the lease of pod-a on item …${a.id.slice(-6)} (attempt 1)?`)) {
      throw new Error(`confirm asked ${JSON.stringify(questions)}`);
    }
    if (releases.join() !== `POST /memq/server/queues/leased/release ["${a.lease.id}"]`) throw new Error(`release requests: ${JSON.stringify(releases)}`);
    if ((await figures()) !== "depth 2, inflight 1") throw new Error(`after the release: ${await figures()}`);
    // Released, not nacked: its next delivery is attempt 1 again.
    const { json: next } = await server.api("GET", `/queues/leased/items/${a.id}`, { token: TOKEN });
    if (next.state !== "ready" || next.attempts !== 0) throw new Error(`the released item: ${JSON.stringify(next)}`);
    if ((await p.$$eval("#leases tr", (trs) => trs.map((tr) => tr.dataset.lease))).join() !== b.lease.id) throw new Error("the other lease left the table too");

    // The other lease ends behind the page's back while the operator reads the question (the
    // page cannot refresh under a confirm): the row is stale when the release goes out, and the
    // server answers that lease with 404.
    let behindBack = 0;
    p.once("dialog", async (d) => {
      behindBack = (await server.api("POST", `/queues/leased/leases/${b.lease.id}/nack`, { token: TOKEN })).status;
      await d.accept();
    });
    await p.click(`#leases tr[data-lease="${b.lease.id}"] button`);
    await waitText(p, "#toast", /already ended: acked, released or expired/);
    if (behindBack !== 200) throw new Error(`the release through the API answered ${behindBack}`);
    await waitFor(p, () => document.querySelectorAll("#leases tr").length === 0, null, "the stale lease to leave the table");
    await waitText(p, "#leases-note", "No leases.");
    if (releases.length !== 2) throw new Error(`release requests: ${JSON.stringify(releases)}`);
    if ((await figures()) !== "depth 3, inflight 0") throw new Error(`at the end: ${await figures()}`);
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

await test("the queue panel finds an item by id or by key: leased, ready, next, not found", async () => {
  const server = await new Server("item search server", ["--token", TOKEN]).start();
  try {
    await server.createQueue("orders", null, TOKEN);
    await server.createQueue("other", null, TOKEN);
    const enqueue = async (query, body) => {
      const resp = await fetch(`${server.url}/memq/server/queues/orders/enqueue${query}`, {
        method: "POST",
        body,
        headers: { Authorization: `Bearer ${TOKEN}` },
      });
      if (!resp.ok) throw new Error(`enqueue${query}: ${resp.status} ${await resp.text()}`);
      return resp.json();
    };
    const keyed = await enqueue("?id=order-7", "a");
    const second = await enqueue("", "b");
    const third = await enqueue("", "c");
    // The keyed item is first: the dequeue takes it.
    const taken = await takeLease(server, "orders", "pod-s");
    if (taken.id !== keyed.id) throw new Error(`the dequeue took ${taken.id}, not the keyed item ${keyed.id}`);
    const missingId = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    const missingKey = "not a ulid key";
    const items = "/memq/server/queues/orders/items";
    const missingKeyPath = `${items}?key=not%20a%20ulid%20key`;
    // What the server says of the two misses, to be shown as it says it.
    const said = async (p) => {
      const resp = await fetch(`${server.url}${p}`, { headers: { Authorization: `Bearer ${TOKEN}` } });
      const json = await resp.json();
      if (resp.status !== 404 || json.code !== "item_not_found" || !json.message) throw new Error(`GET ${p}: ${resp.status} ${JSON.stringify(json)}`);
      return json.message;
    };
    const missingIdMessage = await said(`${items}/${missingId}`);
    const missingKeyMessage = await said(missingKeyPath);
    // The page comes with a 401 (it asks for the token); the two misses are 404s, expected.
    const p = await openPage(`${server.url}/`, [
      /status of 401 .*@ http:\/\/127\.0\.0\.1:\d+\/(dashboard\/session)?$/,
      new RegExp(`status of 404 .*@ ${escapeRe(`${server.url}${items}/${missingId}`)}$`),
      new RegExp(`status of 404 .*@ ${escapeRe(`${server.url}${missingKeyPath}`)}$`),
    ]);
    const finds = [];
    p.on("request", (r) => {
      const u = r.url().slice(server.url.length);
      if (u.startsWith(items)) finds.push(`${r.method()} ${u}${r.headers().authorization === `Bearer ${TOKEN}` ? "" : " (no token)"}`);
    });
    await waitFor(p, () => document.querySelector("#token-dialog").open, null, "the token dialog");
    await p.fill("#token-input", TOKEN);
    await p.click("#token-form button[type=submit]");
    await waitFor(p, () => !document.querySelector("#token-dialog").open, null, "the dialog to close");
    await p.click(`${row("orders")} .qname`);
    await waitText(p, "#detail-title", "orders");
    if (!(await p.isVisible("#find-input")) || (await p.isVisible("#find-result"))) throw new Error("the search box is not shown empty");
    const result = () =>
      p.evaluate(() => ({
        state: document.querySelector("#find-state").textContent,
        badge: document.querySelector("#find-state").className,
        where: document.querySelector("#find-where").textContent,
        meta: document.querySelector("#find-meta").textContent,
        id: document.querySelector("#find-id").textContent,
        found: document.querySelector("#find-found").checkVisibility(),
        msg: document.querySelector("#find-msg").checkVisibility() ? document.querySelector("#find-msg").textContent : null,
      }));

    // By key (Find clicked): the keyed item, leased by pod-s.
    await p.fill("#find-input", "order-7");
    await p.click("#find-submit");
    await waitText(p, "#find-where", /^held by pod-s, /);
    let r = await result();
    if (
      r.state !== "leased" ||
      r.badge !== "badge state-leased" ||
      !/^held by pod-s, attempt 1, expires in (1m|5\ds)$/.test(r.where) ||
      !/^1 attempt · enqueued \d+s ago$/.test(r.meta) ||
      r.id !== keyed.id ||
      !r.found ||
      r.msg !== null
    ) {
      throw new Error(`order-7: wanted leased, held by pod-s, attempt 1, expires in ~1m, 1 attempt, id ${keyed.id}; saw ${JSON.stringify(r)}`);
    }
    fs.mkdirSync(SHOTS, { recursive: true });
    await p.$eval("#find-title", (el) => el.scrollIntoView({ block: "center" }));
    await p.mouse.move(0, 0);
    await p.screenshot({ path: path.join(SHOTS, "item-search.png") });

    // By id (in lower case, Enter in the input): the 3rd item is ready with the 2nd ahead of it.
    await p.fill("#find-input", third.id.toLowerCase());
    await p.press("#find-input", "Enter");
    await waitText(p, "#find-state", "ready");
    r = await result();
    if (r.where !== "1 ahead" || !/^not handed out yet · enqueued \d+s ago$/.test(r.meta) || r.id !== third.id || r.badge !== "badge state-ready" || r.msg !== null) {
      throw new Error(`3rd item: wanted ready, 1 ahead, id ${third.id}; saw ${JSON.stringify(r)}`);
    }
    await p.fill("#find-input", second.id);
    await p.press("#find-input", "Enter");
    await waitText(p, "#find-id", second.id);
    r = await result();
    if (r.state !== "ready" || r.where !== "next") throw new Error(`2nd item: wanted ready, next; saw ${JSON.stringify(r)}`);

    // A made-up ULID, and a text that is no ULID (so a key): the server's word for each.
    await p.fill("#find-input", missingId);
    await p.click("#find-submit");
    await waitText(p, "#find-msg", missingIdMessage);
    r = await result();
    if (r.found) throw new Error(`the found item stays shown beside the miss: ${JSON.stringify(r)}`);
    await p.fill("#find-input", missingKey);
    await p.press("#find-input", "Enter");
    await waitText(p, "#find-msg", missingKeyMessage);
    const want = [
      `GET ${items}?key=order-7`,
      `GET ${items}/${third.id}`,
      `GET ${items}/${second.id}`,
      `GET ${items}/${missingId}`,
      `GET ${missingKeyPath}`,
    ];
    if (finds.join("\n") !== want.join("\n")) throw new Error(`lookups:\n    ${finds.join("\n    ")}\nwanted:\n    ${want.join("\n    ")}`);

    // Another queue opens with no result; the way back too.
    await p.click(`${row("other")} .qname`);
    await waitText(p, "#detail-title", "other");
    if (await p.isVisible("#find-result")) throw new Error("the result stayed when another queue was opened");
    await p.click(`${row("orders")} .qname`);
    await waitText(p, "#detail-title", "orders");
    if (await p.isVisible("#find-result")) throw new Error("an old result came back with the queue");
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

await test("with --public-reads the page shows read-only views without a token", async () => {
  const server = await new Server("public-reads server", ["--token", TOKEN, "--public-reads"]).start();
  try {
    await server.createQueue("visible", null, TOKEN);
    await server.enqueueLines("visible", ["one", "two"], TOKEN);
    await server.createQueue("held", null, TOKEN);
    await server.enqueueLines("held", ["x"], TOKEN);
    await takeLease(server, "held", "pod-z");
    const p = await openPage(`${server.url}/`);
    await waitText(p, cell("visible", "depth"), "2");
    if (await p.evaluate(() => document.querySelector("#token-dialog").open)) throw new Error("asked for a token");
    if (await p.isVisible("#create-form")) throw new Error("create form shown read-only");
    if (!(await p.isVisible("#sign-in"))) throw new Error("no sign-in button");
    await p.click(`${row("visible")} .qname`);
    await waitText(p, "#detail-title", "visible");
    if (await p.isVisible(".actions")) throw new Error("actions shown read-only");
    await waitText(p, "#peek-note", /Sign in/);
    // Finding an item needs the token, also with --public-reads: a note instead of the box.
    if (await p.isVisible("#find-form")) throw new Error("the item search is shown read-only");
    await waitText(p, "#find-note", "Sign in with the token to find items.");
    // Leases are a public read, like the figures; releasing one is not.
    await p.click(`${row("held")} .qname`);
    await waitText(p, "#leases tr td.consumer", "pod-z");
    if (await p.isVisible("#leases tr button")) throw new Error("Release shown read-only");
    // Signing in turns the actions on.
    await p.click("#sign-in");
    await p.fill("#token-input", TOKEN);
    await p.click("#token-form button[type=submit]");
    await waitFor(p, () => !document.querySelector(".actions").hidden, null, "the actions after signing in");
    await waitFor(p, () => document.querySelector("#leases tr button")?.checkVisibility(), null, "Release after signing in");
    if (!(await p.isVisible("#find-form")) || (await p.isVisible("#find-note"))) throw new Error("no item search after signing in");
    await p.click(`${row("visible")} .qname`);
    await waitText(p, "#peek li:nth-child(1) code", "one");
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

await test("scoped tokens: the page names the token, turns off what it may not do, and shows a 403's message", async () => {
  // A tokens file in a directory of the test's own: NAME ROLE QUEUES TOKEN.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memq-tokens-"));
  const secret = { watch: "reader-token-1", make: "producer-token-2", ops: "admin-token-3", side: "admin-token-4" };
  const file = path.join(dir, "tokens");
  fs.writeFileSync(
    file,
    `# NAME ROLE QUEUES TOKEN\nwatch reader * ${secret.watch}\nmake producer q* ${secret.make}\nops admin * ${secret.ops}\nside admin other* ${secret.side}\n`,
  );
  const server = await new Server("tokens-file server", ["--tokens-file", file, "--jobs", "--namespace", JOBS_NAMESPACE], 0, {
    KUBECONFIG: JOBS_KUBECONFIG,
  }).start();
  try {
    await server.createQueue("q1", null, secret.ops);
    await server.createQueue("reports", null, secret.ops);
    await server.createQueue("other1", null, secret.ops);
    await server.enqueueLines("q1", ["a", "b"], secret.ops);
    await server.enqueueLines("other1", ["c"], secret.ops);
    // The page comes with a 401 (it asks for the token); the one 403 provoked below is expected.
    const signedIn = async (name, open = "q1", depth = "2") => {
      const p = await openPage(`${server.url}/`, [
        /status of 401 .*@ http:\/\/127\.0\.0\.1:\d+\/(dashboard\/session)?$/,
        new RegExp(`status of 403 .*@ ${escapeRe(server.url)}/memq/server/queues/q9$`),
      ]);
      p.jobsAsked = [];
      p.on("request", (r) => {
        if (new URL(r.url()).pathname.startsWith("/jobs")) p.jobsAsked.push(`${r.method()} ${r.url()}`);
      });
      await waitFor(p, () => document.querySelector("#token-dialog").open, null, "the token dialog");
      await p.fill("#token-input", secret[name]);
      await p.click("#token-form button[type=submit]");
      await waitFor(p, () => !document.querySelector("#token-dialog").open, null, "the dialog to close");
      await p.click(`${row(open)} .qname`);
      await waitText(p, "#d-depth", depth);
      return p;
    };
    // Each control: off, and why (its title); all in sight (turned off, not hidden).
    const controls = (p) =>
      p.evaluate(() =>
        Object.fromEntries(
          ["a-pause", "a-drain", "a-delete", "a-requeue", "a-purge", "create-submit", "enqueue-submit", "job-submit"].map((id) => {
            const el = document.getElementById(id);
            return [id, { off: el.disabled, title: el.title, seen: el.checkVisibility() }];
          }),
        ),
      );
    const expectControls = async (p, who, want) => {
      const got = await controls(p);
      const bad = Object.entries(want).filter(([id, w]) => got[id].off !== w.off || got[id].title !== w.title || !got[id].seen);
      if (bad.length) throw new Error(`${who}: wanted ${JSON.stringify(want)}, saw ${JSON.stringify(got)}`);
    };
    const ADMIN = "needs an admin token";
    const JOBS = "needs an admin token for every queue (*)";

    // A reader: everything that changes a queue is off, saying it needs an admin (a producer) token.
    let p = await signedIn("watch");
    await waitText(p, "#session", "watch · reader · *");
    await expectControls(p, "reader", {
      "a-pause": { off: true, title: ADMIN },
      "a-drain": { off: true, title: ADMIN },
      "a-delete": { off: true, title: ADMIN },
      "a-requeue": { off: true, title: ADMIN },
      "a-purge": { off: true, title: ADMIN },
      "create-submit": { off: true, title: ADMIN },
      "enqueue-submit": { off: true, title: "needs a producer token" },
      "job-submit": { off: true, title: JOBS },
    });
    await waitText(p, "#peek li:nth-child(1) code", "a");
    fs.mkdirSync(SHOTS, { recursive: true });
    await p.mouse.move(0, 0);
    await p.screenshot({ path: path.join(SHOTS, "scoped-reader.png"), fullPage: true });
    if (p.jobsAsked.length) throw new Error(`a reader's page asked for Jobs: ${p.jobsAsked}`);
    assertClean(p);
    await p.close();

    // The queues a token's glob leaves out are not in its list at all (the server streams only
    // its own), and nothing is asked of them: no 403 in the console.
    const listed = (p) => p.evaluate(() => [...document.querySelectorAll("#rows tr[data-queue]")].map((tr) => tr.dataset.queue).sort());
    const expectListed = async (p, who, want) => {
      await waitFor(p, (w) => [...document.querySelectorAll("#rows tr[data-queue]")].length === w, want.length, `${who}'s list`);
      const got = await listed(p);
      if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${who} lists ${JSON.stringify(got)}, wanted ${JSON.stringify(want)}`);
    };

    // A producer for q*: enqueues on q1; reports (outside its glob) is not listed.
    p = await signedIn("make");
    await waitText(p, "#session", "make · producer · q*");
    await expectControls(p, "producer on q1", { "a-delete": { off: true, title: ADMIN }, "enqueue-submit": { off: false, title: "" } });
    await expectListed(p, "a producer of q*", ["q1"]);
    assertClean(p);
    await p.close();

    // An admin of every queue: all on (Drain too: q1 holds items).
    p = await signedIn("ops");
    await waitText(p, "#session", "ops · admin · *");
    await expectControls(p, "admin", {
      "a-pause": { off: false, title: "" },
      "a-drain": { off: false, title: "" },
      "a-delete": { off: false, title: "" },
      "create-submit": { off: false, title: "" },
      "enqueue-submit": { off: false, title: "" },
      "job-submit": { off: false, title: "" },
    });
    await waitFor(p, () => !document.querySelector("#jobs").hidden, null, "the Jobs panel");
    if (!p.jobsAsked.length) throw new Error("an admin's page did not ask for the Jobs");
    assertClean(p);
    await p.close();

    // An admin of other*: lists other1 alone, may change it, not launch Jobs; creating q9 is
    // refused (403) and the page shows what the server said, word for word.
    const refused = await fetch(`${server.url}/memq/server/queues/q9`, { method: "PUT", headers: { Authorization: `Bearer ${secret.side}` } });
    const said = await refused.json();
    if (refused.status !== 403 || said.code !== "forbidden" || !said.message) throw new Error(`PUT q9 as side: ${refused.status} ${JSON.stringify(said)}`);
    p = await signedIn("side", "other1", "1");
    await waitText(p, "#session", "side · admin · other*");
    await expectListed(p, "an admin of other*", ["other1"]);
    await expectControls(p, "admin of other* on other1", {
      "a-drain": { off: false, title: "" },
      "job-submit": { off: true, title: JOBS },
    });
    await p.fill("#create-name", "q9");
    await p.click("#create-submit");
    await waitText(p, "#toast", said.message);
    if (!(await p.evaluate(() => document.querySelector("#toast").classList.contains("bad")))) throw new Error("the 403 is not shown as a failure");
    if (p.jobsAsked.length) throw new Error(`the page of an admin of other* asked for Jobs: ${p.jobsAsked}`);
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

await test("the API docs at /docs list the routes, take the token and run an enqueue", async () => {
  const server = await new Server("docs server", ["--token", TOKEN]).start();
  try {
    await server.createQueue("docs-q", null, TOKEN);
    // The dashboard comes with a 401 (it asks for the token); the docs page may not fail at all.
    const p = await openPage("about:blank", [/status of 401 .*@ http:\/\/127\.0\.0\.1:\d+\/(dashboard\/session)?$/]);
    // Swagger UI is compiled into the binary: not one request leaves the server's origin.
    const requests = [];
    p.on("request", (r) => requests.push(`${r.method()} ${r.url()}`));
    await p.goto(`${server.url}/`);
    await p.waitForSelector("#api-docs", { state: "attached", timeout: 5000 });
    const href = await p.getAttribute("#api-docs", "href");
    if (href !== "/docs") throw new Error(`the header's API docs link goes to ${JSON.stringify(href)}`);
    await p.goto(`${server.url}${href}`);
    if (p.url() !== `${server.url}/docs/index.html`) throw new Error(`/docs led to ${p.url()}`);
    const enqueuePath = "/memq/server/queues/{queue}/enqueue";
    const op = `.opblock-post:has(.opblock-summary-path[data-path="${enqueuePath}"])`;
    await waitFor(
      p,
      (path) =>
        document.querySelectorAll(".opblock").length >= 25 &&
        document.querySelector(`.opblock-post .opblock-summary-path[data-path="${path}"]`) !== null,
      enqueuePath,
      "Swagger UI to list the routes, POST enqueue among them",
      10_000,
    );
    // Authorize: the bearer token, once.
    await p.click(".auth-wrapper button.authorize");
    await p.fill(".modal-ux #auth-bearer-value", TOKEN);
    await p.click(".modal-ux button.authorize[type=submit]");
    await waitText(p, ".modal-ux .auth-container h6", "Authorized");
    await p.click(".modal-ux button.btn-done");
    await p.waitForSelector(".modal-ux", { state: "detached", timeout: 5000 });
    if (!(await p.isVisible(".auth-wrapper button.authorize.locked"))) throw new Error("the Authorize button does not show the lock closed");
    // Try it out (on from the start): POST /memq/server/queues/docs-q/enqueue, a text/plain body
    // (the other type offered, octet-stream, is the same bytes as a file).
    await p.click(`${op} .opblock-summary-control`);
    await p.fill(`${op} tr[data-param-name="queue"] input`, "docs-q");
    const typeSelect = `${op} select.content-type[aria-label="Request content type"]`;
    const types = await p.$$eval(`${typeSelect} option`, (os) => os.map((o) => o.value));
    if (types.join() !== "application/octet-stream,text/plain") throw new Error(`request content types offered: ${types}`);
    await p.selectOption(typeSelect, "text/plain");
    await p.fill(`${op} textarea.body-param__text`, "sent from the API docs");
    await p.click(`${op} button.execute`);
    await waitText(p, `${op} .live-responses-table tbody .response-col_status`, "200");
    const { json } = await server.api("GET", "/queues/docs-q", { token: TOKEN });
    if (json.enqueued !== 1 || json.depth !== 1) throw new Error(`server says enqueued ${json.enqueued}, depth ${json.depth}`);
    const peeked = await server.api("GET", "/queues/docs-q/messages", { token: TOKEN });
    const bodies = peeked.json.messages.map((m) => m.body);
    if (bodies.join() !== "sent from the API docs") throw new Error(`the queue holds ${JSON.stringify(bodies)}`);
    fs.mkdirSync(SHOTS, { recursive: true });
    // The shot: the Execute button, the curl command with the token, and the server's 200.
    await p.$eval(`${op} button.execute`, (el) => el.scrollIntoView());
    await p.mouse.move(0, 0);
    await p.screenshot({ path: path.join(SHOTS, "docs.png") });
    // The token stays in this page only: nothing in the origin's storage (which the dashboard
    // could read) and none after a reload.
    const stored = await p.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    if (stored.includes(TOKEN)) throw new Error(`the token was stored: ${stored}`);
    await p.reload();
    await waitFor(p, () => document.querySelectorAll(".opblock").length >= 25, null, "the routes after a reload", 10_000);
    if (await p.isVisible(".auth-wrapper button.authorize.locked")) throw new Error("the token outlived a reload");
    const away = requests.filter((r) => !r.slice(r.indexOf(" ") + 1).startsWith(`${server.url}/`));
    if (away.length) throw new Error(`requests left ${server.url}:\n    ${away.join("\n    ")}`);
    if (!requests.some((r) => r === `POST ${server.url}/memq/server/queues/docs-q/enqueue`)) throw new Error(`no enqueue among the requests:\n    ${requests.join("\n    ")}`);
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

await test("the page shows offline while the server restarts, then goes live again by itself", async () => {
  const first = await new Server("restarting server").start();
  await first.createQueue("before-restart");
  // While the server is down the stream's reconnect attempts fail; that is expected here.
  const p = await openPage(`${first.url}/`, [
    /ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|ERR_INCOMPLETE_CHUNKED_ENCODING/,
  ]);
  await p.waitForSelector(row("before-restart"), { timeout: 5000 });
  await waitText(p, "#conn-text", "live");
  await p.evaluate(() => {
    window.__sameDocument = true;
  });
  await first.stop();
  await waitText(p, "#conn-text", /offline/, 8000);
  if ((await p.getAttribute("#conn", "data-state")) !== "offline") throw new Error("the pill is not in its offline state");
  await sleep(1500); // a few failed reconnects
  const again = await new Server("restarted server", [], first.port).start();
  try {
    await again.createQueue("after-restart");
    await waitText(p, "#conn-text", "live", 15_000);
    await p.waitForSelector(row("after-restart"), { timeout: 5000 });
    // The restarted server has no memory of the old queue.
    await waitFor(p, () => !document.querySelector('#rows tr[data-queue="before-restart"]'), null, "the old queue to go");
    if (!(await p.evaluate(() => window.__sameDocument === true))) throw new Error("the page reloaded");
    assertClean(p);
    await p.close();
  } finally {
    await again.stop();
  }
});

await test("1,000 queues render within a few seconds and the page stays responsive", async () => {
  const server = await new Server("busy server").start();
  try {
    const names = Array.from({ length: 1000 }, (_, i) => `q-${String(i).padStart(4, "0")}`);
    for (let i = 0; i < names.length; i += 50) {
      await Promise.all(names.slice(i, i + 50).map((n) => server.createQueue(n)));
    }
    await server.enqueueLines("q-0500", Array.from({ length: 3400 }, (_, i) => `x${i}`));
    const opened = Date.now();
    const p = await openPage(`${server.url}/`);
    // The table holds 1,000 rows (aria-rowcount counts the heading) and renders those in view.
    await waitFor(
      p,
      () => document.querySelector("#queue-table").getAttribute("aria-rowcount") === "1001" && document.querySelector("#rows tr")?.dataset.queue === "q-0000",
      null,
      "1,000 rows",
      5000,
    );
    const shown = Date.now() - opened;
    const rendered = await p.$$eval("#rows tr", (trs) => trs.length);
    if (rendered > 100) throw new Error(`${rendered} rows in the DOM: the table should render those in view only`);
    // Frames keep coming while snapshots of 1,000 queues arrive every second.
    const worstFrameGap = await p.evaluate(
      () =>
        new Promise((resolve) => {
          let last = performance.now();
          let worst = 0;
          const end = last + 3000;
          const frame = (now) => {
            worst = Math.max(worst, now - last);
            last = now;
            if (now < end) requestAnimationFrame(frame);
            else resolve(worst);
          };
          requestAnimationFrame(frame);
        }),
    );
    if (worstFrameGap > 1000) throw new Error(`the page froze for ${Math.round(worstFrameGap)} ms`);
    await p.click('thead button[data-sort="depth"]');
    await waitFor(p, () => document.querySelector("#rows tr")?.dataset.queue === "q-0500", null, "q-0500 first by depth", 3000);
    await waitText(p, cell("q-0500", "depth"), "3.4k");
    await waitText(p, "#t-queues", "1k");
    // The last row, scrolled to (by name it is q-0999), is drawn where it should be.
    await p.click('thead button[data-sort="name"]');
    await p.$eval("#table-wrap", (el) => (el.scrollTop = el.scrollHeight));
    await waitFor(p, () => __rowsInView().last === "q-0999", null, "q-0999 at the bottom", 3000).catch(async (e) => {
      throw new Error(`${e.message}; saw ${await p.evaluate(() => __rowsInView().last)}`);
    });
    console.log(`        1,000 rows in ${shown} ms (${rendered} in the DOM); worst frame gap ${Math.round(worstFrameGap)} ms`);
    fs.mkdirSync(SHOTS, { recursive: true });
    await p.screenshot({ path: path.join(SHOTS, "dashboard-1000-queues.png") });
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

await test("queue names sort naturally (q2 before q10), both ways and filtered", async () => {
  const server = await new Server("names server").start();
  try {
    const names = ["q10", "q2", "q1", "Q3", "q20", "q100", "alpha", "item-10", "item-9", "Item-2b", "item-2a"];
    await Promise.all(names.map((n) => server.createQueue(n)));
    const p = await openPage(`${server.url}/`);
    await waitText(p, "#t-queues", String(names.length));
    const order = () => p.$$eval("#rows tr", (trs) => trs.map((tr) => tr.dataset.queue).join(" "));
    const want = "alpha item-2a Item-2b item-9 item-10 q1 q2 Q3 q10 q20 q100";
    await waitFor(p, (w) => [...document.querySelectorAll("#rows tr")].map((tr) => tr.dataset.queue).join(" ") === w, want, "natural order").catch(async (e) => {
      throw new Error(`${e.message}: wanted ${want}, saw ${await order()}`);
    });
    await p.click('thead button[data-sort="name"]');
    const reversed = want.split(" ").reverse().join(" ");
    await waitFor(p, (w) => [...document.querySelectorAll("#rows tr")].map((tr) => tr.dataset.queue).join(" ") === w, reversed, "reversed natural order").catch(async (e) => {
      throw new Error(`${e.message}: wanted ${reversed}, saw ${await order()}`);
    });
    await p.click('thead button[data-sort="name"]');
    await p.fill("#filter", "q1");
    await waitFor(p, () => [...document.querySelectorAll("#rows tr")].map((tr) => tr.dataset.queue).join(" ") === "q1 q10 q100", null, "q1 q10 q100").catch(async (e) => {
      throw new Error(`${e.message}; saw ${await order()}`);
    });
    // Ties on a figure go by name, naturally too.
    await p.fill("#filter", "");
    await p.click('thead button[data-sort="depth"]');
    await waitFor(p, (w) => [...document.querySelectorAll("#rows tr")].map((tr) => tr.dataset.queue).join(" ") === w, want, "natural order among equal depths").catch(async (e) => {
      throw new Error(`${e.message}: wanted ${want}, saw ${await order()}`);
    });
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

await test("the page applies the stream's changes and removals, takes a whole snapshot at any time, and starts again after a gap", async () => {
  // A real server for the page; its stream replaced by one told here, so every case comes in a
  // known order: a whole snapshot, changes (a row, a new queue, one removed), a whole snapshot
  // again (it replaces everything), a change that does not follow (seq gap: the page must drop it
  // and what follows on that connection, and connect again at once), then a whole snapshot and
  // two idle changes on the new connection (ages count on from the time of each row).
  const server = await new Server("scripted stream server").start();
  try {
    const t0 = Date.parse("2030-01-01T00:00:00Z");
    const at = (s) => new Date(t0 + s * 1000).toISOString();
    const q = (name, depth, oldest = 0) => ({
      name, depth, delayed: 0, inflight: 0, dead: 0, enqueued: depth, dequeued: 0, acked: 0, requeued: 0, drained: 0,
      paused: false, leaseSeconds: 30, maxAttempts: 0, maxDepth: 0, oldestAgeSeconds: oldest, rateIn: 0, rateOut: 0,
    });
    const sse = (...events) => events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("");
    const STREAM_RE = /\/memq\/server\/stats\/stream(\?|$)/;
    const first = sse(
      { kind: "stats", time: at(0), seq: 1, queues: [q("a", 1, 5), q("b", 2), q("c", 3)] },
      { kind: "statsDelta", time: at(1), seq: 2, queues: [q("b", 20)], removed: ["c"] },
      { kind: "statsDelta", time: at(2), seq: 3, queues: [q("d", 4, 9)], removed: [] },
      { kind: "stats", time: at(6), seq: 7, queues: [q("a", 1, 11), q("d", 4, 13), q("e", 5)] },
      { kind: "statsDelta", time: at(7), seq: 9, queues: [q("a", 999)], removed: [] },
      { kind: "statsDelta", time: at(8), seq: 10, queues: [q("a", 1000)], removed: ["e"] },
    );
    const second = sse(
      { kind: "stats", time: at(100), seq: 50, queues: [q("a", 2, 30), q("e", 5), q("f", 6)] },
      { kind: "statsDelta", time: at(101), seq: 51, queues: [], removed: [] },
      { kind: "statsDelta", time: at(165), seq: 52, queues: [q("e", 7)], removed: [] },
    );
    const streams = [];
    let releaseSecond;
    const secondHeld = new Promise((r) => (releaseSecond = r));
    const p = await openPage(`${server.url}/`, [], (page) =>
      page.route(STREAM_RE, async (route) => {
        const n = streams.push({ url: route.request().url(), at: Date.now() });
        if (n === 2) await secondHeld;
        if (n <= 2) await route.fulfill({ status: 200, contentType: "text/event-stream", body: n === 1 ? first : second });
        // Later connections (the second stream ended) wait until the page closes.
      }),
    );
    const table = () => p.$$eval("#rows tr", (trs) => trs.map((tr) => `${tr.dataset.queue}=${tr.querySelector('[data-col="depth"]').textContent}`).join(" "));
    const expect = async (want, what) => {
      await waitFor(p, (w) => [...document.querySelectorAll("#rows tr")].map((tr) => `${tr.dataset.queue}=${tr.querySelector('[data-col="depth"]').textContent}`).join(" ") === w, want, what).catch(async (e) => {
        throw new Error(`${e.message}: wanted ${want}, saw ${await table()}`);
      });
    };
    // The page connects again after the gap; that second stream is held until released below.
    const until = Date.now() + 5000;
    while (streams.length < 2 && Date.now() < until) await sleep(20);
    if (streams.length < 2) throw new Error("the page did not connect again after the seq gap");
    await expect("a=1 d=4 e=5", "the whole snapshot of seq 7, without the changes after the gap");
    // Live all along: it connected again because of the gap (at once), not because the stream
    // ended (that shows offline and waits before it retries).
    await waitText(p, "#conn-text", "live");
    await waitText(p, cell("d", "oldest"), "13s");
    await waitText(p, "#t-queues", "3");
    if (!streams.every((s) => s.url.endsWith("/memq/server/stats/stream?changes=true"))) throw new Error(`streams: ${JSON.stringify(streams)}`);
    releaseSecond();
    await expect("a=2 e=7 f=6", "the second connection's whole snapshot and its change");
    // a came at 100 s, 30 s old, and was not sent again: at 165 s it is 95 s old.
    await waitText(p, cell("a", "oldest"), "1m 35s");
    await waitText(p, cell("e", "oldest"), "–");
    await waitText(p, "#t-depth", "15");
    await p.unrouteAll({ behavior: "ignoreErrors" });
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

await test("10,000 queues: the table shows within 2 s, input answers at once, an idle stream and the history cost little", async () => {
  const server = await new Server("10,000-queue server").start();
  try {
    const N = 10_000;
    // Unpadded names: by name, q2 comes before q10 (natural order).
    const names = Array.from({ length: N }, (_, i) => `q${i}`);
    const making = Date.now();
    for (let i = 0; i < N; i += 250) {
      await Promise.all(names.slice(i, i + 250).map((n) => server.createQueue(n)));
    }
    await server.enqueueLines("q7777", Array.from({ length: 3400 }, (_, i) => `x${i}`));
    const madeMs = Date.now() - making;
    // What the page receives, from the browser's own network log: the stream's bytes as they
    // arrive, and every history request with its size.
    const net = { stream: new Set(), streamBytes: 0, history: new Map() };
    const p = await openPage(`${server.url}/`, [], async (page) => {
      const cdp = await context.newCDPSession(page);
      cdp.on("Network.requestWillBeSent", (e) => {
        const u = new URL(e.request.url);
        if (u.pathname === "/memq/server/stats/stream") net.stream.add(e.requestId);
        if (u.pathname === "/memq/server/stats/history") net.history.set(e.requestId, { url: `${u.pathname}${u.search}`, bytes: 0 });
      });
      cdp.on("Network.dataReceived", (e) => {
        if (net.stream.has(e.requestId)) net.streamBytes += e.dataLength;
        const h = net.history.get(e.requestId);
        if (h) h.bytes += e.dataLength;
      });
      await cdp.send("Network.enable");
      // The moment the first row is in view, on the page's clock (0: navigation start).
      await page.addInitScript(() => {
        const look = () => {
          const tr = document.querySelector("#rows tr");
          if (tr && tr.getBoundingClientRect().height > 0) window.__firstRowAt = performance.now();
          else requestAnimationFrame(look);
        };
        requestAnimationFrame(look);
      });
    });
    await waitFor(p, () => window.__firstRowAt > 0, null, "the first row", 10_000);
    const firstRowMs = await p.evaluate(() => window.__firstRowAt);
    await waitText(p, "#t-queues", "10k");
    const inView = await p.evaluate(() => __rowsInView().names);
    const wantTop = names.slice(0, inView.length).join(" ");
    if (inView.length < 10 || inView.join(" ") !== wantTop) throw new Error(`rows in view: ${inView.join(" ")}; wanted ${wantTop}`);
    const rendered = await p.$$eval("#rows tr", (trs) => trs.length);
    if (rendered > 100) throw new Error(`${rendered} rows in the DOM: the table should render those in view only`);

    // Five idle seconds after the first snapshot: the bytes of the stream, and the frames.
    const snapshotBytes = net.streamBytes;
    const idleFrom = Date.now();
    const worstFrameGap = await p.evaluate(
      () =>
        new Promise((resolve) => {
          let last = performance.now();
          let worst = 0;
          const end = last + 5000;
          const frame = (now) => {
            worst = Math.max(worst, now - last);
            last = now;
            if (now < end) requestAnimationFrame(frame);
            else resolve(worst);
          };
          requestAnimationFrame(frame);
        }),
    );
    const idleSeconds = (Date.now() - idleFrom) / 1000;
    const idleRate = (net.streamBytes - snapshotBytes) / idleSeconds;
    const atStart = [...net.history.values()];
    const historyBytes = atStart.reduce((sum, h) => sum + h.bytes, 0);

    // Input: each key typed into the filter, to the first row that answers it; then a sort.
    await p.evaluate(() => {
      window.__answer = (type, want) => {
        window.__answered = new Promise((resolve) => {
          let t0 = -1;
          document.addEventListener(type, (e) => (t0 = e.timeStamp), { capture: true, once: true });
          const look = (now) => {
            if (t0 >= 0 && document.querySelector("#rows tr")?.dataset.queue === want) resolve(now - t0);
            else requestAnimationFrame(look);
          };
          requestAnimationFrame(look);
        });
      };
    });
    const answer = async (type, want, act) => {
      await p.evaluate(([t, w]) => window.__answer(t, w), [type, want]);
      await act();
      const ms = await Promise.race([p.evaluate(() => window.__answered), sleep(3000).then(() => null)]);
      if (ms === null) throw new Error(`no first row ${want} within 3 s of the ${type}`);
      return ms;
    };
    await p.focus("#filter");
    const typed = [];
    for (const [key, want] of [["q", "q0"], ["7", "q7"], ["7", "q77"], ["7", "q777"], ["7", "q7777"]]) {
      typed.push(await answer("keydown", want, () => p.keyboard.press(key)));
    }
    await p.fill("#filter", "");
    await waitFor(p, () => document.querySelector("#rows tr")?.dataset.queue === "q0", null, "q0 first again");
    const sortMs = await answer("mousedown", "q7777", () => p.click('thead button[data-sort="depth"]'));
    await waitText(p, cell("q7777", "depth"), "3.4k");
    // Scrolled to the end (by name), the table draws the last rows.
    await p.click('thead button[data-sort="name"]');
    await p.$eval("#table-wrap", (el) => (el.scrollTop = el.scrollHeight));
    await waitFor(p, () => __rowsInView().last === "q9999", null, "q9999 at the bottom", 3000).catch(async (e) => {
      throw new Error(`${e.message}; saw ${await p.evaluate(() => __rowsInView().last)}`);
    });
    await p.$eval("#table-wrap", (el) => (el.scrollTop = 0));

    // A queue opened: its own 15 minutes of history, nothing more.
    await p.fill("#filter", "q7777");
    await p.click(`${row("q7777")} .qname`);
    await waitText(p, "#detail-title", "q7777");
    await waitFor(p, () => document.querySelectorAll("#chart-depth path.line").length >= 1, null, "q7777's depth chart");
    const opened = [...net.history.values()].slice(atStart.length);

    const worstKey = Math.max(...typed);
    console.log(
      `        10,000 queues made in ${madeMs} ms; first row in view ${Math.round(firstRowMs)} ms after navigation; ` +
        `${rendered} rows in the DOM; first snapshot ${(snapshotBytes / 1e6).toFixed(2)} MB`,
    );
    console.log(
      `        idle stream ${Math.round(idleRate)} B/s over ${idleSeconds.toFixed(1)} s; worst frame gap ${Math.round(worstFrameGap)} ms; ` +
        `history at start ${historyBytes} B in ${atStart.length} requests; on opening q7777 ${opened.map((h) => `${h.bytes} B (${h.url})`).join(", ")}`,
    );
    console.log(`        filter keys answered in ${typed.map((t) => Math.round(t)).join(", ")} ms; sort by depth in ${Math.round(sortMs)} ms`);
    if (firstRowMs > 2000) throw new Error(`the first row showed ${Math.round(firstRowMs)} ms after navigation (most 2,000)`);
    if (idleRate > 50_000) throw new Error(`the idle stream brought ${Math.round(idleRate)} B/s (most 50,000)`);
    if (historyBytes > 100_000) throw new Error(`${historyBytes} B of history at start (most 100,000): ${JSON.stringify(atStart)}`);
    if (atStart.some((h) => !/[?&]queue=/.test(h.url))) throw new Error(`history of every queue asked for: ${JSON.stringify(atStart)}`);
    if (opened.length !== 1 || !opened[0].url.includes("queue=q7777") || opened[0].bytes > 100_000) {
      throw new Error(`history asked for on opening q7777: ${JSON.stringify(opened)}`);
    }
    if (worstKey > 500 || sortMs > 500) throw new Error(`input answered in ${Math.round(worstKey)} ms (filter) and ${Math.round(sortMs)} ms (sort); most 500`);
    if (worstFrameGap > 1000) throw new Error(`the page froze for ${Math.round(worstFrameGap)} ms`);
    fs.mkdirSync(SHOTS, { recursive: true });
    await p.screenshot({ path: path.join(SHOTS, "dashboard-10000-queues.png") });
    assertClean(p);
    await p.close();
  } finally {
    await server.stop();
  }
});

await context.close();
fs.rmSync(profile, { recursive: true, force: true });
clearTimeout(suiteTimer);
console.log(`browser: ${counts.passed} passed, ${counts.failed} failed`);
process.exit(counts.failed ? 1 : 0);
