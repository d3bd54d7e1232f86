// GGUF export and import without llama.cpp: the file read back gives exactly the (merged) weights,
// the config and the tokenizer; the q/k row permutation is llama.cpp's (checked on a hand-made
// head); llama3 RoPE factors match HF's formula in float64; bad inputs give one-line errors; the
// Ollama Modelfile's Go template renders a chat exactly as the Jinja chat template does.
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { evalAction } from '../../src/cli/eval.js';
import { exportAction } from '../../src/cli/export.js';
import { InputError } from '../../src/errors.js';
import { GgufFile } from '../../src/io/gguf.js';
import { Checkpoint } from '../../src/io/safetensors.js';
import { loadLlamaConfig } from '../../src/llama/config.js';
import { exportGguf, ggufToHfFolder, llama3RopeFactors, permuteRopeRows } from '../../src/llama/gguf.js';
import { exportMerged } from '../../src/llama/merge.js';
import { buildModelfile, PROBE_CHAT } from '../../src/llama/ollama.js';
import { type ChatMessage, LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { useEngine } from '../helpers/index.js';
import { adapterDir, golden, MODEL_NAMES, modelDir, useTempDir } from './helpers.js';

useEngine();
const tempDir = useTempDir();
const FIN_BASE = join(import.meta.dirname, '..', '..', 'models', 'fin-base');

/** A Llama 3 style chat template (the bundled model has none yet). */
const TEST_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

describe('GGUF export → import', () => {
  for (const name of MODEL_NAMES) {
    it(`${name}: base + adapter exported f32 reads back as exactly the merged weights, config and tokenizer`, async () => {
      const dir = await tempDir();
      const gguf = join(dir, 'm.gguf');
      const r = await exportGguf(modelDir(name), gguf, { type: 'f32', adapter: adapterDir(name) });
      expect(r.fallbackF16).toEqual([]);
      await exportMerged(adapterDir(name), modelDir(name), join(dir, 'merged'), { dtype: 'f32' });
      await ggufToHfFolder(gguf, join(dir, 'back'));
      const want = await Checkpoint.open(join(dir, 'merged'));
      const got = await Checkpoint.open(join(dir, 'back'));
      try {
        expect(got.names().sort()).toEqual(want.names().sort());
        for (const n of want.names()) expect(await got.readF32(n), n).toEqual(await want.readF32(n));
      } finally {
        await want.close();
        await got.close();
      }
      const a = await loadLlamaConfig(modelDir(name));
      const b = await loadLlamaConfig(join(dir, 'back'));
      expect({ ...b, torchDtype: null, initializerRange: 0 }).toEqual({ ...a, torchDtype: null, initializerRange: 0 });
      const ta = await LlamaTokenizer.load(modelDir(name));
      const tb = await LlamaTokenizer.load(join(dir, 'back'));
      for (const t of ['Revenue rose 12% to $4.5bn.', ' €5 naïve 日本 ', ''])
        expect(tb.encode(t)).toEqual(ta.encode(t));
      expect([tb.bosId, tb.eosId, tb.unkId]).toEqual([ta.bosId, ta.eosId, ta.unkId]);
    });
  }

  it('metadata: llama architecture keys, tokenizer model by kind, llama3 rope_freqs, tied embeddings', async () => {
    const dir = await tempDir();
    await exportGguf(modelDir('mqa-bf16-tied-llama3rope'), join(dir, 'mqa.gguf'), { type: 'f16' });
    await exportGguf(modelDir('gqa-f32'), join(dir, 'gqa.gguf'), { type: 'q8_0' });
    const mqa = await GgufFile.open(join(dir, 'mqa.gguf'));
    const gqa = await GgufFile.open(join(dir, 'gqa.gguf'));
    try {
      expect(mqa.get('tokenizer.ggml.model')).toBe('gpt2');
      expect(mqa.get('tokenizer.ggml.pre')).toBe('llama-bpe');
      expect(mqa.get('llama.attention.head_count_kv')).toBe(1);
      expect(mqa.get('llama.rope.freq_base')).toBe(500000);
      expect(mqa.tensors.has('output.weight')).toBe(false); // tied: llama.cpp reuses token_embd
      expect(mqa.tensors.get('rope_freqs.weight')!.shape).toEqual([8]);
      expect(mqa.tensors.get('blk.0.attn_q.weight')!.type).toBe('F16');
      expect(mqa.tensors.get('blk.0.attn_norm.weight')!.type).toBe('F32');
      expect(mqa.get('general.file_type')).toBe(1);
      expect(gqa.get('tokenizer.ggml.model')).toBe('llama');
      expect(gqa.get('tokenizer.ggml.add_bos_token')).toBe(true);
      expect(gqa.get('tokenizer.ggml.add_eos_token')).toBe(false);
      expect((gqa.get('tokenizer.ggml.token_type') as number[]).slice(0, 5)).toEqual([2, 3, 3, 6, 6]); // unk, bos, eos, <0x00>, <0x01>
      expect(gqa.tensors.has('output.weight')).toBe(true);
      // Rows of 48 values do not fill Q8_0 blocks of 32: written f16 (llama.cpp's fallback); 128 do.
      expect(gqa.tensors.get('blk.0.attn_q.weight')!.type).toBe('F16');
      expect(gqa.tensors.get('blk.0.ffn_down.weight')!.type).toBe('Q8_0');
      expect(gqa.get('general.quantization_version')).toBe(2);
    } finally {
      await mqa.close();
      await gqa.close();
    }
  });

  it('q/k rows: HF rotate-half halves become interleaved pairs per head, and back', () => {
    // 2 heads of dim 4, 1 column: HF row h·4 + j·2 + i holds (head h, pair i, re/im j).
    const hf = Float32Array.from([10, 11, 20, 21, 30, 31, 40, 41]); // head 0: re0 re1 im0 im1
    const gg = permuteRopeRows(hf, 2, 4);
    expect(Array.from(gg)).toEqual([10, 20, 11, 21, 30, 40, 31, 41]); // re0 im0 re1 im1
    expect(permuteRopeRows(gg, 2, 4, true)).toEqual(hf);
  });

  it('llama3 rope_freqs: 1 / factor / smooth blend, as HF computes the scaled inverse frequencies (float64)', async () => {
    const c = await loadLlamaConfig(modelDir('mqa-bf16-tied-llama3rope'));
    const f = llama3RopeFactors(c);
    const s = c.rope.scaling!;
    for (let i = 0; i < f.length; i++) {
      const inv = 1 / c.rope.theta ** ((2 * i) / c.headDim);
      const wl = (2 * Math.PI) / inv;
      let scaled: number;
      if (wl < s.originalMaxPositionEmbeddings / s.highFreqFactor) scaled = inv;
      else if (wl > s.originalMaxPositionEmbeddings / s.lowFreqFactor) scaled = inv / s.factor;
      else {
        const sm = (s.originalMaxPositionEmbeddings / wl - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        scaled = ((1 - sm) * inv) / s.factor + sm * inv;
      }
      expect(Math.abs(inv / f[i]! - scaled) / scaled).toBeLessThan(1e-6); // f32 storage of the divisor
    }
  });

  it('unsupported tokenizers and architectures are one-line InputErrors; nothing is written', async () => {
    const dir = await tempDir();
    const bad = join(dir, 'wordpiece');
    await cp(modelDir('gqa-f32'), bad, { recursive: true });
    const tok = JSON.parse(await readFile(join(bad, 'tokenizer.json'), 'utf8'));
    await writeFile(
      join(bad, 'tokenizer.json'),
      JSON.stringify({ ...tok, model: { ...tok.model, type: 'WordPiece' } }),
    );
    const out = join(dir, 'x.gguf');
    await expect(exportGguf(bad, out)).rejects.toThrow(/tokenizer\.json.*only BPE tokenizers/);
    const cfg = JSON.parse(await readFile(join(bad, 'config.json'), 'utf8'));
    await writeFile(
      join(bad, 'config.json'),
      JSON.stringify({ ...cfg, architectures: ['MistralForCausalLM'], model_type: 'mistral' }),
    );
    await expect(exportGguf(bad, out)).rejects.toBeInstanceOf(InputError);
    await expect(exportAction({ model: modelDir('gqa-f32'), gguf: out, ggufType: 'q3_k' })).rejects.toThrow(
      /gguf-type.*expected f32, f16, bf16, q8_0, q4_0/,
    );
    await expect(exportAction({ model: modelDir('gqa-f32'), gguf: join(dir, 'x.bin') })).rejects.toThrow(
      /ending in \.gguf/,
    );
    await expect(readFile(out)).rejects.toThrow(/ENOENT/);
  });
});

describe('finllm eval --model FILE.gguf', () => {
  it('an f32 GGUF of base + adapter gives the golden merged losses of transformers (gqa-f32, within 1e-4); a q4_0 one a measurably different loss', async () => {
    const dir = await tempDir();
    const g = golden.models['gqa-f32'];
    const data = join(dir, 'd.jsonl');
    await writeFile(
      data,
      golden.texts
        .slice(0, 5)
        .map((text) => JSON.stringify({ text }))
        .join('\n') + '\n',
    );
    const run = async (type: 'f32' | 'q4_0') => {
      const file = join(dir, `m-${type}.gguf`);
      await exportAction(
        { model: modelDir('gqa-f32'), adapter: adapterDir('gqa-f32'), gguf: file, ggufType: type },
        () => undefined,
      );
      let printed = '';
      await evalAction({ model: file, data, json: true, metrics: 'perplexity' }, (s) => (printed += s));
      return JSON.parse(printed) as { loss: number; per_example: { loss: number }[] };
    };
    const f32 = await run('f32');
    f32.per_example.forEach((e, i) => {
      expect(Math.abs(e.loss - g.merged_loss[i]!), `text ${i}`).toBeLessThan(1e-4);
    });
    const q4 = await run('q4_0');
    expect(Math.abs(q4.loss - f32.loss)).toBeGreaterThan(1e-6); // quantized ffn_down is really read back
    expect(Math.abs(q4.loss - f32.loss) / f32.loss).toBeLessThan(0.05);
    await expect(evalAction({ model: join(dir, 'missing.gguf'), data })).rejects.toThrow(
      /missing\.gguf.*GGUF file not found/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// A reader for the subset of Go text/template the Modelfile uses: text, {{ .Content }},
// {{ "literal" }}, {{ range .Messages }} ... {{ end }}, {{ if eq .Role "x" }} ... {{ else if eq
// .Role "y" }} ... {{ end }}. Written from Go's documented semantics, independently of the
// generator; anything else throws.

type Node =
  | { text: string }
  | { content: true }
  | { range: Node[] }
  | { branches: { role: string | null; body: Node[] }[] };

function parseGo(src: string): Node[] {
  const tokens = src.split(/(\{\{.*?\}\})/s).filter((t) => t !== '');
  let i = 0;
  const block = (stop: RegExp[]): Node[] => {
    const out: Node[] = [];
    while (i < tokens.length) {
      const t = tokens[i]!;
      if (!t.startsWith('{{')) {
        out.push({ text: t });
        i++;
        continue;
      }
      const action = t.slice(2, -2).trim();
      if (stop.some((s) => s.test(action))) return out;
      i++;
      let m: RegExpMatchArray | null;
      if (action === '.Content') out.push({ content: true });
      else if ((m = action.match(/^"(.*)"$/))) out.push({ text: JSON.parse(`"${m[1]}"`) as string });
      else if (action === 'range .Messages') {
        out.push({ range: block([/^end$/]) });
        i++;
      } else if ((m = action.match(/^if eq \.Role "(\w+)"$/))) {
        const branches = [{ role: m[1]!, body: block([/^else/, /^end$/]) }];
        for (;;) {
          const a = tokens[i++]!.slice(2, -2).trim();
          if (a === 'end') break;
          const e = a.match(/^else if eq \.Role "(\w+)"$/);
          if (!e) throw new Error(`unsupported action ${a}`);
          branches.push({ role: e[1]!, body: block([/^else/, /^end$/]) });
        }
        out.push({ branches });
      } else throw new Error(`unsupported action ${action}`);
    }
    return out;
  };
  return block([]);
}

function renderGo(nodes: Node[], messages: readonly ChatMessage[], msg?: ChatMessage): string {
  return nodes
    .map((n) => {
      if ('text' in n) return n.text;
      if ('content' in n) return msg!.content;
      if ('range' in n) return messages.map((m) => renderGo(n.range, messages, m)).join('');
      const b = n.branches.find((x) => x.role === msg!.role);
      return b ? renderGo(b.body, messages, msg) : '';
    })
    .join('');
}

describe('Ollama Modelfile', () => {
  it('TEMPLATE renders a multi-turn chat exactly as the Jinja chat template (minus the BOS llama.cpp adds); stops include <|eot_id|>', async () => {
    const dir = await tempDir();
    const tmplFile = join(dir, 'chat.jinja');
    await writeFile(tmplFile, TEST_CHAT_TEMPLATE);
    const out = join(dir, 'out', 'fin.gguf');
    let printed = '';
    await exportAction(
      { model: FIN_BASE, gguf: out, ggufType: 'q8_0', ollama: true, chatTemplate: tmplFile },
      (s) => (printed += s),
    );
    expect(printed).toMatch(/Modelfile written/);
    const text = await readFile(join(dir, 'out', 'Modelfile'), 'utf8');
    expect(text.split('\n')[0]).toBe('FROM ./fin.gguf');
    const template = text.match(/^TEMPLATE """([\s\S]*)"""$/m)![1]!;
    const tok = await LlamaTokenizer.load(FIN_BASE, { chatTemplateFile: tmplFile });
    // Ollama renders with the generation prompt (it always asks for the next answer).
    const jinja = tok.applyChatTemplate(PROBE_CHAT, { addGenerationPrompt: true });
    expect('<s>' + renderGo(parseGo(template), PROBE_CHAT)).toBe(jinja);
    expect(text).toContain('PARAMETER stop "</s>"');
    expect(text).toContain('PARAMETER stop "<|eot_id|>"');
    // The chat template travels in the GGUF too.
    const g = await GgufFile.open(out);
    expect(g.get('tokenizer.chat_template')).toBe(TEST_CHAT_TEMPLATE);
    await g.close();
  });

  it('a template that is not a per-message wrap gets no TEMPLATE line (and says so)', async () => {
    const dir = await tempDir();
    const f = join(dir, 't.jinja');
    // Llama 2 style: the system prompt is folded into the first user turn.
    await writeFile(
      f,
      "{% for m in messages %}{% if m['role'] == 'system' %}{% set sys = m['content'] %}{% elif loop.index0 == 1 %}[INST] <<SYS>>{{ sys }}<</SYS>> {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{% endif %}{% endfor %}",
    );
    const tok = await LlamaTokenizer.load(FIN_BASE, { chatTemplateFile: f });
    const mf = buildModelfile('m.gguf', tok, '<s>', '</s>');
    expect(mf.template).toBeNull();
    expect(mf.note).toMatch(/not a plain per-message wrap/);
    expect(mf.text).toBe('FROM ./m.gguf\nPARAMETER stop "</s>"\n');
  });
});
