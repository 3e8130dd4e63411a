#!/usr/bin/env node
// moba <command>: the command line. Every failure prints one line and exits non-zero.
import { readFileSync, realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { Backend } from "../attention/problem.js";
import { attentionFile } from "../run/attentionFile.js";
import { checkOutputPath, writeFileAtomic } from "../io/files.js";
import { bench, BENCH_DEFAULTS, benchPlot } from "../run/bench.js";
import { benchGpu, gpuBenchPlot, OFFICIAL_MOBA_SPEEDUP } from "../run/benchGpu.js";
import { demo, DEMO_DEFAULTS } from "../run/demo.js";
import { MobaError } from "../tensor.js";
import {
  backend,
  type Command,
  integer,
  integers,
  joinNegativeNumbers,
  precision,
  precisions,
  print,
  streams,
  usageError,
} from "./args.js";
import { modelCommands } from "./model.js";

const GPU_LENGTHS = [4096, 8192, 32768, 131072, 262144, 524288, 1048576];

const commands: Record<string, Command> = {
  ...modelCommands,
  attention: {
    summary: "MoBA (or full) attention on q, k, v from a safetensors file",
    usage: `moba attention --input in.safetensors --output out.safetensors [options]

Reads tensors q [tokens, qHeads, headDim], k and v [tokens, kvHeads, headDim] (F64, F32, F16 or BF16),
optional cu_seqlens [batch + 1] (I32 or I64) and optional dout [tokens, qHeads, headDim].
Writes out and lse (F32), and with dout also dq, dk, dv (F32).

Options:
  --input FILE        safetensors file to read (required)
  --output FILE       safetensors file to write (required; written atomically)
  --block-size N      MoBA block size (default 512)
  --top-k N           blocks per query, its own included (default 3)
  --full              full causal attention instead of MoBA
  --scale X           softmax scale (default 1/sqrt(headDim))
  --backend NAME      cpu or webgpu (default cpu)
  --precision P       f32, or f16: inputs rounded to f16, tensor cores on WebGPU where present (default f32)`,
    options: {
      input: { type: "string" },
      output: { type: "string" },
      "block-size": { type: "string" },
      "top-k": { type: "string" },
      full: { type: "boolean" },
      scale: { type: "string" },
      backend: { type: "string" },
      precision: { type: "string" },
    },
    async run(v) {
      if (typeof v.input !== "string") usageError("--input: expected a safetensors file path, got nothing");
      if (typeof v.output !== "string") usageError("--output: expected a file path to write, got nothing");
      let scale: number | undefined;
      if (v.scale !== undefined) {
        scale = Number(v.scale);
        if (!Number.isFinite(scale) || String(v.scale).trim() === "")
          usageError(`--scale: expected a finite number, got "${String(v.scale)}"`);
      }
      const { written } = await attentionFile({
        input: v.input,
        output: v.output,
        blockSize: integer("block-size", v["block-size"], 512),
        topK: integer("top-k", v["top-k"], 3),
        full: v.full === true,
        scale,
        backend: backend(v.backend),
        precision: precision(v.precision),
      });
      print(`wrote ${written.join(", ")} to ${v.output}`);
      return 0;
    },
  },
  demo: {
    summary: "MoBA vs full attention on a generated input, checked against the reference",
    usage: `moba demo [options]

Options:
  --tokens N       sequence length (default ${DEMO_DEFAULTS.tokens})
  --heads N        query heads (default ${DEMO_DEFAULTS.qHeads})
  --kv-heads N     kv heads (default ${DEMO_DEFAULTS.kvHeads})
  --head-dim N     head dimension (default ${DEMO_DEFAULTS.headDim})
  --block-size N   MoBA block size (default ${DEMO_DEFAULTS.blockSize})
  --top-k N        blocks per query (default ${DEMO_DEFAULTS.topK})
  --seed N         input seed (default ${DEMO_DEFAULTS.seed})`,
    options: {
      tokens: { type: "string" },
      heads: { type: "string" },
      "kv-heads": { type: "string" },
      "head-dim": { type: "string" },
      "block-size": { type: "string" },
      "top-k": { type: "string" },
      seed: { type: "string" },
    },
    async run(v) {
      const d = DEMO_DEFAULTS;
      const { maxError } = await demo(
        {
          tokens: integer("tokens", v.tokens, d.tokens),
          qHeads: integer("heads", v.heads, d.qHeads),
          kvHeads: integer("kv-heads", v["kv-heads"], d.kvHeads),
          headDim: integer("head-dim", v["head-dim"], d.headDim),
          blockSize: integer("block-size", v["block-size"], d.blockSize),
          topK: integer("top-k", v["top-k"], d.topK),
          seed: integer("seed", v.seed, d.seed),
        },
        print,
      );
      return maxError <= 1e-5 ? 0 : 1;
    },
  },
  bench: {
    summary: "time MoBA against full attention, forward and forward+backward",
    usage: `moba bench [options]

Options:
  --backend NAME    cpu or webgpu (default cpu)
  --lengths LIST    comma-separated token counts (cpu default ${BENCH_DEFAULTS.lengths.join(",")};
                    webgpu default ${GPU_LENGTHS.join(",")}, block 512 / top-3 up to 32K and 4096 / top-12 above,
                    as in the MoBA paper's speed table, headDim 128)
  --heads N         query heads (default ${BENCH_DEFAULTS.qHeads})
  --kv-heads N      kv heads (default ${BENCH_DEFAULTS.kvHeads})
  --head-dim N      head dimension (default ${BENCH_DEFAULTS.headDim})
  --block-size N    MoBA block size (default ${BENCH_DEFAULTS.blockSize})
  --top-k N         blocks per query (default ${BENCH_DEFAULTS.topK})
  --runs N          timed runs per measurement, after one warm-up (default ${BENCH_DEFAULTS.runs})
  --svg FILE        also write a plot of the speedups
  --max-seconds N   webgpu: stop a measurement after this long (at least 3 runs; default 60)
  --full-up-to N    webgpu: time full attention only up to N tokens (default: always)
  --precision LIST  webgpu: f32, f16 or both (f32,f16): each length is timed in each (default f32)
  --forward-only    webgpu: time the forward only`,
    options: {
      backend: { type: "string" },
      lengths: { type: "string" },
      heads: { type: "string" },
      "kv-heads": { type: "string" },
      "head-dim": { type: "string" },
      "block-size": { type: "string" },
      "top-k": { type: "string" },
      runs: { type: "string" },
      svg: { type: "string" },
      "max-seconds": { type: "string" },
      "full-up-to": { type: "string" },
      precision: { type: "string" },
      "forward-only": { type: "boolean" },
    },
    async run(v) {
      const d = BENCH_DEFAULTS;
      if (typeof v.svg === "string") checkOutputPath(v.svg, "--svg"); // before the minutes of measuring
      if (backend(v.backend) === "webgpu") {
        const headDim = integer("head-dim", v["head-dim"], 128);
        const heads = integer("heads", v.heads, 1);
        const cases = integers("lengths", v.lengths, GPU_LENGTHS).flatMap((tokens) =>
          precisions(v.precision).map((precision) => ({
            tokens,
            heads,
            headDim,
            precision,
            blockSize: integer("block-size", v["block-size"], tokens <= 32768 ? 512 : 4096),
            topK: integer("top-k", v["top-k"], tokens <= 32768 ? 3 : 12),
          })),
        );
        const fullUpTo = v["full-up-to"] === undefined ? Infinity : integer("full-up-to", v["full-up-to"], 0);
        const rows = await benchGpu(
          cases,
          integer("runs", v.runs, 10),
          print,
          integer("max-seconds", v["max-seconds"], 60),
          fullUpTo,
          v["forward-only"] === true,
        );
        if (typeof v.svg === "string") {
          await writeFileAtomic(v.svg, new TextEncoder().encode(gpuBenchPlot(rows, OFFICIAL_MOBA_SPEEDUP)));
          print(`wrote ${v.svg}`);
        }
        return 0;
      }
      const options = {
        backend: backend(v.backend),
        lengths: integers("lengths", v.lengths, d.lengths),
        qHeads: integer("heads", v.heads, d.qHeads),
        kvHeads: integer("kv-heads", v["kv-heads"], d.kvHeads),
        headDim: integer("head-dim", v["head-dim"], d.headDim),
        blockSize: integer("block-size", v["block-size"], d.blockSize),
        topK: integer("top-k", v["top-k"], d.topK),
        runs: integer("runs", v.runs, d.runs),
      };
      const rows = await bench(options, print);
      if (typeof v.svg === "string") {
        await writeFileAtomic(v.svg, new TextEncoder().encode(benchPlot(rows, options)));
        print(`wrote ${v.svg}`);
      }
      return 0;
    },
  },
};

const width = Math.max(...Object.keys(commands).map((name) => name.length)) + 2;
const HELP = `moba: Mixture of Block Attention for TypeScript

Usage: moba <command> [options]     (moba <command> --help for its options; moba --version)

Commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`)
  .join("\n")}`;

/** The package's version (package.json is two folders up from src/cli and from dist/cli). */
function version(): string {
  return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
}

async function runCommand(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    print(HELP);
    return 0;
  }
  if (name === "--version" || name === "-V") {
    print(`moba ${version()}`);
    return 0;
  }
  const command = commands[name];
  if (!command) usageError(`unknown command "${name}" (expected one of: ${Object.keys(commands).join(", ")}; moba --help lists them)`);
  const options = { ...command.options, help: { type: "boolean", short: "h" } } as const;
  let parsed;
  try {
    parsed = parseArgs({ args: joinNegativeNumbers(rest, options), options, strict: true, allowPositionals: command.positionals === true });
  } catch (error) {
    // node's own text suggests "--" for an unknown option; what the user needs is this command's options
    const unknown = /^Unknown option '([^']+)'/.exec((error as Error).message);
    if (unknown) usageError(`unknown option ${unknown[1]} for moba ${name} (moba ${name} --help lists its options)`);
    throw error;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    print(command.usage);
    return 0;
  }
  return command.run(values, positionals);
}

/**
 * Runs one command line and returns the exit status: 0 done (help included), 2 bad input or usage (one line on stderr
 * naming the argument), 1 a bug (its stack on stderr). Never throws, never exits: the tests call it in-process.
 */
export async function main(argv: string[]): Promise<number> {
  try {
    return await runCommand(argv);
  } catch (error) {
    // input errors, argument errors and sizes beyond this machine's memory are the user's: one line; anything else is a bug: the stack
    const memory =
      error instanceof RangeError && /allocation failed|Invalid typed array length|Invalid array buffer length/.test(error.message);
    const known = memory || error instanceof MobaError || (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    const message = memory
      ? `out of memory (${(error as Error).message}): the sizes asked for do not fit this machine`
      : known
        ? (error as Error).message.split("\n")[0]
        : ((error as Error).stack ?? String(error));
    streams.err(`moba: error: ${message}\n`);
    return known ? 2 : 1;
  }
}

/** Run as a program (node dist/cli/main.js, npx moba through its link), not imported (the tests import main()). */
function invokedDirectly(): boolean {
  try {
    return realpathSync(process.argv[1] ?? "") === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  // a closed pipe (moba demo | head) ends the program quietly
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(0);
    throw error;
  });
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
