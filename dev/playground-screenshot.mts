// The README's picture of the playground (docs/playground.png): the page in headless Chromium with each part run
// at its defaults on the page's default backend: part 1 at 2048 tokens, part 2 on the bundled model over the default
// excerpt (layer 3, head 3, its row 20 hovered), part 4 trained for STEPS steps (150: ~75 s on 2 cores), then part 3
// sampling from the bundled model. test/playground.test.ts checks the parts; this only takes the picture.
//   node --import tsx dev/playground-screenshot.mts [STEPS] [OUT.png]
import { chromium } from "playwright-core";
// @ts-expect-error: a plain .mjs script without types
import { buildWeb, serveWeb } from "../scripts/build-web.mjs";

const [steps = "150", out = "docs/playground.png"] = process.argv.slice(2);
const server = await serveWeb(await buildWeb(), 0);
// WebGPU on SwiftShader, offered beside the CPU (the page's default on a software adapter)
const webgpu = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"];
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium-headless-shell", args: webgpu });
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 1500 } });
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForSelector("#backend:enabled");
  await page.fill("#tokens", "2048"); // the longest the float64 reference checks
  await page.click("#run");
  await page.waitForSelector('body[data-state="done"]', { timeout: 120_000 });
  await page.click("#gatingRun");
  await page.waitForSelector('#gating-section[data-state="done"]', { timeout: 120_000 });
  await page.fill("#trainSteps", steps);
  await page.click("#trainRun");
  await page.waitForSelector('#train-section[data-state="done"]', { timeout: 600_000 });
  await page.selectOption("#model", "bundled"); // training chose its own model for part 3
  await page.click("#generateRun");
  await page.waitForSelector('#generate-section[data-state="done"]', { timeout: 60_000 });
  await page.selectOption("#layer", "layer 3");
  await page.selectOption("#head", "3");
  const blocks = Number(await page.getAttribute("#heatmap", "data-blocks"));
  const chosen: number[] = JSON.parse((await page.getAttribute("#heatmap", "data-chosen"))!);
  const [i, past] = [20, chosen.slice(20 * blocks, 20 * blocks + 20)];
  const j = past.indexOf(Math.max(...past)); // the past block most of row 20's queries chose
  await page.locator("#heatmap").scrollIntoViewIfNeeded();
  const box = (await page.locator("#heatmap").boundingBox())!;
  await page.mouse.move(box.x + ((j + 0.5) * box.width) / blocks, box.y + ((i + 0.5) * box.width) / blocks);
  await page.screenshot({ path: out, fullPage: true });
  console.log(`${out}: ${await page.textContent("#trainStatus")} ${await page.textContent("#genStats")}`);
} finally {
  await browser.close();
  server.close();
}
