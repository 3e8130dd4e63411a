# The round trip of moba export: loads a directory it wrote with transformers
# (LlamaForCausalLM.from_pretrained, AutoTokenizer on its tokenizer.json) and prints the mean loss in
# nats per predicted token of a held-out text, scored as `moba eval --model DIR --text FILE --json`
# scores it: tokens without special tokens, the first --max-tokens, windows of --context-length
# predictions from position 0 (window w reads tokens [w*C, (w+1)*C]). With --expect X (our
# loss_nats_per_token) it also prints the relative difference and fails above --tolerance.
#   python3 dev/hf/check-export.py DIR TEXT [--max-tokens N] [--context-length C] [--expect X]
import argparse, json, sys

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("text")
p.add_argument("--max-tokens", type=int, default=None)
p.add_argument("--context-length", type=int, default=None)
p.add_argument("--expect", type=float, default=None)
p.add_argument("--tolerance", type=float, default=1e-4)
a = p.parse_args()

torch.backends.cuda.matmul.allow_tf32 = False
device = "cuda" if torch.cuda.is_available() else "cpu"
model = LlamaForCausalLM.from_pretrained(a.dir, dtype=torch.float32, attn_implementation="eager").to(device).eval()
tokenizer = AutoTokenizer.from_pretrained(a.dir)
ids = tokenizer(open(a.text, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
if a.max_tokens is not None:
    ids = ids[: a.max_tokens]
C = a.context_length or model.config.max_position_embeddings
total, windows = 0.0, 0
with torch.no_grad():
    for start in range(0, len(ids) - 1, C):
        window = torch.tensor([ids[start : start + C + 1]], device=device)
        logits = model(input_ids=window[:, :-1]).logits.double()
        total += torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum").item()
        windows += 1
result = {"loss_nats_per_token": total / (len(ids) - 1), "tokens": len(ids), "predicted": len(ids) - 1, "windows": windows, "context_length": C}
ok = True
if a.expect is not None:
    result["moba_loss"] = a.expect
    result["relative_difference"] = abs(result["loss_nats_per_token"] - a.expect) / abs(a.expect)
    ok = result["relative_difference"] <= a.tolerance
print(json.dumps(result))
sys.exit(0 if ok else 1)
