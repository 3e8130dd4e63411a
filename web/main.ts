// The playground (web/index.html): MoBA against full attention on random inputs, the blocks its gate chose,
// a model generating text with MoBA decoding, and the tour's model training in the page.
// Uses only the package's browser entry, "moba" (scripts/build-web.mjs bundles it from src/index.ts; web/tsconfig.json
// checks this file against its types in dist/). test/playground.test.ts drives the page through the ids below and
// reads the state of parts 1-2 in document.body.dataset.state and of parts 3 and 4 in their section's
// dataset.state ("running", "done", "stopped", "error").
import {
  type AttentionOutput,
  type Backend,
  type Document,
  type Model,
  type ModelBackend,
  type ModelFile,
  type TextTokenizer,
  type TrainOptions,
  AdamW,
  attendedKeys,
  byteTokenizer,
  checkConfig,
  cpuBackend,
  flashAttention,
  generateText,
  initModel,
  layerKinds,
  loadCheckpoint,
  loadModel,
  loadTokenizer,
  mobaAttention,
  Packer,
  parameterCount,
  plantTopics,
  randomInputs,
  referenceForward,
  relativeError,
  release,
  serializeCheckpoint,
  splitDocuments,
  startPosition,
  TRAIN_DEFAULTS,
  trainingStep,
  webgpuModelBackend,
} from "moba";

const Q_HEADS = 4;
const KV_HEADS = 2;
const HEAD_DIM = 64;
const SEED = 1;
/** Up to this many tokens the float64 reference runs too (it is dense and slow: O(tokens² · headDim) per head). */
const REFERENCE_TOKENS = 2048;

const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = byId<HTMLParagraphElement>("status");
const canvas = byId<HTMLCanvasElement>("heatmap");
const cell = byId<HTMLParagraphElement>("cell");
const headSelect = byId<HTMLSelectElement>("head");

const backendSelect = byId<HTMLSelectElement>("backend");

/**
 * Offers WebGPU where the browser has an adapter, and the CPU backend. The default is `moba train`'s "auto": WebGPU on a
 * hardware adapter; the CPU on a software one (SwiftShader), which is slower than the CPU backend, or without one.
 */
async function offerBackends(): Promise<void> {
  let adapter: GPUAdapter | null = null;
  let why = "this browser has no navigator.gpu";
  if ("gpu" in navigator) {
    adapter = await navigator.gpu.requestAdapter();
    why = "navigator.gpu found no adapter";
  }
  const info = adapter?.info;
  const name = info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "unknown adapter" : "";
  const software = info !== undefined && (info.isFallbackAdapter || /swiftshader|llvmpipe|lavapipe/i.test(name));
  const webgpu = new Option(adapter ? `WebGPU (${name})` : `WebGPU (${why})`, "webgpu");
  webgpu.disabled = !adapter;
  backendSelect.replaceChildren(webgpu, new Option("CPU (WebAssembly SIMD, this thread)", "cpu"));
  backendSelect.value = adapter && !software ? "webgpu" : "cpu";
  backendSelect.disabled = false;
  byId("backendNote").textContent = !adapter
    ? `No WebGPU: ${why}.`
    : software
      ? "This WebGPU adapter is a software one: the CPU backend is faster, so it is the default; choose WebGPU to run the WGSL kernels anyway."
      : "";
}
const backendReady = offerBackends();
/** The backend chosen, once the choices are known. */
async function chosenBackend(): Promise<Backend> {
  await backendReady;
  return backendSelect.value as Backend;
}

async function timed<T>(run: () => Promise<T>): Promise<[T, number]> {
  await run(); // compiles the shaders / warms up the CPU kernels
  const start = performance.now();
  const result = await run();
  return [result, performance.now() - start];
}

/** What the heatmap draws for one head: per query block i and key block j, how many queries chose j and their mean gate score. */
interface Gating {
  blocks: number;
  rows: number[]; // queries in each block
  chosen: Float64Array; // [blocks, blocks]
  score: Float64Array; // [blocks, blocks] mean over the block's queries of q · mean(K_j), j < i
}

let last: { q: Float32Array; k: Float32Array; routing: AttentionOutput["routing"]; tokens: number; blockSize: number; topK: number };
let gating: Gating;
let focus = { i: 0, j: 0 };

function gatingOf(head: number): Gating {
  const { q, k, routing, tokens, blockSize: B } = last;
  const blocks = Math.ceil(tokens / B);
  const width = routing.shape[2];
  const g = Math.floor(head / (Q_HEADS / KV_HEADS));
  const means = Array.from({ length: blocks }, (_, j) => {
    const mean = new Float64Array(HEAD_DIM);
    const end = Math.min((j + 1) * B, tokens);
    for (let t = j * B; t < end; t++) for (let d = 0; d < HEAD_DIM; d++) mean[d] += k[(t * KV_HEADS + g) * HEAD_DIM + d] / (end - j * B);
    return mean;
  });
  const rows: number[] = [];
  const chosen = new Float64Array(blocks * blocks);
  const score = new Float64Array(blocks * blocks);
  for (let i = 0; i < blocks; i++) {
    rows.push(Math.min(B, tokens - i * B));
    chosen[i * blocks + i] = rows[i];
    for (let t = i * B; t < i * B + rows[i]; t++) {
      const qt = (t * Q_HEADS + head) * HEAD_DIM;
      for (let r = 0; r < Math.min(width, i); r++) chosen[i * blocks + routing.data[(t * Q_HEADS + head) * width + r]]++;
      for (let j = 0; j < i; j++) {
        let dot = 0;
        for (let d = 0; d < HEAD_DIM; d++) dot += q[qt + d] * means[j][d];
        score[i * blocks + j] += dot / rows[i];
      }
    }
  }
  return { blocks, rows, chosen, score };
}

function draw(): void {
  const { blocks, rows, chosen } = gating;
  const size = Math.max(1, Math.floor(480 / blocks));
  canvas.width = canvas.height = size * blocks;
  const c = canvas.getContext("2d")!;
  c.fillStyle = "#ffffff";
  c.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < blocks; i++) {
    for (let j = 0; j <= i; j++) {
      const share = chosen[i * blocks + j] / rows[i];
      // white (never chosen, a light grey cell) to deep blue (every query of the block chose it); the own block darkest
      c.fillStyle = j === i ? "#0b2a5b" : share === 0 ? "#eef0f3" : `hsl(215 70% ${Math.round(92 - share * 55)}%)`;
      c.fillRect(j * size, i * size, size, size);
    }
  }
  // the described cell, outlined (hover or arrow keys)
  c.strokeStyle = "#f0a500";
  c.lineWidth = 2;
  c.strokeRect(focus.j * size + 1, focus.i * size + 1, size - 2, size - 2);
  canvas.dataset.blocks = String(blocks);
}

function describe(i: number, j: number): void {
  focus = { i, j };
  const { blocks, rows, chosen, score } = gating;
  const at = i * blocks + j;
  cell.textContent =
    j > i
      ? `query block ${i}, key block ${j}: in the future (causal mask)`
      : j === i
        ? `query block ${i}, its own block: always attended (causally)`
        : `query block ${i}, key block ${j}: chosen by ${chosen[at]} of ${rows[i]} queries; ` +
          `mean gate score q·mean(K) ${score[at].toFixed(2)} (the row's best past block: ${Math.max(
            ...score.subarray(i * blocks, i * blocks + i),
          ).toFixed(2)})`;
  draw();
}

function showHead(): void {
  gating = gatingOf(Number(headSelect.value));
  const { tokens, blockSize, topK } = last;
  const share = attendedKeys([0, tokens], blockSize, topK) / attendedKeys([0, tokens], blockSize, Infinity);
  byId("share").textContent = `MoBA attended ${(share * 100).toFixed(1)}% of the causal mask (${gating.blocks} blocks of ${blockSize}).`;
  describe(Math.min(focus.i, gating.blocks - 1), Math.min(focus.j, gating.blocks - 1));
}

async function run(tokens: number, blockSize: number, topK: number): Promise<void> {
  const backend = await chosenBackend();
  const { q, k, v } = randomInputs(SEED, tokens, Q_HEADS, KV_HEADS, HEAD_DIM);
  plantTopics({ tokens, qHeads: Q_HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM, blockSize, topK, seed: SEED }, q.data, k.data);
  const inputs = { q, k, v };
  status.textContent = `Running on ${backend}…`;
  const [moba, mobaMs] = await timed(() => mobaAttention(inputs, { blockSize, topK, backend }));
  const [, fullMs] = await timed(() => flashAttention(inputs, { backend }));
  const mobaKeys = attendedKeys([0, tokens], blockSize, topK);
  const fullKeys = attendedKeys([0, tokens], blockSize, Infinity);
  const row = (name: string, ms: number, keys: number) =>
    `<tr><td>${name}</td><td>${ms.toFixed(1)}</td><td>${(fullMs / ms).toFixed(2)}×</td><td>${(keys / tokens).toFixed(0)}</td></tr>`;
  byId("times").innerHTML = row("full", fullMs, fullKeys) + row("MoBA", mobaMs, mobaKeys);
  byId("ideal").textContent = `Ideal ratio (keys read by full / by MoBA): ${(fullKeys / mobaKeys).toFixed(2)}×`;

  const reference = byId<HTMLParagraphElement>("reference");
  delete reference.dataset.error;
  if (tokens <= REFERENCE_TOKENS) {
    status.textContent = "Checking against the float64 reference…";
    await new Promise((resolve) => setTimeout(resolve)); // let the page paint first
    const problem = { tokens, qHeads: Q_HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM, cuSeqlens: [0, tokens], blockSize, topK };
    const ref = referenceForward({ ...problem, scale: 1 / Math.sqrt(HEAD_DIM) }, q.data, k.data, v.data);
    const error = Math.max(relativeError(moba.out.data, ref.out), relativeError(moba.lse.data, ref.lse));
    reference.dataset.error = String(error);
    reference.className = error <= 1e-5 ? "ok" : "bad";
    reference.textContent =
      `MoBA vs the float64 reference: max norm-wise relative error (out, lse) ${error.toExponential(1)} ` +
      (error <= 1e-5 ? "✓ within 1e-5" : "✗ above 1e-5");
  } else {
    reference.className = "note";
    reference.textContent = `The float64 reference check runs up to ${REFERENCE_TOKENS} tokens.`;
  }
  last = { q: q.data, k: k.data, routing: moba.routing, tokens, blockSize, topK };
  showHead();
}

headSelect.innerHTML = Array.from({ length: Q_HEADS }, (_, h) => `<option value="${h}">${h}</option>`).join("");
headSelect.addEventListener("change", () => last && showHead());

canvas.addEventListener("mousemove", (event) => {
  if (!gating) return;
  const size = canvas.getBoundingClientRect().width / gating.blocks;
  const clamp = (x: number) => Math.min(gating.blocks - 1, Math.max(0, Math.floor(x / size)));
  describe(clamp(event.offsetY), clamp(event.offsetX));
});
canvas.addEventListener("keydown", (event) => {
  if (!gating) return;
  const step: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  if (!(event.key in step)) return;
  event.preventDefault();
  const [di, dj] = step[event.key];
  const clamp = (x: number) => Math.min(gating.blocks - 1, Math.max(0, x));
  describe(clamp(focus.i + di), clamp(focus.j + dj));
});

byId<HTMLFormElement>("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = (id: string) => Number(byId<HTMLInputElement>(id).value);
  const button = byId<HTMLButtonElement>("run");
  button.disabled = true;
  document.body.dataset.state = "running";
  run(value("tokens"), value("blockSize"), value("topK"))
    .then(() => {
      status.textContent = "Done.";
      document.body.dataset.state = "done";
    })
    .catch((error: unknown) => {
      status.textContent = `Error: ${error instanceof Error ? error.message : String(error)}`;
      document.body.dataset.state = "error";
    })
    .finally(() => (button.disabled = false));
});

// ---- 3. Generating text ----

/** A model ready to generate: its tokenizer (bytes for byte-level models) and the ids that end a generation. */
interface Generator {
  model: Model;
  tokenizer: TextTokenizer;
  stop: number[];
}

const modelSelect = byId<HTMLSelectElement>("model");
const genStatus = byId<HTMLParagraphElement>("genStatus");
const genSection = byId<HTMLElement>("generate-section");
/** The models by the model select's value: "bundled" (fetched when first chosen), "yours" (files), "trained" (part 4). */
const generators = new Map<string, Promise<Generator>>();

async function bundledModel(): Promise<Generator> {
  const response = await fetch("tour-model.safetensors");
  if (!response.ok) throw new Error(`tour-model.safetensors: HTTP ${response.status}`);
  const { model } = await loadCheckpoint(new Uint8Array(await response.arrayBuffer()), "tour-model.safetensors");
  return { model, tokenizer: byteTokenizer, stop: [] };
}

/** A `moba train` checkpoint (one .safetensors) or a Hugging Face directory's files (config.json among them). */
async function modelFromFiles(files: File[]): Promise<Generator> {
  const byName: Record<string, ModelFile> = {};
  for (const file of files) byName[file.name] = new Uint8Array(await file.arrayBuffer());
  if ("config.json" in byName) {
    const { model, tokenizer, eosTokenIds } = await loadModel(byName);
    if (!tokenizer) throw new Error("the model's files have no tokenizer.json (the prompt cannot be tokenized without it)");
    return { model, tokenizer, stop: eosTokenIds };
  }
  const checkpoints = files.filter((f) => f.name.endsWith(".safetensors"));
  if (checkpoints.length !== 1)
    throw new Error(
      `expected one checkpoint (.safetensors) or a Hugging Face directory's files (config.json, model.safetensors, …), got ${files.map((f) => f.name).join(", ")}`,
    );
  const name = checkpoints[0].name;
  const { model, tokenizer } = await loadCheckpoint(byName[name] as Uint8Array, name);
  return { model, tokenizer: tokenizer === undefined ? byteTokenizer : await loadTokenizer(tokenizer, `${name} (tokenizer)`), stop: [] };
}

/** Adds (or replaces) a model choice and selects it. */
function offerModel(value: string, label: string, generator: Promise<Generator>): void {
  generators.set(value, generator);
  const option = modelSelect.querySelector<HTMLOptionElement>(`option[value="${value}"]`) ?? modelSelect.appendChild(new Option());
  option.value = value;
  option.textContent = label;
  modelSelect.value = value;
}

async function useFiles(files: File[]): Promise<void> {
  if (files.length === 0) return;
  genStatus.textContent = `Loading ${files.map((f) => f.name).join(", ")}…`;
  const generator = modelFromFiles(files);
  try {
    const { model } = await generator;
    offerModel("yours", `yours: ${files.length === 1 ? files[0].name : `${files.length} files`}`, generator);
    genStatus.textContent = `Loaded your model: ${(parameterCount(model) / 1e6).toFixed(2)}M parameters, ${model.config.num_hidden_layers} layers.`;
    genSection.dataset.model = "yours";
  } catch (error) {
    genStatus.textContent = `Could not load the model: ${message(error)}`;
  }
}

/** The files dropped: files as they are, a folder's files (one level: an exported model directory). */
async function droppedFiles(items: DataTransferItemList): Promise<File[]> {
  // the entries are taken before the first await: the drop's items are gone after the event
  const entries = Array.from(items, (item) => item.webkitGetAsEntry()).filter((e) => e !== null);
  const fileOf = (entry: FileSystemEntry) => new Promise<File>((resolve, reject) => (entry as FileSystemFileEntry).file(resolve, reject));
  const files: File[] = [];
  for (const entry of entries) {
    if (entry.isFile) files.push(await fileOf(entry));
    if (!entry.isDirectory) continue;
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
      if (batch.length === 0) break;
      for (const e of batch) if (e.isFile) files.push(await fileOf(e));
    }
  }
  return files;
}

const drop = byId<HTMLDivElement>("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer) void droppedFiles(event.dataTransfer.items).then(useFiles);
});
byId<HTMLInputElement>("modelFiles").addEventListener("change", (event) => {
  void useFiles(Array.from((event.target as HTMLInputElement).files ?? []));
});

let generation: AbortController | null = null;
const genStop = byId<HTMLButtonElement>("generateStop");
genStop.addEventListener("click", () => generation?.abort());

byId<HTMLFormElement>("generate").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = (id: string) => Number(byId<HTMLInputElement>(id).value);
  const run = byId<HTMLButtonElement>("generateRun");
  const choice = modelSelect.value;
  if (!generators.has(choice)) generators.set(choice, bundledModel());
  const outPrompt = byId("outPrompt"),
    generated = byId("generated"),
    stats = byId("genStats");
  outPrompt.textContent = generated.textContent = stats.textContent = "";
  run.disabled = true;
  genStop.disabled = false;
  genSection.dataset.state = "running";
  generation = new AbortController();
  const signal = generation.signal;
  const generate = async () => {
    genStatus.textContent = choice === "bundled" ? "Loading the bundled model (1.5 MB, once)…" : "";
    const { model, tokenizer, stop } = await generators.get(choice)!;
    const backend = await chosenBackend();
    genStatus.textContent = `Generating on ${backend}…`;
    const started = performance.now();
    let first = 0; // when the first token came: after the prompt's forward (prefill)
    const o = {
      prompt: byId<HTMLTextAreaElement>("prompt").value,
      tokens: value("genTokens"),
      temperature: value("temperature"),
      topP: value("topP"),
      seed: value("genSeed"),
      backend,
      stop,
      signal,
    };
    return generateText(
      model,
      o,
      (text, tokens) => {
        if (tokens === 0) {
          first = performance.now();
          outPrompt.textContent = text;
          return;
        }
        generated.textContent += text;
        const seconds = (performance.now() - first) / 1000;
        stats.textContent =
          `${tokens} tokens; first after ${(first - started).toFixed(0)} ms (the prompt's forward), then ` +
          `${tokens > 1 ? ((tokens - 1) / seconds).toFixed(1) : "…"} tokens/s`;
      },
      tokenizer,
    );
  };
  generate()
    .then(({ tokens }) => {
      genStatus.textContent = signal.aborted ? `Stopped after ${tokens} tokens.` : `Done: ${tokens} tokens.`;
      genSection.dataset.state = signal.aborted ? "stopped" : "done";
    })
    .catch((error: unknown) => {
      genStatus.textContent = `Error: ${message(error)}`;
      genSection.dataset.state = "error";
      if (choice === "bundled") generators.delete(choice); // a failed fetch is tried again next time
    })
    .finally(() => {
      run.disabled = false;
      genStop.disabled = true;
    });
});

// ---- 4. Training in the page ----

const trainSection = byId<HTMLElement>("train-section");
const trainStatus = byId<HTMLParagraphElement>("trainStatus");
const lossCanvas = byId<HTMLCanvasElement>("loss");
const trainStop = byId<HTMLButtonElement>("trainStop");
const download = byId<HTMLButtonElement>("download");
let stopTraining = false;
trainStop.addEventListener("click", () => (stopTraining = true));
/** The last run: its model (weights on the host once it ends) and the loss of each step. */
let lastRun: { model: Model; losses: number[] } | null = null;
let documents: Promise<Document[]> | null = null;

/** Part 4's text (web/dist/sotu.json, cut by scripts/build-web.mjs), as the documents `moba train --data` makes of files. */
async function trainingDocuments(): Promise<Document[]> {
  const response = await fetch("sotu.json");
  if (!response.ok) throw new Error(`sotu.json: HTTP ${response.status}`);
  const docs = (await response.json()) as { name: string; text: string }[];
  return docs.map(({ name, text }) => ({ name, bytes: new TextEncoder().encode(text) }));
}

/** The loss curve: step on x (0 to the run's steps), nats per byte on y (0 to the highest loss, at least 6, rounded up). */
function drawLoss(losses: number[], steps: number): void {
  const c = lossCanvas.getContext("2d")!;
  const { width, height } = lossCanvas;
  const [left, right, top, bottom] = [44, 12, 12, 30];
  const highest = Math.ceil(Math.max(6, ...losses.filter(Number.isFinite)));
  const x = (step: number) => left + ((width - left - right) * step) / Math.max(1, steps);
  const y = (loss: number) => top + (height - top - bottom) * (1 - loss / highest);
  c.clearRect(0, 0, width, height);
  c.font = "12px system-ui, sans-serif";
  c.fillStyle = "#555";
  c.strokeStyle = "#e3e6ea";
  c.lineWidth = 1;
  c.textAlign = "right";
  c.textBaseline = "middle";
  for (let l = 0; l <= highest; l++) {
    c.beginPath();
    c.moveTo(left, y(l));
    c.lineTo(width - right, y(l));
    c.stroke();
    c.fillText(String(l), left - 6, y(l));
  }
  c.textAlign = "center";
  c.textBaseline = "top";
  for (let i = 0; i <= 5; i++) {
    const step = Math.round((steps * i) / 5);
    c.fillText(String(step), x(step), height - bottom + 6);
  }
  c.save();
  c.translate(12, (top + height - bottom) / 2);
  c.rotate(-Math.PI / 2);
  c.fillText("loss (nats / byte)", 0, -6);
  c.restore();
  c.strokeStyle = "#1f5fbf";
  c.lineWidth = 2;
  c.beginPath();
  losses.forEach((loss, step) => (step === 0 ? c.moveTo(x(step + 1), y(loss)) : c.lineTo(x(step + 1), y(loss))));
  c.stroke();
  const last = losses.at(-1);
  lossCanvas.setAttribute(
    "aria-label",
    last === undefined
      ? "Training loss by step (none yet)"
      : `Training loss by step: ${losses.length} of ${steps} steps, the last ${last.toFixed(3)}`,
  );
  lossCanvas.dataset.losses = JSON.stringify(losses);
}

async function train(steps: number, seed: number): Promise<void> {
  const name = await chosenBackend();
  // as moba train: fresh tensors are not filled with NaN first (the tests' poison), one dispatch fewer each
  const backend: ModelBackend = name === "webgpu" ? await webgpuModelBackend("f32", false) : cpuBackend;
  documents ??= trainingDocuments();
  const docs = await documents.catch((error: unknown) => {
    documents = null;
    throw error;
  });
  const o: TrainOptions = { ...TRAIN_DEFAULTS, steps, seed };
  const config = checkConfig(o.model);
  const model = initModel(config, seed);
  const optimizer = new AdamW(model, backend);
  const packer = new Packer(splitDocuments(docs).train, o.contextLength, startPosition(seed));
  const kinds = layerKinds(config);
  const losses: number[] = [];
  lastRun = { model, losses };
  const stats = byId("trainStats");
  const started = performance.now();
  trainStatus.textContent = `Training on ${name}…`;
  try {
    for (let step = 0; step < steps && !stopTraining; step++) {
      const t0 = performance.now();
      const { loss, gradNorm, lr } = await trainingStep(model, backend, optimizer, [packer.next(o.batchRows)], kinds, step, o);
      if (!Number.isFinite(gradNorm)) throw new Error(`the run diverged at step ${step + 1} (gradient norm ${gradNorm})`);
      losses.push(loss);
      drawLoss(losses, steps);
      const tokens = o.batchRows * o.contextLength;
      stats.textContent =
        `step ${step + 1} / ${steps}: loss ${loss.toFixed(3)} nats/byte, learning rate ${lr.toExponential(2)}, ` +
        `${(tokens / ((performance.now() - t0) / 1000)).toFixed(0)} tokens/s, ${((performance.now() - started) / 1000).toFixed(0)} s`;
      // a frame between steps: the curve is painted and the Stop button heard (at most 100 ms: a hidden tab has no frames)
      await new Promise((resolve) => (requestAnimationFrame(resolve), setTimeout(resolve, 100)));
    }
  } finally {
    optimizer.free();
    await release(model); // the weights back on the host: the checkpoint and part 3 read them there
  }
}

byId<HTMLFormElement>("train").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = (id: string) => Number(byId<HTMLInputElement>(id).value);
  const start = byId<HTMLButtonElement>("trainRun");
  start.disabled = download.disabled = true;
  trainStop.disabled = false;
  stopTraining = false;
  trainSection.dataset.state = "running";
  drawLoss([], value("trainSteps"));
  train(value("trainSteps"), value("trainSeed"))
    .then(() => {
      const { model, losses } = lastRun!;
      trainStatus.textContent =
        losses.length === 0
          ? "Stopped before the first step."
          : `${stopTraining ? "Stopped" : "Done"} after ${losses.length} steps: loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}.`;
      trainSection.dataset.state = stopTraining ? "stopped" : "done";
      const generator = Promise.resolve({ model, tokenizer: byteTokenizer, stop: [] });
      if (losses.length > 0) offerModel("trained", `trained here (${losses.length} steps)`, generator);
      download.disabled = losses.length === 0;
    })
    .catch((error: unknown) => {
      trainStatus.textContent = `Error: ${message(error)}`;
      trainSection.dataset.state = "error";
    })
    .finally(() => {
      start.disabled = false;
      trainStop.disabled = true;
    });
});

download.addEventListener("click", () => {
  if (!lastRun) return;
  const { model, losses } = lastRun;
  void serializeCheckpoint(model, { state: { step: losses.length } }, "moba-playground.safetensors").then(
    (bytes) => {
      const link = document.createElement("a");
      // the bytes are in a plain ArrayBuffer (serializeSafetensors allocates one); the declared type allows a shared one
      link.href = URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }));
      link.download = `moba-playground-${losses.length}-steps.safetensors`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    },
    (error: unknown) => (trainStatus.textContent = `Could not write the checkpoint: ${message(error)}`),
  );
});

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
drawLoss([], 150);
