// The Hugging Face commands end to end: moba eval --model against transformers' logits, generate
// --model, train --init (continual training keeps the tokenizer) and export of its checkpoint,
// and their one-line errors.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { parseSafetensors, toFloat32, toIntegers } from "../src/io/safetensors.js";
import { loadCheckpoint } from "../src/model/checkpoint.js";
import { loadModel } from "../src/model/pretrained.js";

const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
const FIXTURES = fileURLToPath(new URL("fixtures/hf/", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "moba-hf-cli-"));

function moba(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", main, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("moba eval --model --json: the loss of a multilingual text equals the one from transformers' logits (1e-4)", () => {
  const model = join(FIXTURES, "gqa-untied-f32");
  const { text } = JSON.parse(readFileSync(join(FIXTURES, "tokenizer-expected.json"), "utf8")) as { text: string };
  const file = parseSafetensors(readFileSync(join(model, "expected.safetensors")));
  const ids = toIntegers(file.tensors.get("input_ids.2")!, "ids"),
    logits = toFloat32(file.tensors.get("logits.2")!, "logits");
  const V = logits.length / ids.length;
  let sum = 0; // transformers' cross-entropy of each next token of the first 40
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = logits.subarray(t * V, (t + 1) * V),
      max = Math.max(...row);
    sum += max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0)) - row[ids[t + 1]];
  }
  writeFileSync(join(dir, "text.txt"), text);
  const r = moba(
    "eval",
    "--model",
    model,
    "--text",
    join(dir, "text.txt"),
    "--max-tokens",
    String(ids.length),
    "--json",
    "--context-length",
    "16",
    "--backend",
    "cpu",
  );
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { loss_nats_per_token: number; tokens: number; windows: number };
  assert.equal(out.tokens, ids.length);
  assert.equal(out.windows, Math.ceil((ids.length - 1) / 16));
  // windows of 16 from position 0 are not transformers' one 40-token pass: same within the first window only
  const whole = moba(
    "eval",
    "--model",
    model,
    "--text",
    join(dir, "text.txt"),
    "--max-tokens",
    String(ids.length),
    "--json",
    "--backend",
    "cpu",
  );
  const expected = sum / (ids.length - 1);
  const loss = (JSON.parse(whole.stdout) as { loss_nats_per_token: number }).loss_nats_per_token;
  assert.ok(Math.abs(loss - expected) / expected <= 1e-4, `${loss} vs transformers ${expected}`);
  assert.notEqual(out.loss_nats_per_token, loss);
});

test("moba train --init continues a Hugging Face model with its tokenizer and attention; export writes it back whole", async () => {
  const data = join(dir, "data.txt");
  writeFileSync(data, readFileSync(join(FIXTURES, "tokenizer-expected.json"), "utf8").repeat(20));
  // the fixture with a tokenizer_config.json of its own (transformers writes one beside tokenizer.json)
  const init = join(dir, "init");
  cpSync(join(FIXTURES, "tied-f16-v4"), init, { recursive: true });
  const tokenizerConfig = JSON.stringify({
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: "<s>",
    eos_token: "</s>",
    model_max_length: 128,
  });
  writeFileSync(join(init, "tokenizer_config.json"), tokenizerConfig);
  const out = join(dir, "run");
  const args = ["train", "--init", init, "--data", data, "--context-length", "32", "--batch-rows", "1", "--attention", "hybrid-last-1"];
  const r = moba(...args, "--steps", "1", "--backend", "cpu", "--out", out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /2 layers \[moba, full\], block 8 \/ top-2/);
  assert.match(r.stderr, /validation loss before training: [\d.]+ \(the init model with \[moba, full\]\)/);
  // resumed: the checkpoint it writes keeps what the first one had
  const resumed = moba(...args, "--steps", "2", "--backend", "cpu", "--out", out, "--resume");
  assert.equal(resumed.status, 0, resumed.stderr);
  const saved = await loadCheckpoint(join(out, "checkpoint.safetensors"));
  const start = await loadModel(join(FIXTURES, "tied-f16-v4"));
  // started from the pretrained weights (AdamW moved them a little), not from random ones
  const embed = saved.model.byName.get("model.embed_tokens.weight")!.data,
    before = start.model.byName.get("model.embed_tokens.weight")!.data;
  assert.ok(embed.some((x, i) => x !== before[i]) && embed.every((x, i) => Math.abs(x - before[i]) < 0.05));
  // its checkpoint evaluates on tokens: the corpus tokenized with the tokenizer it keeps
  const v = moba(
    "eval",
    "--checkpoint",
    join(out, "checkpoint.safetensors"),
    "--data",
    data,
    "--context-length",
    "32",
    "--rows",
    "2",
    "--backend",
    "cpu",
  );
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stdout, /nats\/token, perplexity [\d.]+ over 2 sequences of 32 tokens/);
  const e = moba("export", "--checkpoint", join(out, "checkpoint.safetensors"), "--out", join(dir, "exported"));
  assert.equal(e.status, 0, e.stderr);
  assert.equal(
    readFileSync(join(dir, "exported", "tokenizer.json"), "utf8"),
    readFileSync(join(FIXTURES, "tied-f16-v4", "tokenizer.json"), "utf8"),
  );
  // the special token ids and tokenizer_config.json of the model it started from
  const exported = (name: string) => JSON.parse(readFileSync(join(dir, "exported", name), "utf8")) as Record<string, unknown>;
  for (const name of ["config.json", "generation_config.json"])
    assert.deepEqual([exported(name).bos_token_id, exported(name).eos_token_id], [0, 1], name);
  assert.equal(readFileSync(join(dir, "exported", "tokenizer_config.json"), "utf8"), tokenizerConfig);
  const back = await loadModel(join(dir, "exported"));
  assert.deepEqual(back.model.config.layer_attention, ["moba", "full"]);
  assert.deepEqual(back.eosTokenIds, [1]);
  assert.deepEqual(
    back.model.params.map((p) => p.data),
    saved.model.params.map((p) => p.data),
  );
  const weights = parseSafetensors(readFileSync(join(dir, "exported", "model.safetensors")));
  assert.deepEqual(weights.metadata, { format: "pt" });
  assert.ok([...weights.tensors.keys()].every((name) => !name.startsWith("optimizer.")));
});

test("moba generate --model continues a prompt with the model's tokenizer, greedily the same each time", () => {
  const args = [
    "generate",
    "--model",
    join(FIXTURES, "llama3-bf16-sharded"),
    "--prompt",
    "Straße",
    "--tokens",
    "6",
    "--temperature",
    "0",
    "--backend",
    "cpu",
  ];
  const [a, b] = [moba(...args), moba(...args)];
  assert.equal(a.status, 0, a.stderr);
  assert.match(a.stdout, /^Straße[^]*\n$/, "stdout: the prompt, the generated text and a newline");
  assert.match(a.stderr, /\(6 tokens in /);
  assert.equal(a.stdout, b.stdout);
});

test("the Hugging Face commands fail with one line naming the argument", () => {
  const text = join(dir, "short.txt");
  writeFileSync(text, "Hello, world");
  for (const [args, pattern] of [
    [["eval", "--model", join(FIXTURES, "gqa-untied-f32")], /--text: expected a text file to score, got nothing/],
    [
      ["eval", "--model", join(FIXTURES, "gqa-untied-f32"), "--text", text, "--attention", "hybrid-last-9"],
      /--attention: expected "moba", "full" or "hybrid-last-N" with N from 0 to 2, got "hybrid-last-9"/,
    ],
    [["export", "--checkpoint", join(dir, "none.safetensors"), "--out", join(dir, "x")], /none\.safetensors: cannot read \(ENOENT\)/],
  ] as const) {
    const r = moba(...args);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});
