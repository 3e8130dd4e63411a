// The package in a browser: headless Chromium (Debian's chromium-headless-shell, WebGPU on
// SwiftShader) loads dist/ through navigator.gpu and compares WebGPU with the CPU backend in the
// page, and loads a Hugging Face Llama through fetch (no node:fs), its tokenizer package by an
// import map. Under CI=true a missing browser fails; elsewhere the test is skipped without one.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const BROWSER = "/usr/bin/chromium-headless-shell";
const root = fileURLToPath(new URL("..", import.meta.url));
const skip = !existsSync(BROWSER) && process.env.CI !== "true" ? `no ${BROWSER}` : false;

/** Serves dist/, the pages, the tokenizer package and the Hugging Face fixtures; opens `page` in Chromium and returns its globalThis.mobaResult. */
async function inChromium(page: string): Promise<{ result: Record<string, unknown>; logs: string[] }> {
  assert.ok(existsSync(`${root}dist/index.js`), "dist/ is built (npm ci runs tsc)");
  const allowed =
    /^(dist\/[\w/.-]+\.js|test\/browser\/(page\.html|hf\.html|compare\.js)|node_modules\/@huggingface\/tokenizers\/dist\/tokenizers\.mjs|test\/fixtures\/hf\/[\w.-]+\/[\w.-]+)$/;
  const server = createServer((request, response) => {
    const path = request.url === "/" ? "test/browser/page.html" : (request.url ?? "").slice(1);
    if (!allowed.test(path) || path.includes("..") || !existsSync(root + path)) {
      response.statusCode = 404;
      response.end();
      return;
    }
    response.setHeader(
      "content-type",
      /\.m?js$/.test(path) ? "text/javascript" : path.endsWith(".html") ? "text/html" : "application/octet-stream",
    );
    response.end(readFileSync(root + path));
  }).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({
    executablePath: BROWSER,
    args: ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"],
  });
  try {
    const tab = await browser.newPage();
    const logs: string[] = [];
    tab.on("console", (m) => logs.push(m.text()));
    tab.on("pageerror", (e) => logs.push(e.message));
    await tab.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/${page}`);
    // the page's globalThis is its window
    await tab.waitForFunction(() => "mobaResult" in globalThis, undefined, { timeout: 60_000 });
    const result = (await tab.evaluate(() => (globalThis as unknown as { mobaResult: Promise<unknown> }).mobaResult)) as Record<
      string,
      unknown
    >;
    return { result, logs };
  } finally {
    await browser.close();
    server.close();
  }
}

test("in headless Chromium, WebGPU MoBA and full attention equal the CPU backend", { skip, timeout: 240_000 }, async () => {
  const { result, logs } = await inChromium("");
  assert.equal(result.error, undefined, `${result.error}\n${logs.join("\n")}`);
  const errors = result as Record<string, number>;
  for (const [name, error] of Object.entries(errors)) assert.ok(error <= 1e-5, `${name}: WebGPU vs CPU relative error ${error}`);
  assert.deepEqual(Object.keys(errors).sort(), ["dk", "dq", "dv", "full", "lse", "out"]);
});

test(
  "in headless Chromium, loadModel fetches a sharded BF16 Llama and its tokenizer: the logits and ids Node computes",
  { skip, timeout: 240_000 },
  async () => {
    const { result, logs } = await inChromium("test/browser/hf.html");
    assert.equal(result.error, undefined, `${result.error}\n${logs.join("\n")}`);
    const { text, ids, decoded, logits } = result as { text: string; ids: number[]; decoded: string; logits: number[] };
    const { loadModel, forward, cpuBackend } = await import("../src/index.js");
    const { model, tokenizer } = await loadModel(`${root}test/fixtures/hf/llama3-bf16-sharded`);
    assert.deepEqual(ids, Array.from(tokenizer!.encode(text)));
    assert.equal(decoded, text);
    const T = ids.length;
    const expected = await cpuBackend.scope("test", async () => {
      const trace = await forward(
        model,
        { tokens: Int32Array.from(ids), targets: new Int32Array(T), weights: new Float32Array(T), cuSeqlens: Int32Array.of(0, T) },
        cpuBackend,
      );
      return Array.from(await cpuBackend.download(trace.logits));
    });
    assert.deepEqual(logits, expected);
  },
);
