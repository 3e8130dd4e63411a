import { create, globals } from "webgpu";
Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter();
const device = await adapter.requestDevice();
const variant = process.argv[2];
const code = {
 a: `struct Params { rows: u32, headDim: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) lid: u32) { if (lid < P.rows) { x[lid] = 7.0; } }`,
 b: `@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) lid: u32) { if (lid < 1u) { x[lid] = y[0]; } }`,
 d: `struct Params { rows: u32, headDim: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) { let i = (wid.x + wid.y * nwg.x) * 64u + lid; if (i < P.rows) { x[i] = 7.0; } }`,
 e: `struct Params { rows: u32, headDim: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) { if (lid < P.rows + nwg.x - 1u) { x[lid] = 7.0; } }`,
 c: `@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) lid: u32) { if (lid < 1u) { var s = 0.0; for (var d = 0u; d < 4u; d++) { s += y[d]; } x[lid] = s; } }`,
}[variant];
const module = device.createShaderModule({ code });
const p = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
const mk = (usage, data) => { const b = device.createBuffer({ size: 16, usage, mappedAtCreation: true }); new Uint32Array(b.getMappedRange()).set(data); b.unmap(); return b; };
const first = variant === "a" || variant === "d" || variant === "e" ? mk(GPUBufferUsage.UNIFORM, [1, 4, 0, 0]) : mk(GPUBufferUsage.STORAGE, [0x3f800000, 0x3f800000, 0, 0]);
const buf = mk(GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, [0, 0, 0, 0]);
const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const enc = device.createCommandEncoder();
const pass = enc.beginComputePass();
pass.setPipeline(p); pass.setBindGroup(0, device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: first } }, { binding: 1, resource: { buffer: buf } }] }));
pass.dispatchWorkgroups(1); pass.end();
enc.copyBufferToBuffer(buf, 0, read, 0, 16);
device.queue.submit([enc.finish()]);
await read.mapAsync(GPUMapMode.READ);
console.log(variant, new Float32Array(read.getMappedRange()));
