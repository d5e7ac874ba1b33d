// Browser test of the dashboard of a queue server running in a pod on the real node of
// `scripts/kube-up.sh --node`, seen as a user sees it: through `kubectl port-forward svc/queue`
// (started by scripts/browser-test.sh, which applies manifests/base first). Debian's chromium,
// driven by playwright-core.
//   MEMQ_NODE_URL        http://127.0.0.1:PORT, the port-forward
//   MEMQ_NODE_TOKEN      the admin token (Secret memq-token-admin)
//   MEMQ_NODE_NAMESPACE  the namespace of the walkthrough
//   KUBECTL, KUBECONFIG  to check where the launched Job's pods ran
// Closing line: "browser on the node: N passed, N failed".

import { execFileSync } from "node:child_process";
import path from "node:path";
import { chromium } from "playwright-core";
import { harness } from "./harness.mjs";

const URL = process.env.MEMQ_NODE_URL;
const TOKEN = process.env.MEMQ_NODE_TOKEN;
const NS = process.env.MEMQ_NODE_NAMESPACE;
const SHOTS = process.env.SCREENSHOT_DIR || "target/screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TEST_TIMEOUT = 150_000;
if (!URL || !TOKEN || !NS || !process.env.KUBECTL) {
  console.error("MEMQ_NODE_URL, MEMQ_NODE_TOKEN, MEMQ_NODE_NAMESPACE and KUBECTL must be set; run scripts/browser-test.sh");
  process.exit(2);
}

const kubectl = (...args) => execFileSync(process.env.KUBECTL, ["-n", NS, ...args], { encoding: "utf8" });

async function api(method, p, body) {
  const resp = await fetch(`${URL}/memq/server${p}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "text/plain" },
    body,
  });
  if (!resp.ok) throw new Error(`${method} ${p}: ${resp.status} ${await resp.text()}`);
  return resp.json();
}

async function waitFor(page, fn, arg, what, timeout) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 250 });
  } catch {
    throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
  }
}

const { test, counts } = harness(TEST_TIMEOUT);

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "light" });
// In the page: the Jobs panel's row of a queue as its cells' texts, or null.
await context.addInitScript(() => {
  window.__jobRow = (queue) =>
    [...document.querySelectorAll("#jobs-rows tr")].map((tr) => [...tr.cells].map((td) => td.textContent)).find((cells) => cells[1] === queue) ?? null;
});
const page = await context.newPage();
const problems = [];
page.on("console", (m) => {
  // The page itself comes with a 401: it asks for the token.
  if (m.type() === "error" && !/401/.test(m.text())) problems.push(m.text());
});
page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));

await test("the dashboard reads the walkthrough's live stats through kubectl port-forward", async () => {
  await page.goto(URL);
  await waitFor(page, () => document.querySelector("#token-dialog").open, null, "the token dialog", 10_000);
  await page.fill("#token-input", TOKEN);
  await page.click("#token-form button[type=submit]");
  await waitFor(page, () => !document.querySelector("#token-dialog").open, null, "the dialog to close", 10_000);
  // The producer Job loads 100 items and the consumers Job drains them: the page follows.
  await waitFor(
    page,
    () => document.querySelector('#rows tr[data-queue="keygen"] td[data-col="acked"]')?.textContent.trim() === "100",
    null,
    "keygen acked 100 in the page",
    120_000,
  );
  const depth = await page.$eval('#rows tr[data-queue="keygen"] td[data-col="depth"]', (td) => td.textContent.trim());
  if (depth !== "0") throw new Error(`keygen depth ${depth} once all are acked`);
  // Live: what happens on the server shows up without a reload.
  await api("PUT", "/queues/live");
  await api("POST", "/queues/live/enqueue?batch=lines", "a\nb\nc\nd\ne\nf\ng");
  await waitFor(
    page,
    () => document.querySelector('#rows tr[data-queue="live"] td[data-col="depth"]')?.textContent.trim() === "7",
    null,
    "the new queue with 7 ready in the page",
    15_000,
  );
  await fetch(`${URL}/memq/server/queues/live`, { method: "DELETE", headers: { Authorization: `Bearer ${TOKEN}` } });
  await waitFor(page, () => document.querySelector('#rows tr[data-queue="live"]') === null, null, "the deleted queue to leave the page", 15_000);
  if (problems.length) throw new Error(`console errors: ${problems.join("; ")}`);
});

await test("a Job launched from the Jobs panel runs its consumers in containers on the node", async () => {
  await api("PUT", "/queues/thumbnails");
  await api("POST", "/queues/thumbnails/enqueue?batch=lines", Array.from({ length: 30 }, (_, i) => `img-${i}.png`).join("\n"));
  await waitFor(page, () => !document.querySelector("#jobs").hidden, null, "the Jobs panel", 10_000);
  await page.fill("#job-queue", "thumbnails");
  await page.fill("#job-parallelism", "2");
  await page.click("#job-form button[type=submit]");
  // Parallelism 2, no pod failed, done: one consumer exited 0 once the queue was finished.
  await waitFor(
    page,
    (queue) => {
      const cells = window.__jobRow(queue);
      return cells !== null && cells[2] === "2" && cells[3] === "0" && Number(cells[4]) >= 1 && cells[5] === "0";
    },
    "thumbnails",
    "the launched Job to succeed in the panel",
    120_000,
  );
  const stats = await api("GET", "/queues/thumbnails");
  if (stats.acked !== 30) throw new Error(`thumbnails: ${JSON.stringify(stats)}`);
  const [name] = await page.evaluate((queue) => window.__jobRow(queue), "thumbnails");
  const pods = JSON.parse(kubectl("get", "pods", "-l", `batch.kubernetes.io/job-name=${name}`, "-o", "json")).items;
  if (pods.length !== 2) throw new Error(`${pods.length} pods for ${name}`);
  for (const pod of pods) {
    const c = pod.status.containerStatuses[0];
    const where = `${pod.metadata.name}: node ${pod.spec.nodeName}, ${c.containerID}, ${JSON.stringify(c.state)}`;
    if (pod.spec.nodeName !== "memq-node" || !c.containerID?.startsWith("containerd://") || c.state.terminated?.exitCode !== 0) {
      throw new Error(`not a container that ran and exited 0 on the node: ${where}`);
    }
  }
  await page.mouse.move(0, 0);
  await page.screenshot({ path: path.join(SHOTS, "dashboard-node.png"), fullPage: true });
  // Deleted from the panel after a confirm: the Job and its pods go.
  let question = "";
  page.once("dialog", (d) => {
    question = d.message();
    d.accept();
  });
  await page.click(`#jobs-rows tr:has(td[title="${name}"]) button`);
  await waitFor(page, (queue) => window.__jobRow(queue) === null, "thumbnails", "the deleted Job to leave the panel", 30_000);
  if (!question.startsWith(`Delete Job ${name}`)) throw new Error(`confirm said ${JSON.stringify(question)}`);
  if (kubectl("get", "jobs", "-o", "name").includes(`job.batch/${name}`)) throw new Error(`${name} is still there`);
  if (problems.length) throw new Error(`console errors: ${problems.join("; ")}`);
});

await browser.close();
console.log(`\nbrowser on the node: ${counts.passed} passed, ${counts.failed} failed`);
process.exit(counts.failed ? 1 : 0);
