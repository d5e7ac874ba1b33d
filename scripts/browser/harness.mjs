// The test harness of the browser suites: each test bounded in time, one line for its outcome,
// the counts for the suite's closing line.

/** `test(name, fn)` runs `fn` within `timeoutMs`; `counts` holds how many passed and failed. */
export function harness(timeoutMs) {
  const counts = { passed: 0, failed: 0 };
  async function test(name, fn) {
    const started = Date.now();
    let timer;
    try {
      await Promise.race([
        fn(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`took longer than ${timeoutMs / 1000} s`)), timeoutMs);
        }),
      ]);
      counts.passed++;
      console.log(`  ok    ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    } catch (e) {
      counts.failed++;
      console.log(`  FAIL  ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)\n        ${String(e.message).replaceAll("\n", "\n        ")}`);
    } finally {
      clearTimeout(timer);
    }
  }
  return { test, counts };
}
