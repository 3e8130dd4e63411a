import { compareWithReference, randomCase, runImplementation, describe } from "../test/helpers.ts";
const gpu = (c: any, t: any) => runImplementation(c, t, "webgpu");
for (const seed of process.argv.slice(2).map(Number)) {
  const c = randomCase(seed, 1e6, 1500);
  console.log(describe(c));
  const t = performance.now();
  const f = await compareWithReference(c, undefined, gpu, true);
  console.log(
    (performance.now() - t).toFixed(0).padStart(7),
    f.slice(0, 5).map((x) => x.split(": ").slice(-1)[0]),
  );
}
