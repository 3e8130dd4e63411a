// The package in Node (and Deno, which runs Node's builtins): the browser-safe API of index.ts plus
// what needs files. Worker threads and Dawn are not imported here: the shared code loads them at run
// time when it finds itself in Node (runtime.ts), so both entries run attention on every backend.
export * from "./index.js";
export { saveCheckpoint } from "./model/checkpoint.js";
