// The WebAssembly module's exports (AssemblyScript; scripts/build-wasm.sh builds it).
export { gemm, gemmWorkBytes, packPanel } from "./gemm";
export { attendBackward, attendForward, backwardWorkBytes, forwardWorkBytes } from "./attention";
export { blockMeans, meansBytes, route, routeWorkBytes } from "./gate";
export { firstNonFinite } from "./check";
