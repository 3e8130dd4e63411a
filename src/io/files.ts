// Files are written whole or not at all, and once written they stay written.
import { lstatSync, readdirSync, statSync, unlinkSync } from "node:fs";
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { MobaError } from "../tensor.js";

/**
 * Checks, before any work, that `path` can be written by writeFileAtomic: its folder exists, and it is absent or a
 * regular file. A symlink, a device (/dev/full), a folder or a FIFO is refused, not replaced by a regular file.
 */
export function checkOutputPath(path: string, name = path): void {
  const folder = dirname(path);
  let stat;
  try {
    stat = statSync(folder);
  } catch {
    throw new MobaError(`${name}: expected a file in an existing folder, got "${path}" (no folder ${folder})`);
  }
  if (!stat.isDirectory()) throw new MobaError(`${name}: expected a file in a folder, got "${path}" (${folder} is not a folder)`);
  let target;
  try {
    target = lstatSync(path);
  } catch {
    return; // absent: it will be created
  }
  const kind = target.isSymbolicLink()
    ? "a symbolic link"
    : target.isDirectory()
      ? "a folder"
      : target.isFile()
        ? null
        : "a device, FIFO or socket";
  if (kind !== null) throw new MobaError(`${name}: expected a regular file to write, got "${path}" (${kind}; not replaced)`);
}

/** Temporary files `NAME.tmp-PID-N` left beside `path` by processes that no longer run (killed while writing). */
function removeStaleTemporaries(path: string): void {
  const prefix = `${basename(path)}.tmp-`;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split("-")[0]);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || alive(pid)) continue;
    try {
      unlinkSync(join(dirname(path), name));
    } catch {
      // another process removed it first
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"; // someone else's process
  }
}

let written = 0;

/**
 * Writes atomically and durably: a temporary file beside the target, flushed to the disk (fsync), renamed over the
 * target, and the folder flushed so the rename itself survives a power loss. A failure leaves the target as it was
 * and no temporary file; temporary files of killed processes are removed on the next write of the same target.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  checkOutputPath(path);
  removeStaleTemporaries(path);
  const temporary = `${path}.tmp-${process.pid}-${written++}`;
  try {
    const file = await open(temporary, "w");
    try {
      await file.writeFile(bytes);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw new MobaError(`${path}: cannot write (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  await syncFolder(dirname(path));
}

/** fsync of a folder: makes a rename in it durable. Platforms that cannot open a folder for it (Windows) skip it. */
async function syncFolder(folder: string): Promise<void> {
  let handle;
  try {
    handle = await open(folder, "r");
  } catch {
    return;
  }
  try {
    await handle.sync();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "EINVAL" && code !== "EPERM" && code !== "EISDIR") throw new MobaError(`${folder}: cannot flush the folder (${code})`);
  } finally {
    await handle.close();
  }
}
