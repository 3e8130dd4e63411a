// The package in a browser: headless Chromium (Debian's chromium-headless-shell, WebGPU on
// SwiftShader) loads dist/ through navigator.gpu and compares WebGPU with the CPU backend in the
// page. Under CI=true a missing browser fails; elsewhere the test is skipped without one.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const BROWSER = "/usr/bin/chromium-headless-shell";
const root = fileURLToPath(new URL("..", import.meta.url));
const skip = !existsSync(BROWSER) && process.env.CI !== "true" ? `no ${BROWSER}` : false;

test("in headless Chromium, WebGPU MoBA and full attention equal the CPU backend", { skip, timeout: 240_000 }, async () => {
  assert.ok(existsSync(`${root}dist/index.js`), "dist/ is built (npm ci runs tsc)");
  const server = createServer((request, response) => {
    const path = request.url === "/" ? "test/browser/page.html" : (request.url ?? "").slice(1);
    if (!/^(dist\/[\w/.-]+\.js|test\/browser\/(page\.html|compare\.js))$/.test(path) || !existsSync(root + path)) {
      response.statusCode = 404;
      response.end();
      return;
    }
    response.setHeader("content-type", path.endsWith(".js") ? "text/javascript" : "text/html");
    response.end(readFileSync(root + path));
  }).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({
    executablePath: BROWSER,
    args: ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"],
  });
  try {
    const page = await browser.newPage();
    const logs: string[] = [];
    page.on("console", (m) => logs.push(m.text()));
    page.on("pageerror", (e) => logs.push(e.message));
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    // the page's globalThis is its window
    await page.waitForFunction(() => "mobaResult" in globalThis, undefined, { timeout: 60_000 });
    const result = (await page.evaluate(() => (globalThis as unknown as { mobaResult: Promise<unknown> }).mobaResult)) as Record<
      string,
      number | string
    >;
    assert.equal(result.error, undefined, `${result.error}\n${logs.join("\n")}`);
    const errors = result as Record<string, number>;
    for (const [name, error] of Object.entries(errors)) assert.ok(error <= 1e-5, `${name}: WebGPU vs CPU relative error ${error}`);
    assert.deepEqual(Object.keys(errors).sort(), ["dk", "dq", "dv", "full", "lse", "out"]);
  } finally {
    await browser.close();
    server.close();
  }
});
