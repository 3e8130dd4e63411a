// Files are written whole or not at all.
import { rename, unlink, writeFile } from "node:fs/promises";
import { MobaError } from "../tensor.js";

/** Writes atomically: a temporary file beside the target, then a rename; a failure leaves no file. */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeFile(temporary, bytes);
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw new MobaError(`${path}: cannot write (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}
