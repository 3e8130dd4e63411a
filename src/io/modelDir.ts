// A model directory on disk (Node only; imported by loadModel when given a path).
import { mkdirSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { MobaError } from "../tensor.js";
import { writeFileAtomic } from "./files.js";

/**
 * A whole file in chunks: fs.readFile stops at 2 GiB, and one safetensors file of a 1B-parameter
 * model in BF16 is 2.5 GB.
 */
export async function readWholeFile(path: string, chunk = 2 ** 30): Promise<Uint8Array> {
  const file = await open(path, "r");
  try {
    const bytes = new Uint8Array((await file.stat()).size);
    for (let at = 0; at < bytes.length;) {
      const { bytesRead } = await file.read(bytes, at, Math.min(chunk, bytes.length - at), at);
      if (bytesRead === 0) throw new MobaError(`${path}: the file ended at byte ${at} of ${bytes.length} while being read`);
      at += bytesRead;
    }
    return bytes;
  } finally {
    await file.close();
  }
}

/** Reads files of `dir` by name; undefined for one that does not exist. */
export function directoryReader(dir: string): (name: string) => Promise<Uint8Array | undefined> {
  return async (name) => {
    try {
      return await readWholeFile(join(dir, name));
    } catch (error) {
      if (error instanceof MobaError) throw error;
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
