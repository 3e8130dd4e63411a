import { create, globals } from "webgpu";
Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter();
console.log("adapter", adapter && adapter.info, adapter && [...adapter.features]);
console.log(
  adapter &&
    Object.fromEntries(
      [
        "maxStorageBufferBindingSize",
        "maxBufferSize",
        "maxComputeWorkgroupStorageSize",
        "maxComputeInvocationsPerWorkgroup",
        "maxComputeWorkgroupSizeX",
        "maxStorageBuffersPerShaderStage",
      ].map((k) => [k, adapter.limits[k]]),
    ),
);
process.exit(0);
