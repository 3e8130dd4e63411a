// A model directory on disk (Node only; imported by loadModel when given a path).
import { mkdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { MobaError } from "../tensor.js";
import { writeFileAtomic } from "./files.js";

/** Reads files of `dir` by name; undefined for one that does not exist. */
export function directoryReader(dir: string): (name: string) => Promise<Uint8Array | undefined> {
  return async (name) => {
    try {
      return await readFile(join(dir, name));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return undefined;
      throw new MobaError(`${join(dir, name)}: cannot read (${code ?? (error as Error).message})`);
    }
  };
}

/** Writes every file into `dir` (created), each atomically. */
export async function writeDirectory(dir: string, files: Record<string, Uint8Array>): Promise<void> {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw new MobaError(`${dir}: cannot create the folder (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  for (const [name, bytes] of Object.entries(files)) await writeFileAtomic(join(dir, name), bytes);
}
