// The playground (web/index.html): MoBA against full attention on random inputs, the blocks a trained model's gate
// chose in each layer, a model generating text with MoBA decoding, and the tour's model training in the page.
// Uses only the package's browser entry, "moba" (scripts/build-web.mjs bundles it from src/index.ts; web/tsconfig.json
// checks this file against its types in dist/). test/playground.test.ts drives the page through the ids below and
// reads the state of part 1 in document.body.dataset.state and of parts 2-4 in their section's dataset.state
// ("running", "done", "stopped", "error").
import {
  type Backend,
  type Document,
  type Model,
  type ModelBackend,
  type ModelFile,
  type TextTokenizer,
  type TrainOptions,
  AdamW,
  attendedKeys,
  blockGating,
  type BlockGating,
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
  modelGating,
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
  recordTrainingStep,
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

// ---- The model of parts 2 and 3 ----

/** A model ready to generate: its tokenizer (bytes for byte-level models) and the ids that end a generation. */
interface Generator {
  model: Model;
  tokenizer: TextTokenizer;
  stop: number[];
}

const modelSelect = byId<HTMLSelectElement>("model");
const modelStatus = byId<HTMLParagraphElement>("modelStatus");
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

/** The model chosen; the bundled one is fetched when first used (a failed fetch is tried again the next time). */
async function chosenModel(): Promise<Generator> {
  const choice = modelSelect.value;
  if (!generators.has(choice)) generators.set(choice, bundledModel());
  try {
    return await generators.get(choice)!;
  } catch (error) {
    if (choice === "bundled") generators.delete(choice);
    throw error;
  }
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
  modelStatus.textContent = `Loading ${files.map((f) => f.name).join(", ")}…`;
  const generator = modelFromFiles(files);
  try {
    const { model } = await generator;
    offerModel("yours", `yours: ${files.length === 1 ? files[0].name : `${files.length} files`}`, generator);
    modelStatus.textContent = `Loaded your model: ${(parameterCount(model) / 1e6).toFixed(2)}M parameters, ${model.config.num_hidden_layers} layers.`;
    drop.dataset.model = "yours";
  } catch (error) {
    modelStatus.textContent = `Could not load the model: ${message(error)}`;
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

// ---- 1. MoBA vs full attention ----

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
  // part 2 shows what the gate made of the planted topics (a picture with a known answer: block i chooses ⌊i/2⌋)
  const gating = blockGating(inputs, { blockSize, topK }, moba.routing);
  offerViews([["planted", { name: "part 1's input", gating, tokens, blockSize, topK }]]);
}

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
      status.textContent = `Error: ${message(error)}`;
      document.body.dataset.state = "error";
    })
    .finally(() => (button.disabled = false));
});

// ---- 2. The gating, visible ----

/** One heatmap's worth: a layer's gate over a sequence, or part 1's; `text` gives a block's text where there is one. */
interface View {
  name: string;
  gating: BlockGating;
  tokens: number;
  blockSize: number;
  topK: number;
  text?: (block: number) => string;
}

const layerSelect = byId<HTMLSelectElement>("layer");
const headSelect = byId<HTMLSelectElement>("head");
const canvas = byId<HTMLCanvasElement>("heatmap");
const cell = byId<HTMLParagraphElement>("cell");
/** By the layer select's value: the model's MoBA layers ("layer 0", …) from its last run, then "planted" (part 1's input). */
const views = new Map<string, View>();
let view: View | null = null;
let focus = { i: 0, j: 0 };

/** Replaces the model's views, or part 1's ("planted"), with `added` and shows the first. */
function offerViews(added: [string, View][]): void {
  const planted = added[0][0] === "planted";
  for (const key of [...views.keys()]) if ((key === "planted") === planted) views.delete(key);
  for (const [key, v] of added) views.set(key, v);
  const keys = [...views.keys()].sort((a, b) => Number(a === "planted") - Number(b === "planted"));
  layerSelect.replaceChildren(...keys.map((key) => new Option(key === "planted" ? views.get(key)!.name : key.replace("layer ", ""), key)));
  layerSelect.value = added[0][0];
  layerSelect.disabled = headSelect.disabled = false;
  showView();
}

function showView(): void {
  view = views.get(layerSelect.value)!;
  const { gating, tokens, blockSize, topK } = view;
  if (headSelect.options.length !== gating.heads.length) {
    const head = Math.min(Number(headSelect.value) || 0, gating.heads.length - 1);
    headSelect.replaceChildren(...gating.heads.map((_, h) => new Option(String(h), String(h))));
    headSelect.value = String(head);
  }
  const share = attendedKeys([0, tokens], blockSize, topK) / attendedKeys([0, tokens], blockSize, Infinity);
  byId("share").textContent =
    `MoBA attended ${(share * 100).toFixed(1)}% of the causal mask (${gating.blocks} blocks of ${blockSize}, top-${topK}).`;
  describe(Math.min(focus.i, gating.blocks - 1), Math.min(focus.j, gating.blocks - 1));
}

function draw(): void {
  const { blocks, rows, heads } = view!.gating;
  const { chosen } = heads[Number(headSelect.value)];
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
  canvas.setAttribute("aria-label", `Heatmap of the key blocks each query block chose: ${view!.name}, query head ${headSelect.value}`);
  canvas.dataset.blocks = String(blocks);
  canvas.dataset.chosen = JSON.stringify(Array.from(chosen));
}

function describe(i: number, j: number): void {
  focus = { i, j };
  const { gating, text } = view!;
  const { blocks, rows } = gating;
  const { chosen, score } = gating.heads[Number(headSelect.value)];
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
  byId("cellText").textContent = text ? `query block ${i}: ${JSON.stringify(text(i))}\nkey block   ${j}: ${JSON.stringify(text(j))}` : "";
  draw();
}

layerSelect.addEventListener("change", showView);
headSelect.addEventListener("change", showView);
canvas.addEventListener("mousemove", (event) => {
  if (!view) return;
  const blocks = view.gating.blocks;
  const size = canvas.getBoundingClientRect().width / blocks;
  const clamp = (x: number) => Math.min(blocks - 1, Math.max(0, Math.floor(x / size)));
  describe(clamp(event.offsetY), clamp(event.offsetX));
});
canvas.addEventListener("keydown", (event) => {
  if (!view) return;
  const step: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  if (!(event.key in step)) return;
  event.preventDefault();
  const [di, dj] = step[event.key];
  const clamp = (x: number) => Math.min(view!.gating.blocks - 1, Math.max(0, x));
  describe(clamp(focus.i + di), clamp(focus.j + dj));
});

const gatingSection = byId<HTMLElement>("gating-section");
const gatingStatus = byId<HTMLParagraphElement>("gatingStatus");

/** Runs the chosen model over `text` on the chosen backend and offers its MoBA layers' gates; returns what it did, in words. */
async function runModel(text: string): Promise<string> {
  const label = modelSelect.selectedOptions[0].textContent;
  gatingStatus.textContent = `Loading ${label}…`;
  const { model, tokenizer } = await chosenModel();
  const name = await chosenBackend();
  const backend: ModelBackend = name === "webgpu" ? await webgpuModelBackend("f32") : cpuBackend;
  const tokens = tokenizer.encode(text);
  gatingStatus.textContent = `Running ${label} over ${tokens.length} tokens on ${name}…`;
  const started = performance.now();
  const layers = await modelGating(model, tokens, backend);
  const ms = performance.now() - started;
  const { moba_chunk_size: B, moba_topk: K, num_hidden_layers: L } = model.config;
  if (layers.length === 0) throw new Error(`${label} has no MoBA layer: all ${L} layers are full attention`);
  const blockText = (j: number) => tokenizer.decode(tokens.subarray(j * B, (j + 1) * B));
  offerViews(
    layers.map((gating) => {
      const name = `layer ${gating.layer}`;
      return [name, { name, gating, tokens: tokens.length, blockSize: B, topK: K, text: blockText }];
    }),
  );
  const blocks = layers[0].blocks;
  const full = L - layers.length;
  return (
    `${label}: ${tokens.length} tokens, ${blocks} blocks of ${B}, top-${K}; ran in ${ms.toFixed(0)} ms on ${name}. ` +
    (blocks <= K
      ? `Too short for the gate to choose: a query of block i has i past blocks and attends them all while i < ${K}; give more than ${K * B} tokens.`
      : `The gate chooses ${K - 1} of the past blocks for the queries of blocks ${K} to ${blocks - 1}; those of blocks 0 to ${K - 1} attend every past block.`) +
    (full > 0 ? ` ${full} of its ${L} layers are full attention (no gate).` : "")
  );
}

byId<HTMLFormElement>("gating").addEventListener("submit", (event) => {
  event.preventDefault();
  const button = byId<HTMLButtonElement>("gatingRun");
  button.disabled = true;
  gatingSection.dataset.state = "running";
  runModel(byId<HTMLTextAreaElement>("gatingText").value)
    .then((done) => {
      gatingStatus.textContent = done;
      gatingSection.dataset.state = "done";
    })
    .catch((error: unknown) => {
      gatingStatus.textContent = `Error: ${message(error)}`;
      gatingSection.dataset.state = "error";
    })
    .finally(() => (button.disabled = false));
});

// ---- 3. Generating text ----

const genStatus = byId<HTMLParagraphElement>("genStatus");
const genSection = byId<HTMLElement>("generate-section");
let generation: AbortController | null = null;
const genStop = byId<HTMLButtonElement>("generateStop");
genStop.addEventListener("click", () => generation?.abort());

byId<HTMLFormElement>("generate").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = (id: string) => Number(byId<HTMLInputElement>(id).value);
  const run = byId<HTMLButtonElement>("generateRun");
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
    genStatus.textContent = `Loading ${modelSelect.selectedOptions[0].textContent}…`;
    const { model, tokenizer, stop } = await chosenModel();
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
      const { lr, result } = await recordTrainingStep(model, backend, optimizer, [packer.next(o.batchRows)], kinds, step, o);
      const { loss, gradNorm } = await result;
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
