// The WebAssembly module's exports (AssemblyScript; scripts/build-wasm.sh builds it).
export { gemm, gemmWorkBytes } from "./gemm";
export { attendBackward, attendForward, backwardWorkBytes, forwardWorkBytes } from "./attention";
