# The PyTorch twin of dev/prefill-bench.mts: transformers' LlamaForCausalLM with the same config.json
# (Llama-3.2-1B's by default; random weights from transformers' own init, nothing downloaded) in bf16
# on CUDA, the prompt's prefill (logits of the last position only) and greedy decoding over the
# KV cache, with MoBA on every layer (the official moba_efficient.py in .peers/, its flash_attn
# imports shimmed onto PyTorch's FA2 kernels by dev/torch/flash_attn), the hybrid (the last 3 layers
# full) and full attention (SDPA's flash kernel). As the official MoBA's transformers wrapper does,
# MoBA layers run MoBA in the prefill and full attention over the cache when decoding.
#   python3 dev/torch/prefill.py [--config dev/hf/llama-3.2-1b.json] [--lengths 32768:512:3,131072:4096:12]
#                                [--kinds moba,hybrid-last-3,full] [--decode 16]
import argparse, json, os, sys, time

import torch
import torch.nn.functional as F
import transformers
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.join(here, "..", "..", ".peers")]
from moba_efficient import moba_attn_varlen

p = argparse.ArgumentParser()
p.add_argument("--config", default="dev/hf/llama-3.2-1b.json")
p.add_argument("--lengths", default="32768:512:3,131072:4096:12")
p.add_argument("--kinds", default="moba,hybrid-last-3,full")
p.add_argument("--decode", type=int, default=16)
a = p.parse_args()
lengths = [tuple(int(x) for x in spec.split(":")) for spec in a.lengths.split(",")]

# what the attention function reads: each layer's kind, MoBA's block size and top-k
run = {"kinds": [], "block": 0, "topk": 0}

def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query [1, heads, q_len, D], key and value [1, kv_heads, kv_len, D] -> [1, q_len, heads, D]"""
    q_len, kv_len = query.shape[2], key.shape[2]
    repeat = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(repeat, 1), value.repeat_interleave(repeat, 1)
    if run["kinds"][module.layer_idx] == "moba" and q_len == kv_len:
        fa = lambda t: t[0].transpose(0, 1).contiguous()  # [T, heads, D], as flash-attn's varlen takes it
        cu = torch.tensor([0, q_len], device=query.device, dtype=torch.int32)
        return moba_attn_varlen(fa(query), fa(key), fa(value), cu, q_len, run["block"], run["topk"])[None], None
    # flash or memory-efficient only: the math fallback would make a [T, T] matrix per head
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        out = F.scaled_dot_product_attention(query, key, value, is_causal=q_len == kv_len, scale=scaling)
    return out.transpose(1, 2).contiguous(), None

AttentionInterface.register("moba_or_full", attention)

def kinds_of(spec, layers):
    if spec in ("moba", "full"):
        return [spec] * layers
    n = int(spec.removeprefix("hybrid-last-"))
    return ["moba"] * (layers - n) + ["full"] * n

config = LlamaConfig.from_json_file(a.config)
longest = max(t for t, _, _ in lengths) + a.decode
config.max_position_embeddings = max(config.max_position_embeddings, longest)
print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__, "gpu": torch.cuda.get_device_name()}), flush=True)
start = time.perf_counter()
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
model.set_attn_implementation("moba_or_full")
print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "build_s": time.perf_counter() - start}), flush=True)
generator = torch.Generator(device="cuda").manual_seed(7)

rows = []
for T, block, topk in lengths:
    prompt = torch.randint(0, config.vocab_size, (T,), device="cuda", generator=generator)
    for spec in a.kinds.split(","):
        run.update(kinds=kinds_of(spec, config.num_hidden_layers), block=block, topk=topk)
        try:
            with torch.inference_mode():
                # a short prompt first: kernels chosen and compiled, the allocator warm
                model(input_ids=prompt[None, : min(T, block * (topk + 1))], use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                out = model(input_ids=prompt[None], use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                prefill_ms = (time.perf_counter() - t0) * 1000
                cache, logits, steps = out.past_key_values, out.logits[0, -1], []
                for _ in range(a.decode):
                    token = logits.argmax().view(1, 1)
                    s0 = time.perf_counter()
                    out = model(input_ids=token, past_key_values=cache, use_cache=True)
                    torch.cuda.synchronize()
                    steps.append((time.perf_counter() - s0) * 1000)
                    cache, logits = out.past_key_values, out.logits[0, -1]
            steps.sort()
            row = {"tokens": T, "block": block, "topK": topk, "attention": spec, "prefill_ms": prefill_ms,
                   "decode_ms_per_token": steps[len(steps) // 2] if steps else float("nan"),
                   "gpu_gib": torch.cuda.max_memory_allocated() / 2**30}
        except Exception as error:  # one row failing (out of memory, a kernel refusing a shape) leaves the others
            row = {"tokens": T, "attention": spec, "failed": str(error).split("\n")[0]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        out = cache = logits = None  # the row's cache freed before the next row's peak is measured
        torch.cuda.empty_cache()

print("\nprefill: the prompt's forward, its cache filled, until the last logits are ready (one prompt after a short warm-up); greedy decoding (median of %d steps), bf16; GPU GiB: torch's peak allocation" % a.decode)
print("%8s %11s %14s %11s %13s %15s %8s %15s" % ("tokens", "block/top-k", "attention", "prefill ms", "prefill tok/s", "decode ms/token", "GPU GiB", "prefill vs full"))
for r in rows:
    if "failed" in r:
        print("%8d %26s  failed: %s" % (r["tokens"], r["attention"], r["failed"]))
        continue
    full = next((f for f in rows if f["tokens"] == r["tokens"] and f["attention"] == "full" and "failed" not in f), None)
    speedup = "%.2fx" % (full["prefill_ms"] / r["prefill_ms"]) if full and full is not r else ""
    print("%8d %11s %14s %11.0f %13.0f %15.2f %8.2f %15s" % (r["tokens"], "%d/%d" % (r["block"], r["topK"]), r["attention"], r["prefill_ms"],
          r["tokens"] / r["prefill_ms"] * 1000, r["decode_ms_per_token"], r["gpu_gib"], speedup))
