# The PyTorch twin of `moba bench-train`: the project's bench-train model (hidden 512, 8 layers, 8 heads / 4 kv heads,
# SwiGLU 1344, vocab 256, one sequence per step) in PyTorch, bf16 autocast + fused AdamW, with
# full attention (SDPA, flash) and with the official MoBA (moba_efficient, block 512 top-3).
import os, sys, json, time, torch, torch.nn as nn, torch.nn.functional as F
here = os.path.dirname(os.path.abspath(__file__))
# the flash_attn shim beside this file; the official moba_efficient.py fetched into .peers/ (never committed)
sys.path[:0] = [here, os.path.join(here, "..", "..", ".peers")]
from moba_efficient import moba_attn_varlen
torch.backends.cuda.matmul.allow_tf32 = True
H, L, NH, NKV, FF, V = 512, 8, 8, 4, 1344, 256
D = H // NH
class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.n1, s.n2 = nn.RMSNorm(H), nn.RMSNorm(H)
        s.q, s.k, s.v, s.o = nn.Linear(H, H, bias=False), nn.Linear(H, NKV * D, bias=False), nn.Linear(H, NKV * D, bias=False), nn.Linear(H, H, bias=False)
        s.g, s.u, s.d = nn.Linear(H, FF, bias=False), nn.Linear(H, FF, bias=False), nn.Linear(FF, H, bias=False)
    def forward(s, x, cos, sin, kind):
        T = x.shape[0]; h = s.n1(x)
        q, k, v = s.q(h).view(T, NH, D), s.k(h).view(T, NKV, D), s.v(h).view(T, NKV, D)
        rot = lambda t: t * cos[:, None] + torch.cat([-t[..., D // 2:], t[..., :D // 2]], -1) * sin[:, None]
        q, k = rot(q), rot(k)
        k, v = k.repeat_interleave(NH // NKV, 1), v.repeat_interleave(NH // NKV, 1)
        if kind == 'full':
            a = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], is_causal=True)[0].transpose(0, 1)
        else:
            cu = torch.tensor([0, T], device=x.device, dtype=torch.int32)
            bf = lambda t: t.to(torch.bfloat16).contiguous()
            a = moba_attn_varlen(bf(q), bf(k), bf(v), cu, T, 512, 3).to(x.dtype)
        x = x + s.o(a.reshape(T, H))
        h = s.n2(x)
        return x + s.d(F.silu(s.g(h)) * s.u(h))
class Model(nn.Module):
    def __init__(s):
        super().__init__(); s.e = nn.Embedding(V, H); s.b = nn.ModuleList([Block() for _ in range(L)]); s.n = nn.RMSNorm(H); s.h = nn.Linear(H, V, bias=False)
    def forward(s, t, kind):
        T = t.shape[0]; pos = torch.arange(T, device=t.device, dtype=torch.float32)
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=t.device, dtype=torch.float32) / D)); ang = torch.outer(pos, inv); ang = torch.cat([ang, ang], -1)
        cos, sin = ang.cos(), ang.sin(); x = s.e(t)
        for b in s.b: x = b(x, cos.to(x.dtype), sin.to(x.dtype), kind)
        return s.h(s.n(x))
print(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name()}), flush=True)
m = Model().cuda(); print(json.dumps({"params": sum(p.numel() for p in m.parameters())}), flush=True)
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
for T in [8192, 32768]:
    for kind in ['moba', 'full']:
        t = torch.randint(0, V, (T + 1,), device='cuda')
        def step():
            with torch.autocast('cuda', dtype=torch.bfloat16):
                loss = F.cross_entropy(m(t[:-1], kind).float(), t[1:])
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        for _ in range(2): step()
        torch.cuda.synchronize(); ts = []
        for _ in range(5):
            a = time.perf_counter(); step(); torch.cuda.synchronize(); ts.append((time.perf_counter() - a) * 1000)
        # back to back, as ours times its "step ms": five steps launched without waiting in between, one wait at the end
        a = time.perf_counter()
        for _ in range(5): step()
        torch.cuda.synchronize(); pipelined = (time.perf_counter() - a) * 1000 / 5
        ts.sort(); print(json.dumps({"T": T, "kind": kind, "step_ms": ts[2], "pipelined_ms": pipelined, "tokens_per_s": T / ts[2] * 1000, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)
        torch.cuda.reset_peak_memory_stats()
