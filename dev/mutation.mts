// What the tests protect: each mutation is one small plausible bug put into src/ (an exact text
// replacement that must match once), the named test files run against it, and the file put back
// (also after a failure or Ctrl-C). A mutation is caught when those tests fail. Prints each
// result and caught/total; docs/testing.md records the last run.
//
//   node --import tsx dev/mutation.mts [word ...]   (only the mutations whose name has a word)
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

interface Mutation {
  name: string;
  file: string; // under src/
  find: string;
  replace: string;
  tests: string[]; // under test/
}

const MUTATIONS: Mutation[] = [
  // the five that passed the whole suite before the optimizer and training tests (issue 23)
  {
    name: "AdamW without bias correction",
    file: "model/adamw.ts",
    tests: ["optimizer"],
    find: "c1: 1 - o.beta1 ** step,\n      c2: 1 - o.beta2 ** step,",
    replace: "c1: 1,\n      c2: 1,",
  },
  {
    name: "AdamW's first moment with beta2",
    file: "model/adamw.ts",
    tests: ["optimizer"],
    find: "beta1: o.beta1,\n      beta2",
    replace: "beta1: o.beta2,\n      beta2",
  },
  {
    name: "gradient clipping dropped",
    file: "model/adamw.ts",
    tests: ["optimizer"],
    find: "const clip = norm > o.gradClip ? o.gradClip / norm : 1;",
    replace: "const clip = 1;",
  },
  {
    name: "warmup off by one (0 at step 0)",
    file: "model/adamw.ts",
    tests: ["optimizer"],
    find: "(lr * (step + 1)) / warmupSteps",
    replace: "(lr * step) / warmupSteps",
  },
  {
    name: "resume does not restore the passkey RNG",
    file: "run/train.ts",
    tests: ["train"],
    find: "rng = new Rng(state.rng);",
    replace: "",
  },
  // the two that one test caught: gate ties (CPU and WGSL), the backward's routing count (only the random run)
  {
    name: "CPU gate: ties to the later block",
    file: "attention/blocks.ts",
    tests: ["properties"],
    find: "!(score > scores[count - 1])",
    replace: "!(score >= scores[count - 1])",
  },
  {
    name: "backward: routed blocks counted from the batch start, not the sequence's",
    file: "attention/blocks.ts",
    tests: ["properties"],
    find: "n = Math.min(width, Math.floor((t - cuSeqlens[b]) / B))",
    replace: "n = Math.min(width, Math.floor(t / B))",
  },
  {
    name: "WGSL gate: ties to the later block",
    file: "webgpu/attention/gate.wgsl.ts",
    tests: ["properties"],
    find: "!(score > best[count - 1u])",
    replace: "!(score >= best[count - 1u])",
  },
  // more of the optimizer and the training loop
  {
    name: "weight decay on norms and embeddings too",
    file: "model/adamw.ts",
    tests: ["optimizer"],
    find: "decayFactor: p.decay ? 1 - lr * o.weightDecay : 1",
    replace: "decayFactor: 1 - lr * o.weightDecay",
  },
  {
    name: "weight decay not scaled by the learning rate",
    file: "model/adamw.ts",
    tests: ["optimizer"],
    find: "1 - lr * o.weightDecay",
    replace: "1 - o.weightDecay",
  },
  {
    name: "a resumed AdamW restarts its step count",
    file: "model/adamw.ts",
    tests: ["optimizer"],
    find: "this.step = moments.step;",
    replace: "this.step = 0;",
  },
  {
    name: "the cosine ends one step late",
    file: "model/adamw.ts",
    tests: ["optimizer"],
    find: "(steps - warmupSteps - 1)",
    replace: "(steps - warmupSteps)",
  },
  {
    name: "accumulation keeps only the last micro-batch",
    file: "run/train.ts",
    tests: ["train"],
    find: "await zeroGradients(model, backend);\n        for (const batch of batches) {",
    replace: "for (const batch of batches) {\n          await zeroGradients(model, backend);",
  },
  {
    name: "loss divided by every token, masked ones too",
    file: "run/train.ts",
    tests: ["train"],
    find: "batches.reduce((n, b) => n + b.weights.reduce((a, w) => a + w, 0), 0)",
    replace: "batches.reduce((n, b) => n + b.tokens.length, 0)",
  },
  {
    name: "stages ignored by the training loop",
    file: "run/train.ts",
    tests: ["train"],
    find: "const kinds = kindsAt(o, step);",
    replace: "const kinds = kindsAt(o, 0);",
  },
  {
    name: "training ignores gradClip",
    file: "run/train.ts",
    tests: ["train"],
    find: "gradClip: o.gradClip };",
    replace: "gradClip: TRAIN_DEFAULTS.gradClip };",
  },
  {
    name: "SFT masks ignored by packing",
    file: "model/packing.ts",
    tests: ["train"],
    find: "(doc.lossMask === undefined || doc.lossMask[offset + i] === 1)",
    replace: "true",
  },
  {
    name: "rotary positions run across packed sequences",
    file: "model/llama.ts",
    tests: ["model"],
    find: "cos.set(table.cos.subarray(0, n), at);",
    replace: "cos.set(table.cos.subarray(at, at + n), at);",
  },
  {
    name: "prefill: every MLP chunk reads the first rows",
    file: "model/llama.ts",
    tests: ["model"],
    find: "const part = rowsOf(mid, from, n, H);",
    replace: "const part = rowsOf(mid, 0, n, H);",
  },
  // and a few in the attention, for comparison
  {
    name: "CPU forward (scalar tiles): the own block hides the query's own key",
    file: "cpu/attention.ts",
    tests: ["simd", "properties"],
    find: "causal ? c0 + list[e] + 1 : c1",
    replace: "causal ? c0 + list[e] : c1",
  },
  {
    name: "CPU backward: dv without the probability",
    file: "cpu/attention.ts",
    tests: ["simd", "properties"],
    find: "dvBlock[local + d] += pr * a.dout[qRow + d];",
    replace: "dvBlock[local + d] += a.dout[qRow + d];",
  },
  // decoding on the GPU (issue 15) against decoding on the CPU
  {
    name: "GPU decode gate: the lowest-scoring blocks win",
    file: "webgpu/decode.wgsl.ts",
    tests: ["decode"],
    find: "(b1 == NONE || s2 > s1 ||",
    replace: "(b1 == NONE || s2 < s1 ||",
  },
  {
    name: "GPU decode gate: ties to the later block",
    file: "webgpu/decode.wgsl.ts",
    tests: ["decode"],
    find: "(s2 == s1 && b2 < b1)",
    replace: "(s2 == s1 && b2 > b1)",
  },
  {
    name: "GPU decode: block key sums skip the block's first key",
    file: "webgpu/decode.wgsl.ts",
    tests: ["decode"],
    find: "for (var t = b * ${c.blockSize}u; t <",
    replace: "for (var t = b * ${c.blockSize}u + 1u; t <",
  },
  {
    name: "GPU decode: the combine reads only the first chunk of keys",
    file: "webgpu/decode.wgsl.ts",
    tests: ["decode"],
    find: "let chunks = (keys(step[1]).z + ${CHUNK - 1}u) / ${CHUNK}u;",
    replace: "let chunks = min(1u, (keys(step[1]).z + ${CHUNK - 1}u) / ${CHUNK}u);", // step stays bound
  },
];

const root = fileURLToPath(new URL("..", import.meta.url));
const words = process.argv.slice(2);
const chosen = MUTATIONS.filter((m) => words.length === 0 || words.some((w) => m.name.includes(w)));

/** The file's original text while a mutation is applied (put back on exit, Ctrl-C included), and the test run. */
let applied: { path: string; text: string } | null = null;
let running: ChildProcess | null = null;
const restore = () => {
  if (applied) writeFileSync(applied.path, applied.text);
  applied = null;
};
process.on("exit", restore);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    restore();
    running?.kill();
    process.exit(130);
  });
}

/** Runs the test files; returns the failing tests' names (none: the mutation survived) and the exit code. */
function runTests(tests: string[]): Promise<{ failed: string[]; code: number | null }> {
  const files = tests.map((t) => `test/${t}.test.ts`);
  return new Promise((resolve) => {
    const args = ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=tap", ...files];
    const child = (running = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "ignore"] }));
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.on("exit", (code) => resolve({ failed: [...out.matchAll(/^not ok \d+ - (.*)$/gm)].map((x) => x[1]), code }));
  });
}

/** Where the mutation's text is in its file; every mutation is checked before any runs. */
function locate(m: Mutation): { path: string; text: string; at: number } {
  const path = `${root}src/${m.file}`;
  const text = readFileSync(path, "utf8");
  const at = text.indexOf(m.find);
  if (at < 0 || text.indexOf(m.find, at + 1) >= 0) {
    throw new Error(`${m.name}: "${m.find}" must occur exactly once in src/${m.file} (the source changed: update the mutation)`);
  }
  return { path, text, at };
}
chosen.forEach(locate);

let caught = 0;
const started = performance.now();
for (const m of chosen) {
  const { path, text, at } = locate(m);
  applied = { path, text };
  writeFileSync(path, text.slice(0, at) + m.replace + text.slice(at + m.find.length));
  const t0 = performance.now();
  const { failed, code } = await runTests(m.tests);
  restore();
  const killed = code !== 0 || failed.length > 0;
  if (killed) caught++;
  const seconds = ((performance.now() - t0) / 1000).toFixed(0);
  console.log(
    `${killed ? "caught" : "MISSED"}  ${m.name} (src/${m.file}; test/${m.tests.join(", test/")}: ${failed.length} failing, ${seconds} s)`,
  );
  for (const name of failed) console.log(`          ${name.slice(0, 130)}`);
}
console.log(`${caught}/${chosen.length} mutations caught (${((performance.now() - started) / 60000).toFixed(1)} min)`);
