# Official MoBA (moba_efficient.py verbatim, flash_attn shimmed to PyTorch's aten FA2 kernels) vs
# full causal FA2, bf16, D=128, CUDA-event medians, plus peak extra memory of fwd+bwd.
# PART=short: 4K/8K/32K block 512 top-3, 1 and 8 heads. PART=long: 128K-1M block 4096 top-12.
import os, sys, json, torch
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.join(here, "..", "..", ".peers")]  # the shim here, moba_efficient.py in .peers/
from moba_efficient import moba_attn_varlen
from flash_attn import flash_attn_varlen_func
print(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name()}), flush=True)
def data(S, H, D=128):
    g = torch.Generator(device='cuda').manual_seed(0)
    return [torch.randn(S, H, D, device='cuda', dtype=torch.bfloat16, generator=g).requires_grad_() for _ in range(3)]
def tm(fn, reps):
    fn(); torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort(); return ts[len(ts) // 2]
def peak(fn):
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    fn(); torch.cuda.synchronize(); return (torch.cuda.max_memory_allocated() - base) / 2**30
part = os.environ.get('PART', 'short')
rows = {'short': [(4096, 1, 512, 3, True), (8192, 1, 512, 3, True), (32768, 1, 512, 3, True), (32768, 8, 512, 3, True)],
        'long': [(131072, 1, 4096, 12, True), (262144, 1, 4096, 12, True), (524288, 1, 4096, 12, False), (1048576, 1, 4096, 12, False), (131072, 8, 4096, 12, True)]}[part]
for S, H, B, K, bwd in rows:
    q, k, v = data(S, H); cu = torch.tensor([0, S], device='cuda', dtype=torch.int32); g = torch.randn_like(q)
    reps = 20 if S <= 32768 else (5 if S <= 262144 else 3)
    r = {"S": S, "H": H, "B": B, "K": K}
    with torch.no_grad():
        r["fwd_full_ms"] = tm(lambda: flash_attn_varlen_func(q, k, v, cu, cu, S, S, causal=True), reps)
        r["fwd_moba_ms"] = tm(lambda: moba_attn_varlen(q, k, v, cu, S, B, K), reps)
    if bwd:
        try:
            r["fb_full_ms"] = tm(lambda: torch.autograd.backward(flash_attn_varlen_func(q, k, v, cu, cu, S, S, causal=True), g), max(3, reps // 2))
            r["fb_moba_ms"] = tm(lambda: torch.autograd.backward(moba_attn_varlen(q, k, v, cu, S, B, K), g), max(3, reps // 2))
            r["peak_fb_full_gib"] = peak(lambda: torch.autograd.backward(flash_attn_varlen_func(q, k, v, cu, cu, S, S, causal=True), g))
            r["peak_fb_moba_gib"] = peak(lambda: torch.autograd.backward(moba_attn_varlen(q, k, v, cu, S, B, K), g))
        except Exception as e:
            r["error"] = str(e).split('\n')[0]
    r["fwd_speedup"] = r["fwd_full_ms"] / r["fwd_moba_ms"]
    if "fb_moba_ms" in r: r["fb_speedup"] = r["fb_full_ms"] / r["fb_moba_ms"]
    print(json.dumps(r), flush=True)
    del q, k, v, g; torch.cuda.empty_cache()
