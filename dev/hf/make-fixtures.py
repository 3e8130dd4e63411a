# Builds the Hugging Face fixtures of test/hf.test.ts with transformers itself: tiny random Llamas
# (GQA, tied and untied embeddings, a transformers-4 config.json written by hand, Llama-3 rope
# scaling with an explicit head_dim, F32 / F16 / BF16 weights, two shards) and a byte-level BPE
# tokenizer.json trained here on a short multilingual text. Beside each model: expected.safetensors
# with transformers' float32 logits on a few token sequences (the weights as stored, upcast), and
# tokenizer-expected.json with the ids of a multilingual text. Run where transformers is installed:
#   python3 dev/hf/make-fixtures.py OUT_DIR      (then copy OUT_DIR/* to test/fixtures/hf/)
import json, os, shutil, sys

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else "fixtures-hf"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)

TRAIN_TEXT = """The quick brown fox jumps over the lazy dog. We the People of the United States, in Order to form a more perfect Union.
Le vif renard brun saute par-dessus le chien paresseux. Liberté, égalité, fraternité.
Der schnelle braune Fuchs springt über den faulen Hund. Grüße aus München, schöne Straße.
Быстрая коричневая лиса прыгает через ленивую собаку. Привет, мир!
Η γρήγορη καφέ αλεπού πηδάει πάνω από το τεμπέλικο σκυλί.
敏捷的棕色狐狸跳过了懒狗。你好，世界！ 素早い茶色の狐がのろまな犬を飛び越える。こんにちは。
الثعلب البني السريع يقفز فوق الكلب الكسول. مرحبا بالعالم.
""" * 4
# held out: words, scripts and symbols the tokenizer has not seen together (an emoji, CJK it has not merged)
TEST_TEXT = "Hello, wörld! Ça va? Straße 12 — привет, κόσμε; 你好世界 こんにちは 🙂 مرحبا\n\tTabs  and  spaces."

def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN_TEXT.split("\n"), trainer)
    return tok

tokenizer = train_tokenizer()
V = tokenizer.get_vocab_size()
print("tokenizer vocab", V, file=sys.stderr)
test_ids = tokenizer.encode(TEST_TEXT, add_special_tokens=False).ids

def base_config(**kw):
    c = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, attention_bias=False, mlp_bias=False)
    c.update(kw)
    return c

def make_config(rope, **kw):
    """transformers 5 takes rope_parameters; 4.x took rope_theta / rope_scaling."""
    c = base_config(**kw)
    try:
        return LlamaConfig(**c, rope_parameters=rope)
    except TypeError:
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        return LlamaConfig(**c, rope_theta=rope["rope_theta"], rope_scaling=None if scaling.get("rope_type") == "default" else scaling)

def randomize(model):
    # the default init leaves norms at 1 and tiny weights: spread everything so a wrong detail shows
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.3)

def write_expected(dir, sequences):
    model = LlamaForCausalLM.from_pretrained(dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tensors = {}
    with torch.no_grad():
        for i, ids in enumerate(sequences):
            ids = torch.tensor([ids], dtype=torch.long)
            logits = model(input_ids=ids).logits[0].float()
            tensors[f"input_ids.{i}"] = ids[0].contiguous()
            tensors[f"logits.{i}"] = logits.contiguous()
    save_file(tensors, os.path.join(dir, "expected.safetensors"), metadata={"transformers": transformers.__version__, "torch": torch.__version__})

def fixture(name, config, dtype, shard=None, v4_config=None):
    dir = os.path.join(out, name)
    model = LlamaForCausalLM(config)
    randomize(model)
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(dir, **kwargs)
    if v4_config is not None:
        # the config.json transformers 4.x would have written, beside 5.x's (config.v5.json)
        shutil.move(os.path.join(dir, "config.json"), os.path.join(dir, "config.v5.json"))
        with open(os.path.join(dir, "config.json"), "w") as f:
            json.dump(v4_config, f, indent=2)
    tokenizer.save(os.path.join(dir, "tokenizer.json"))
    g = torch.Generator().manual_seed(len(name))
    sequences = [[5], torch.randint(0, V, (9,), generator=g).tolist(), test_ids[:40]]
    write_expected(dir, sequences)
    print(name, sorted(os.listdir(dir)), file=sys.stderr)

# 1. GQA (6 query heads over 2 kv heads), untied head, F32, one file, transformers 5 config
fixture("gqa-untied-f32", make_config({"rope_type": "default", "rope_theta": 500000.0}, hidden_size=48, num_attention_heads=6,
        num_key_value_heads=2, tie_word_embeddings=False), torch.float32)

# 2. tied embeddings, F16, the config.json as transformers 4.x wrote it (rope_theta, torch_dtype), MoBA fields
v4 = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 1,
    "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 128,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "torch_dtype": "float16", "transformers_version": "4.46.3", "use_cache": True, "vocab_size": V,
    "moba_chunk_size": 8, "moba_topk": 2,
}
fixture("tied-f16-v4", make_config({"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True), torch.float16, v4_config=v4)

# 3. Llama-3 rope scaling, head_dim 16 != hidden / heads, one kv head, BF16, two shards
llama3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
c3 = make_config(llama3, head_dim=16, num_key_value_heads=1, tie_word_embeddings=False)
fixture("llama3-bf16-sharded", c3, torch.bfloat16, shard="60KB")
# the same model's config as 4.x wrote it, beside 5.x's (a test reads both to the same config)
c3v4 = dict(v4, head_dim=16, num_key_value_heads=1, tie_word_embeddings=False, torch_dtype="bfloat16",
            rope_theta=10000.0, rope_scaling={k: v for k, v in llama3.items() if k != "rope_theta"})
del c3v4["moba_chunk_size"], c3v4["moba_topk"]
with open(os.path.join(out, "llama3-bf16-sharded", "config.v4.json"), "w") as f:
    json.dump(c3v4, f, indent=2)

# the tokenizer's ids of a multilingual text it was not trained on
enc = tokenizer.encode(TEST_TEXT, add_special_tokens=False)
with open(os.path.join(out, "tokenizer-expected.json"), "w") as f:
    json.dump({"text": TEST_TEXT, "ids": enc.ids, "tokens": enc.tokens, "decoded": tokenizer.decode(enc.ids), "tokenizers": __import__("tokenizers").__version__}, f, ensure_ascii=False, indent=1)
print("transformers", transformers.__version__, "torch", torch.__version__, file=sys.stderr)
