// The playground (web/) in headless Chromium: built by scripts/build-web.mjs and served from web/dist.
// With WebGPU (SwiftShader): part 1 runs at a small size and checks MoBA against the float64
// reference, part 2 draws the heatmap and answers a hover with gate scores; a screenshot is written
// to a temp dir (printed). Without WebGPU: the page says CPU and part 1 still checks out. No console
// errors. Skipped without the browser, except under CI=true (as test/browser.test.ts).
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { Page } from "playwright-core";
// @ts-expect-error: a plain .mjs script without types
import { buildWeb } from "../scripts/build-web.mjs";

const BROWSER = "/usr/bin/chromium-headless-shell";
const skip = !existsSync(BROWSER) && process.env.CI !== "true" ? `no ${BROWSER}` : false;
const WEBGPU = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"];

/**
 * Opens the built playground in Chromium launched with `args`, runs it at 512 tokens, blocks of 32, top-3, checks part 1
 * (both rows timed, the ideal ratio, MoBA within 1e-4 of the float64 reference), then hands the page to `inspect`; at the
 * end no console error. Returns the backend the page names and its reference error.
 */
async function runPlayground(args: string[], inspect: (page: Page) => Promise<void>): Promise<{ backend: string; error: number }> {
  const dist: string = await buildWeb();
  const server = createServer((request, response) => {
    const name = request.url === "/" ? "index.html" : (request.url ?? "").slice(1);
    if (!/^(index\.html|main\.js)$/.test(name)) {
      response.statusCode = 404;
      response.end();
      return;
    }
    response.setHeader("content-type", name.endsWith(".js") ? "text/javascript" : "text/html");
    response.end(readFileSync(join(dist, name)));
  }).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: BROWSER, args });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 1500 } });
    const errors: string[] = [];
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    await page.waitForFunction(`document.getElementById("backend").textContent !== "…"`); // tests have no DOM types: a string
    const backend = (await page.textContent("#backend")) ?? "";
    await page.fill("#tokens", "512");
    await page.fill("#blockSize", "32");
    await page.fill("#topK", "3");
    await page.click("#run");
    await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 90_000 });
    assert.equal(await page.getAttribute("body", "data-state"), "done", (await page.textContent("#status")) ?? "");

    assert.equal(await page.locator("#times tr").count(), 2);
    assert.match((await page.textContent("#ideal")) ?? "", /Ideal ratio .*: 3\.44×/); // 16 blocks, top-3: 257 keys per query / 75
    const error = Number(await page.getAttribute("#reference", "data-error"));
    assert.ok(error >= 0 && error < 1e-4, `MoBA vs the reference: ${error}`);
    await inspect(page);
    assert.deepEqual(errors, []);
    return { backend, error };
  } finally {
    await browser.close();
    server.close();
  }
}

test(
  "the playground on WebGPU in headless Chromium: MoBA checked against the reference, the gating heatmap",
  { skip, timeout: 120_000 },
  async () => {
    const shot = join(mkdtempSync(join(tmpdir(), "moba-playground-")), "playground.png");
    const { backend, error } = await runPlayground(WEBGPU, async (page) => {
      // part 2: 16 × 16 blocks; row 6 (queries leaning towards block 3) shows block 3 chosen and its gate scores on hover
      assert.equal(await page.getAttribute("#heatmap", "data-blocks"), "16");
      const box = (await page.locator("#heatmap").boundingBox())!;
      const cell = box.width / 16;
      await page.mouse.move(box.x + 3.5 * cell, box.y + 6.5 * cell);
      const text = (await page.textContent("#cell")) ?? "";
      const [, chosen, rows] = text.match(/query block 6, key block 3: chosen by (\d+) of (\d+) queries; mean gate score/) ?? [];
      assert.ok(chosen !== undefined && Number(chosen) > Number(rows) / 2, text);
      const [r, , b]: number[] = await page.evaluate(`(() => {
      const canvas = document.getElementById("heatmap"), size = canvas.width / 16;
      return Array.from(canvas.getContext("2d").getImageData(3.5 * size, 6.5 * size, 1, 1).data);
    })()`);
      assert.ok(b - r > 60, `the chosen cell is drawn blue, not light grey: rgb ${r}, _, ${b}`);
      assert.match((await page.textContent("#share")) ?? "", /MoBA attended 29\.0% of the causal mask/);
      await page.screenshot({ path: shot, fullPage: true });
    });
    assert.equal(backend, "WebGPU");
    console.log(`playground (${backend}): reference error ${error.toExponential(1)}; screenshot ${shot}`);
  },
);

test("the playground without WebGPU falls back to the CPU backend and says so", { skip, timeout: 120_000 }, async () => {
  const { backend, error } = await runPlayground(["--disable-features=WebGPU"], async () => {});
  assert.match(backend, /^CPU \(/);
  console.log(`playground (${backend}): reference error ${error.toExponential(1)}`);
});
