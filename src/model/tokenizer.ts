// Text to token ids and back. A Hugging Face tokenizer.json runs through @huggingface/tokenizers
// (the same pre-tokenizers, BPE merges and decoders as the Rust library; imported when first
// needed, so the package loads without it in a page that never tokenizes). Byte-level models use
// UTF-8 bytes as ids, and export a tokenizer.json that maps each byte to its own value.
import { MobaError } from "../tensor.js";

export interface TextTokenizer {
  /** The ids of the text, no special tokens added. */
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  /** The tokenizer.json this tokenizer was read from (or that describes it), exported with the model. */
  readonly json: string;
  /** The tokenizer_config.json it was read with (text), exported as it was; undefined: none. */
  readonly config?: string;
}

/**
 * Reads a tokenizer.json (text or parsed) and its tokenizer_config.json when there is one (text or
 * parsed); `source` names them in errors.
 */
export async function loadTokenizer(json: string | object, source = "tokenizer.json", config?: string | object): Promise<TextTokenizer> {
  const fail = (why: string): never => {
    throw new MobaError(`${source}: cannot read the tokenizer (${why.split("\n")[0]})`);
  };
  const parse = (text: string | object, what: string): object => {
    let parsed: unknown;
    try {
      parsed = typeof text === "string" ? JSON.parse(text) : text;
    } catch (error) {
      return fail(`${what}not valid JSON: ${(error as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
      return fail(`${what}expected a JSON object, got ${JSON.stringify(parsed)?.slice(0, 40)}`);
    return parsed;
  };
  const parsed = parse(json, "");
  const extra = config === undefined ? {} : parse(config, "tokenizer_config.json: ");
  const { Tokenizer } = await import("@huggingface/tokenizers");
  let tokenizer: InstanceType<typeof Tokenizer>;
  try {
    tokenizer = new Tokenizer(parsed, extra);
  } catch (error) {
    return fail((error as Error).message);
  }
  const text = (x: string | object) => (typeof x === "string" ? x : JSON.stringify(x));
  return {
    encode: (text) => Int32Array.from(tokenizer.encode(text, { add_special_tokens: false }).ids),
    decode: (ids) => tokenizer.decode(Array.from(ids), { skip_special_tokens: false }),
    json: text(json),
    ...(config !== undefined && { config: text(config) }),
  };
}

/** GPT-2's printable stand-in for each byte (what a ByteLevel pre-tokenizer maps bytes to). */
function byteCharacters(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

/**
 * The tokenizer.json of a byte-level model: a BPE without merges over the 256 byte characters,
 * byte b having id b, behind a ByteLevel pre-tokenizer and decoder — UTF-8 bytes in, bytes out.
 */
export function byteLevelTokenizerJson(): string {
  const vocab = Object.fromEntries(byteCharacters().map((c, b) => [c, b]));
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };
  return JSON.stringify({
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  });
}

/** UTF-8 bytes as token ids: the tokenizer of the byte-level models trained here. */
export const byteTokenizer: TextTokenizer = {
  encode: (text) => Int32Array.from(new TextEncoder().encode(text)),
  decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids)),
  get json() {
    return byteLevelTokenizerJson();
  },
};
