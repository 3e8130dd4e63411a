// Where the package runs, and how the shared code reaches Node's modules without a bundler seeing them.
// The browser entry (index.ts) must bundle with no Node builtin and no Dawn: the CPU pool's worker
// threads and the Dawn device are loaded only when the code finds itself in Node, through
// importAtRunTime, whose specifier is a variable so that bundlers leave it alone (test/bundle.test.ts).

// Deno also defines process.versions.node (its Node compatibility layer), but reading the
// environment there needs a permission: Deno counts as "elsewhere" (one thread, navigator.gpu)
export const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
export const isNode = !isDeno && typeof process !== "undefined" && process.versions?.node !== undefined;

/** import(specifier) in Node only; bundlers (esbuild, Vite, webpack) do not follow it. */
export function importAtRunTime<T>(specifier: string): Promise<T> {
  return import(/* webpackIgnore: true */ /* @vite-ignore */ specifier) as Promise<T>;
}
