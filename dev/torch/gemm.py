# torch.matmul (cuBLAS) in bf16 and f16 on the shapes of dev/gemm/gemm.mts, same names, CUDA-event
# medians of 30, inputs drawn fresh (never zeros). Usage on the GPU machine: GEMM_TOKENS=32768 python3 dev/torch/gemm.py
import os, json, torch
T = int(os.environ.get("GEMM_TOKENS", 32768))
def tm(fn, reps=30):
    for _ in range(3): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort(); return ts[len(ts) // 2]
# (name, M, N, K, A stored [K, M], B stored [K, N], accumulate) as in the harness: y[M, N] (+)= A · B
shapes = [("4096^3", 4096, 4096, 4096, False, False, False), ("gate/up fwd", T, 1344, 512, False, False, False),
          ("down fwd", T, 512, 1344, False, False, False), ("q/o fwd", T, 512, 512, False, False, False),
          ("k/v/head fwd", T, 256, 512, False, False, False), ("gate dx", T, 512, 1344, False, True, True),
          ("gate dw", 1344, 512, T, True, True, True), ("k dw", 256, 512, T, True, True, True)]
print(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name()}), flush=True)
for name, M, N, K, aT, bT, acc in shapes:
    for dt in [torch.bfloat16, torch.float16]:
        a = torch.randn(K, M, device="cuda", dtype=dt) if aT else torch.randn(M, K, device="cuda", dtype=dt)
        b = torch.randn(K, N, device="cuda", dtype=dt) if bT else torch.randn(N, K, device="cuda", dtype=dt)
        A = a.t() if aT else a
        B = b if bT else b.t()
        y = torch.randn(M, N, device="cuda", dtype=torch.float32)
        # accumulate in float32 as our kernels do (addmm into an f32 y would upcast; the bf16 product plus an f32 add is what autograd does)
        fn = (lambda: y.add_(A @ B)) if acc else (lambda: A @ B)
        ms = tm(fn)
        print(json.dumps({"name": name, "M": M, "N": N, "K": K, "dtype": str(dt), "ms": ms, "tflops": 2 * M * N * K / ms / 1e9}), flush=True)
