// What every command shares: its shape, and argument parsing that fails with one clear line.
import type { ParseArgsConfig } from "node:util";
import type { Backend, Precision } from "../attention/problem.js";
import { MobaError } from "../tensor.js";

export type Options = NonNullable<ParseArgsConfig["options"]>;

export interface Command {
  summary: string;
  usage: string;
  options: Options;
  /** Accepts positional arguments (after the command name). */
  positionals?: boolean;
  run(values: Record<string, string | boolean | undefined>, positionals?: string[]): Promise<number>;
}

/** Where the command line writes: data (results, tables, generated text) to out; progress, notes and errors to err. Tests swap them. */
export const streams = {
  out: (text: string): void => void process.stdout.write(text),
  err: (text: string): void => void process.stderr.write(text),
};

/** One line of data (stdout). */
export const print = (line: string): void => streams.out(`${line}\n`);
/** One line of progress or a note (stderr). */
export const note = (line: string): void => streams.err(`${line}\n`);

/**
 * `--temperature -1` as `--temperature=-1`: node's parseArgs reads a value that starts with "-" as an option
 * ("argument is ambiguous"), so a negative number after an option that takes a value is joined to it.
 */
export function joinNegativeNumbers(args: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : undefined;
    if (name !== undefined && options[name]?.type === "string" && /^-(\d|\.\d|Infinity)/.test(args[i + 1] ?? ""))
      out.push(`${args[i]}=${args[++i]}`);
    else out.push(args[i]);
  }
  return out;
}

export function usageError(message: string): never {
  throw new MobaError(message);
}

export function integer(name: string, text: string | boolean | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const x = Number(text);
  if (typeof text !== "string" || !/^\s*\d+\s*$/.test(text) || !Number.isSafeInteger(x) || x < 1)
    usageError(`--${name}: expected a positive integer, got "${String(text)}"`);
  return x;
}

/** A count that may be 0 (e.g. --full-last 0). */
export function count(name: string, text: string | boolean | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const x = Number(text);
  if (typeof text !== "string" || !/^\s*\d+\s*$/.test(text) || !Number.isSafeInteger(x))
    usageError(`--${name}: expected an integer >= 0, got "${String(text)}"`);
  return x;
}

export function integers(name: string, text: string | boolean | undefined, fallback: number[]): number[] {
  if (text === undefined) return fallback;
  return String(text)
    .split(",")
    .map((part) => integer(name, part, 0));
}

export function backend(text: string | boolean | undefined): Backend {
  if (text === undefined || text === "cpu" || text === "webgpu") return text ?? "cpu";
  return usageError(`--backend: expected "cpu" or "webgpu", got "${String(text)}"`);
}

export function precision(text: string | boolean | undefined): Precision {
  if (text === undefined || text === "f32" || text === "f16") return text ?? "f32";
  return usageError(`--precision: expected "f32" or "f16", got "${String(text)}"`);
}

/** A comma-separated list of precisions, default f32. */
export function precisions(text: string | boolean | undefined): Precision[] {
  if (text === undefined) return ["f32"];
  return String(text)
    .split(",")
    .map((part) => precision(part));
}

export function decimal(name: string, text: string | boolean | undefined, fallback: number, min = -Infinity, max = Infinity): number {
  if (text === undefined) return fallback;
  const x = Number(text);
  if (typeof text !== "string" || text.trim() === "" || !Number.isFinite(x) || x < min || x > max)
    usageError(`--${name}: expected a number in [${min}, ${max}], got "${String(text)}"`);
  return x;
}

export function autoBackend(text: string | boolean | undefined): Backend | "auto" {
  if (text === undefined || text === "auto") return "auto";
  if (text === "cpu" || text === "webgpu") return text;
  return usageError(`--backend: expected "auto", "cpu" or "webgpu", got "${String(text)}"`);
}
