"""`chatterbox-parity pack`: the Swift fixture pack.

What a Swift (MLX Swift) port's unit tests load, one folder:

  DIR/manifest.json                 every tensor: name, shape, dtype, role, meaning, tolerance
  DIR/README.md                     how to load and compare (written from README_TEXT below)
  DIR/cases/<case>/<stage>.safetensors   per component of a reference case (full-size synthetic
                                    checkpoint): the stage's inputs + expected outputs + random draws
  DIR/cases/<case>/assets/          the case's audio clip and the checkpoint's tokenizer files
                                    (cases of the English model and of Chatterbox Turbo, stages turbo_*)
  DIR/<tiny set>/<stage>.safetensors     the same components from TINY seeded ORIGINAL modules: the
                                    English `tiny/`, Chatterbox Turbo's `tiny_turbo/`, Multilingual's `tiny_mtl/`
  DIR/<tiny set>/weights/torch/*.safetensors   the tiny modules' original state dicts (hub layout)
  DIR/<tiny set>/weights/mlx/*.safetensors     the same converted by mlx_impl.convert.*.sanitize

A tiny set is made by the project's own export (reference.export.export_case, export_turbo_case,
export_mtl_case) run on a ChatterboxTTS / ChatterboxTurboTTS / ChatterboxMultilingualTTS assembled from the
ORIGINAL classes with small sizes registered at
runtime, so its tensors have the registry's names and meanings; the builders are parity/pack_tiny*.py.
`verify_tiny` runs the MLX stage runners (parity/stages) on it with MLX models of the same tiny sizes
(tests/test_pack.py asserts the result).

The manifest is validated against parity/pack_schema.json, and the folder is written atomically
(temporary sibling, then rename).
"""
from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from . import ROOT, registry
from .errors import ParityError

PACK_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("pack_schema.json")
MANIFEST = "manifest.json"
DEFAULT_T3_STEPS = 6  # decoding steps of per-step T3 logits kept for full-size cases

# Tensors of other stages (or of the stage itself) that a component's unit test is fed.
COMPONENT_INPUTS: Dict[str, List[str]] = {
    "text": [],
    "audio": [],
    "ve": ["audio.wav_16k"],
    "s3tok": ["audio.wav_16k"],
    "embed_ref": ["audio.wav_24k"],
    "t3_cond": ["ve.speaker_emb", "s3tok.prompt_tokens", "text.tokens"],
    "t3_decode": ["t3.input_embeds", "t3.text_tokens"],
    "t3_greedy": ["t3.input_embeds", "t3.text_tokens"],
    "flow": ["flow.speech_tokens", "embed_ref.prompt_token", "embed_ref.prompt_feat", "embed_ref.xvector"],
    "hift": ["flow.output_mel"],
    # Chatterbox Turbo (registry model turbo): no T3 text-token checkpoint of its own (no [START]/[STOP])
    "turbo_text": [],
    "turbo_audio": [],
    "turbo_ve": ["turbo.audio.wav_16k"],
    "turbo_s3tok": ["turbo.audio.wav_16k"],
    "turbo_embed_ref": ["turbo.audio.wav_24k"],
    "turbo_t3_cond": ["turbo.ve.speaker_emb", "turbo.s3tok.prompt_tokens", "turbo.text.tokens"],
    "turbo_t3_decode": ["turbo.t3.input_embeds", "turbo.text.tokens"],
    "turbo_t3_greedy": ["turbo.t3.input_embeds", "turbo.text.tokens"],
    "turbo_flow": ["turbo.t3.speech_tokens", "turbo.embed_ref.prompt_token", "turbo.embed_ref.prompt_feat",
                   "turbo.embed_ref.xvector"],
    "turbo_hift": ["turbo.flow.output_mel"],
    # voice conversion (registry model vc): the target's reference dict and the source's tokens feed the flow
    "vc_target": [],
    "vc_source": [],
    "vc_flow": ["vc.source_tokens", "vc.ref_dict.prompt_token", "vc.ref_dict.prompt_feat", "vc.ref_dict.embedding"],
    "vc_hift": ["vc.output_mel"],
    # Chatterbox Multilingual (registry model mtl): the English components renamed "mtl."; the flow is fed T3's
    # row (its hand-over, drop_invalid_tokens, is the flow stage's own mtl.flow.speech_tokens)
    "mtl_text": [],
    "mtl_audio": [],
    "mtl_ve": ["mtl.audio.wav_16k"],
    "mtl_s3tok": ["mtl.audio.wav_16k"],
    "mtl_embed_ref": ["mtl.audio.wav_24k"],
    "mtl_t3_cond": ["mtl.ve.speaker_emb", "mtl.s3tok.prompt_tokens", "mtl.text.tokens"],
    "mtl_t3_decode": ["mtl.t3.input_embeds", "mtl.t3.text_tokens"],
    "mtl_t3_greedy": ["mtl.t3.input_embeds", "mtl.t3.text_tokens"],
    "mtl_flow": ["mtl.t3.speech_tokens", "mtl.embed_ref.prompt_token", "mtl.embed_ref.prompt_feat",
                 "mtl.embed_ref.xvector"],
    "mtl_hift": ["mtl.flow.output_mel"],
}
# The models whose cases the pack carries (registry models): the English ChatterboxTTS, Chatterbox Turbo,
# voice conversion (ChatterboxVC) and Chatterbox Multilingual.
PACK_MODELS = ("tts", "turbo", "vc", "mtl")
# A case's clips (copied to assets/): the key of each in the case, and the component that reads it
CLIP_KEYS = {"audio": ("audio", "turbo_audio", "mtl_audio"), "source": ("vc_source",), "target_voice": ("vc_target",)}
TEXT_STAGES, AUDIO_STAGES = ("text", "turbo_text", "mtl_text"), ("audio", "turbo_audio", "mtl_audio")
# The MLX stage runners whose docstrings say how each sub-step is fed (the isolated mode).
RUNNERS: Dict[str, List[str]] = {
    "text": ["text"], "audio": ["audio"], "ve": ["ve"], "s3tok": ["s3tok"],
    "embed_ref": ["embed_ref_tokens", "embed_ref_speaker"], "t3_cond": ["t3_cond"], "t3_decode": ["t3_decode"],
    "t3_greedy": ["t3_greedy"], "flow": ["flow"], "hift": ["hift"],
    **{f"turbo_{s}": [f"turbo_{s}"] for s in ("text", "audio", "ve", "s3tok", "embed_ref", "t3_cond", "t3_decode",
                                              "t3_greedy", "flow", "hift")},
    **{f"vc_{s}": [f"vc_{s}"] for s in ("target", "source", "flow", "hift")},
    **{f"mtl_{s}": [f"mtl_{s}"] for s in ("text", "audio", "ve", "s3tok", "embed_ref", "t3_cond", "t3_decode",
                                          "t3_greedy", "flow", "hift")},
}
# Case parameters each component needs.
COMPONENT_PARAMS: Dict[str, List[str]] = {
    "t3_cond": ["exaggeration", "cfg_weight"],
    "t3_decode": ["temperature", "cfg_weight", "min_p", "top_p", "repetition_penalty", "max_new_tokens"],
    "t3_greedy": ["temperature", "cfg_weight", "min_p", "top_p", "repetition_penalty", "max_new_tokens"],
    "flow": ["n_cfm_timesteps"],
    "turbo_t3_decode": ["temperature", "top_k", "top_p", "repetition_penalty", "max_gen_len"],
    "turbo_t3_greedy": ["max_gen_len"],
    "vc_flow": ["n_cfm_timesteps"],
    "mtl_t3_cond": ["exaggeration", "cfg_weight"],
    "mtl_t3_decode": ["temperature", "cfg_weight", "min_p", "top_p", "repetition_penalty", "max_new_tokens"],
    "mtl_t3_greedy": ["temperature", "cfg_weight", "min_p", "top_p", "repetition_penalty", "max_new_tokens"],
}
# Per-step logits: (n_steps, ...) float32, 8194 wide; full-size cases keep the first steps only.
PER_STEP_LOGITS = ("t3.logits_raw", "t3.logits_cfg", "t3.logits_rep", "t3.logits_temp", "t3.logits_min_p",
                   "t3.logits_top_p", "t3_greedy.logits_cfg",
                   # Chatterbox Turbo: (n_steps, 1, 6563)
                   "turbo.t3.logits_raw", "turbo.t3.logits_temp", "turbo.t3.logits_top_k", "turbo.t3.logits_top_p",
                   "turbo.t3.logits_rep", "turbo.t3_greedy.logits_raw",
                   # Chatterbox Multilingual: as the English ones, plus the AlignmentStreamAnalyzer's output
                   "mtl.t3.logits_raw", "mtl.t3.logits_cfg", "mtl.t3.logits_analyzed", "mtl.t3.logits_rep",
                   "mtl.t3.logits_temp", "mtl.t3.logits_min_p", "mtl.t3.logits_top_p", "mtl.t3_greedy.logits_cfg")
# Tokenizer files of a case's checkpoint copied beside its clip: the English BPE, Turbo's GPT-2 tokenizer, the
# multilingual BPE; the Cangjie mapping only for a Chinese multilingual case (the only language that reads it)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json",
                   "tokenizer_config.json", "grapheme_mtl_merged_expanded_v1.json")
CANGJIE_FILE, CANGJIE_LANGUAGE = "Cangjie5_TC.json", "zh"
README_TEXT = r"""# Chatterbox Swift fixture pack

Made by `chatterbox-parity pack` (chatterbox-parity, parity/pack.py) from the reference fixtures of the
ORIGINAL PyTorch Chatterbox (`chatterbox-tts==0.1.7`). `manifest.json` describes every file and tensor;
`parity/pack_schema.json` (JSON Schema 2020-12) describes the manifest.

## Layout
- `cases/<case>/<stage>.safetensors`: one file per component of a reference case, run with the full-size
  synthetic checkpoint named in `sets.<case>.checkpoint` (regenerate it with
  `chatterbox-parity checkpoint synth --out DIR --seed 0`; its files' sha256 are in the manifest).
  `cases/<case>/assets/` has the case's audio clip and the checkpoint's `tokenizer.json`.
  A set's `model` says which model made it: `tts` (ChatterboxTTS), `turbo` (Chatterbox Turbo), `vc`
  (ChatterboxVC) or `mtl` (Chatterbox Multilingual): sections below.
- `tiny/<stage>.safetensors`: the same components made by tiny, seeded ORIGINAL modules
  (`sets.tiny.config`), with their weights in `tiny/weights/torch/` (the original state dicts, hub
  layout: `ve.safetensors`, `t3_cfg.safetensors`, `s3gen.safetensors`) and `tiny/weights/mlx/` (the same,
  converted by `mlx_impl/convert/*.py` `sanitize`: this is what a port loads). A Swift unit test of a
  component builds the module with the tiny sizes, loads `tiny/weights/mlx/...` and runs in seconds.
  The MLX reference reproduces every tiny expected tensor at >= 100 dB SNR (integers exactly):
  chatterbox-parity's tests/test_pack.py.
- `tiny_turbo/`: the same for Chatterbox Turbo (`sets.tiny_turbo`, `model: turbo`, components `turbo_ve` ...
  `turbo_hift`): T3 on a 2-layer, 64-wide GPT-2 with from_local's Turbo settings and a 512-row text table,
  S3Gen with MeanFlow at the English tiny sizes; hub files `ve.safetensors`, `t3_turbo_v1.safetensors`,
  `s3gen_meanflow.safetensors` in `tiny_turbo/weights/torch/`, converted in `tiny_turbo/weights/mlx/`
  (`t3.safetensors` by `mlx_impl/convert/t3_turbo.py`). Every weight file's sha256 is in the manifest.
- `tiny_mtl/`: the same for Chatterbox Multilingual (`sets.tiny_mtl`, `model: mtl`, components `mtl_ve` ...
  `mtl_hift`): the multilingual T3 (2454-row text table) on a 14-layer LLaMA of 16 heads (64 wide, head_dim 4),
  so that the AlignmentStreamAnalyzer's heads (12, 15), (13, 11), (9, 2) exist and it runs as in the full
  model: `mtl.t3.analysis` / `mtl.t3_greedy.analysis` hold its decisions (exact); the English tiny VoiceEncoder
  and S3Gen. Hub files `ve`, `t3_mtl23ls_v2`, `s3gen` in `tiny_mtl/weights/torch/` (the hub's `ve.pt` /
  `s3gen.pt` state dicts stored as safetensors), converted in `tiny_mtl/weights/mlx/`; a port fuses nothing (the
  MLX reference fuses q/k/v and gate/up after loading, bit-identically).

## Loading a fixture in Swift
```swift
import MLX
let arrays = try loadArrays(url: packURL.appending(path: "tiny/flow.safetensors"))
let mu = arrays["flow.mu"]!                       // name, shape, dtype as in manifest.json
let weights = try loadArrays(url: packURL.appending(path: "tiny/weights/mlx/s3gen.safetensors"))
```
Each component entry of the manifest (`sets.<set>.components.<stage>`) lists its tensors with:
- `name` (the key in the safetensors file; the checkpoint name of parity/checkpoints.toml), `shape`, `dtype`;
- `role`: `input` (feed it), `expected` (compare your output with it), `random` (a recorded random draw:
  replay it instead of drawing), `reference` (the reference's own measurement that a verdict uses, not an
  output to compare: `t3.sampling_margin` / `t3_greedy.sampling_margin`, per decoding step the smallest
  logit perturbation that changes the step's token; a token differing from the reference's is excused
  only where it is within the registry's `flip_margin`);
- `source` and `layout`: where the original captured it and its axes;
- `tolerance`: per precision (`fp32`, `fp16`, `bf16`, `q4`), the registry's criterion (`snr_db` minimum,
  or `exact` minimum match rate for integer tensors; `cosine`/`max_abs` where given);
- `subset`, when only part of the reference tensor is stored (full-size per-step T3 logits: the first
  steps only; `full_shape` gives the reference's shape).
`params` holds the case parameters the component needs (cfg_weight, temperature, ...). `notes` says how
each sub-step is fed in isolation (the MLX runners' rule): each step takes the reference's own input,
which is the previous step's `expected` tensor, so an error stays local to one step.

dtypes: float32, int32, uint8 (`text.normalized_utf8`), float64 (`t3.uniform_draws` and the margins: MLX's float64
is CPU-only; keep the draw in double precision when you compute `u * cdf[-1]`).

Channels-last: MLX convolutions are channels-last (`(B, T, C)`), but every stored tensor keeps the
ORIGINAL layout of the checkpoint (mel `(1, 80, T)`, prompt_feat `(1, T, 80)`, fbank `(1, T, 80)`,
...; see `layout`). Transpose inside the module, as mlx_impl does. MLX-layout weights are already
channels-last: Conv1d `(O, K, I)`, ConvTranspose1d `(O, K, I)`, Conv2d `(O, H, W, I)`; weight-norm folded;
LSTM biases summed; names follow mlx_impl's modules (see docs/CONVERTER.md of chatterbox-parity).

## Comparing: SNR as parity/metrics.py computes it
In float64, over the entries finite in both tensors (an entry that is +-inf or nan in exactly one of them,
or non-finite in both but different, is a failure of its own; `-inf` at the same place matches: filtered
logits are `-inf`):
```
err = out - ref;  snr_db = -10 * log10( sum(err^2) / sum(ref^2) )    // +inf when err == 0
```
Shapes must be equal. Integer tensors: exact-match rate = mean(out == ref) over all entries. Pass when
`snr_db >= tolerance.snr_db` (and `cosine`, `max_abs` when present) or `exact >= tolerance.exact`.

## Chatterbox Turbo cases (`model: turbo`)
Made by the original `ChatterboxTurboTTS.generate` on the synthetic Turbo checkpoint (regenerate it with
`python -m reference.synth_turbo_checkpoint`; hashes in `sets.<case>.checkpoint`). Components `turbo_text` ...
`turbo_hift`, tensors `turbo.<the English name>`; `assets/` has the GPT-2 tokenizer files (`vocab.json`,
`merges.txt`, `tokenizer_config.json`, ...). What differs from the English cases:
- text: Turbo's punc_norm, then the GPT-2 tokenizer's ids as they are (no [START]/[STOP], no CFG copy);
- audio: the clip loudness-normalised to -27 LUFS (`turbo.audio.wav_24k`) before the 16 kHz copy;
- T3 (GPT-2 medium, no CFG): per step the speech head's logits (`turbo.t3.logits_raw`, 6563 wide), then
  temperature, top-k (1000), top-p (0.95), the repetition penalty (1.2; its history the start token at step
  0, then the drawn tokens), in that order; the draw is the inverse CDF below on softmax of `turbo.t3.logits_rep`
  with `turbo.t3.uniform_draws`; stop token 6562, never checked at step 0;
- flow: MeanFlow, 2 Euler steps (t = 0 -> 0.5 -> 1, the estimator also gets r), from `turbo.flow.start_noise`
  (the whole start x: the original's two draws already combined), no CFG batch;
- `turbo.flow.speech_tokens` = the drawn tokens < 6561, then three 4299 (S3GEN_SIL).

## Chatterbox Multilingual cases (`model: mtl`)
Made by the original `ChatterboxMultilingualTTS.generate(text, language_id, audio_prompt_path=clip)` on the
synthetic multilingual checkpoint (regenerate it with `chatterbox-parity checkpoint synth --model mtl`; hashes in
`sets.<case>.checkpoint`). Components `mtl_text` ... `mtl_hift`, tensors `mtl.<the English name>` plus the ones
below; the case entry and the `mtl_text` component carry `language`; `assets/` has the clip and
`grapheme_mtl_merged_expanded_v1.json` (the multilingual BPE; a Chinese case also `Cangjie5_TC.json`, the Cangjie
mapping its front end reads). The modules are the English model's but for T3's 2454-entry text table; what differs:
- text: the multilingual punc_norm (`mtl.text.normalized_utf8`), then MTLTokenizer's front end, whose result
  `mtl.text.preprocessed` (UTF-8) is the string its BPE encodes: lower case, NFKD (a German umlaut is the base
  letter + U+0308), the language's own step (zh: Cangjie codes of pkuseg words; ja: kana; ...), the `[xx]` tag
  prepended, spaces as `[SPACE]`; `mtl.text.tokens` its ids; `mtl.t3.text_tokens` adds [START] 255 / [STOP] 0
  and ALWAYS the CFG copy (2 rows; the English model only where cfg_weight > 0);
- conditioning: the S3 prompt from the first 6 s (150 tokens), S3Gen's reference from the first 10 s, no
  loudness step;
- T3 (LLaMA 520M, CFG 0.5): per step the raw logits (`mtl.t3.logits_raw`, 2 rows), the CFG mix
  (`mtl.t3.logits_cfg`), then the AlignmentStreamAnalyzer (`mtl.t3.logits_analyzed`: the stop token 6562 at
  -2**15 while suppressed; a row of -2**15 with the stop token at +2**15 where it forces the end), then the
  repetition penalty (2.0), temperature, min-p (0.05), top-p (1.0), in that order; the draw is the inverse CDF
  below on softmax of `mtl.t3.logits_top_p`. The analyzer reads the attention of (layer, head) = (12, 15),
  (13, 11), (9, 2) of the conditional row over the text columns: `mtl.t3.alignment` the rows it appended,
  `mtl.t3.analysis` (`mtl.t3_greedy.analysis`) its decisions per step, int32 columns `text_position`,
  `cur_text_posn`, `false_start`, `complete`, `long_tail`, `alignment_repetition`, `token_repetition`,
  `discontinuity`, `eos_suppressed`, `forced_eos`: a port's analyzer must give them exactly;
- flow: `mtl.flow.speech_tokens` = drop_invalid_tokens of T3's row (no `< 6561` filter), 10 CFG Euler steps as
  the English flow, from `mtl.flow.start_noise`; HiFT as the English one.

## Voice conversion cases (`model: vc`)
Made by the original `ChatterboxVC.generate(source, target_voice_path=target)` on the English synthetic
checkpoint (its `s3gen.safetensors`): `vc_target` (the target clip at 24 kHz and S3Gen's reference dict, as
the English `embed_ref`), `vc_source` (the source clip at 16 kHz, its log-mel and speech tokens, no max_len),
`vc_flow` (the English flow on the source tokens, 10 CFG Euler steps, `vc.flow.start_noise` replayed) and
`vc_hift` (`vc.wav`). Both clips are in `assets/` (`audio_file` of `vc_source` / `vc_target`); no text.

## Replaying the random draws
- **T3 sampling** (`t3.uniform_draws`, float64, one per decoding step): the original's
  `torch.multinomial` was replaced by an inverse-CDF sampler on these uniforms. At step i, with `probs`
  = softmax of `t3.logits_top_p[i]` (float32):
  `cdf = cumsum(float64(probs)); token = min(searchsorted(cdf, u[i] * cdf[-1], side: right), V - 1)`
  (V = 8194: the first index whose cdf is > u * cdf[-1]). Greedy (`t3_greedy`): the first index of the
  maximum probability. Decoding stops after the stop token 6562 or `max_new_tokens` steps.
  Teacher forcing: feed `t3.speech_tokens` back to compare the per-step logits even past a divergence.
- **Flow matching start noise** (`flow.start_noise`, `(1, 80, n_mel)`): the `torch.randn_like(mu)` of
  CausalConditionalCFM.forward; use it as the x of the first Euler step instead of drawing.
- **SineGen** (HiFT source): `hift.sine_phase` `(1, 9, 1)` is the Uniform(-pi, pi) phase per harmonic,
  harmonic 0 already zeroed; `hift.sine_noise` `(1, 9, n_samples)` is the noise term the original added
  (`noise_amp * randn_like(sine_waves)`, noise_amp depending on voicing): add it as is. The phase is
  `2 pi * (cumsum(f0 * k / sr) % 1)` accumulated in float64 (torch's CPU cumsum does), plus the draw.
"""


# ----------------------------------------------------------------------------- manifest entries
def signature_section() -> str:
    """The README's table for a failing port: per mutation of `chatterbox-parity mutate` (a bug a
    real port made), which checkpoint fails first and how (from the latest mutation record)."""
    from .mutate import load_record, signature_rows

    rec = load_record()
    if rec is None:
        return ""
    return ("\n## Failure signatures: which checkpoint fails first, for which bug\n"
            "Each row is a bug that a real port of Chatterbox made, planted in the MLX reference "
            "(`chatterbox-parity mutate`, case named in its record) and run through these fixtures in isolation "
            "(each step fed the reference's input; end to end where isolation did not catch it). Find your port's first failing checkpoint "
            "(in pipeline order) and its value; the rows with the same symptom name the likely causes.\n\n"
            + "\n".join(signature_rows(rec)) + "\n")


def tolerance_dict(cp) -> dict:
    out = {}
    for prec, tol in cp.tolerances.items():
        d = {k: getattr(tol, k) for k in ("snr_db", "cosine", "max_abs", "exact") if getattr(tol, k) is not None}
        if tol.measured is not None:
            d["measured"] = tol.measured
        if tol.reason is not None:
            d["reason"] = tol.reason
        out[prec] = d
    return out


def tensor_entry(name: str, a: np.ndarray, role: str, subset: Optional[dict] = None) -> dict:
    from .fixtures import tensor_sha256

    cp = registry.load()[name]
    e = {"name": name, "shape": list(a.shape), "dtype": str(a.dtype), "role": role, "kind": cp.kind,
         "stage": cp.stage, "source": cp.source, "layout": cp.layout, "tolerance": tolerance_dict(cp),
         "sha256": tensor_sha256(a)}
    if subset is not None:
        e["subset"] = subset
    return e


def role_of(stage: str, name: str) -> str:
    cp = registry.load()[name]
    if cp.random:
        return "random"
    if cp.reference_only:
        return "reference"
    if cp.stage != stage or name in COMPONENT_INPUTS[stage]:
        return "input"
    return "expected"


def runner_notes(stage: str) -> str:
    docs = []
    for mod in RUNNERS[stage]:
        doc = importlib.import_module(f"parity.stages.{mod}").__doc__ or ""
        docs.append(doc.strip())
    return "\n\n".join(docs)


def fixture_tensor(fx, name: str) -> np.ndarray:
    """fx.tensor(name); a fixture file that is missing or unreadable is one ParityError naming it."""
    from safetensors import SafetensorError

    try:
        return fx.tensor(name)
    except (OSError, SafetensorError) as e:
        fname = fx.manifest["tensors"][name]["file"]
        raise ParityError(f"fixture file {Path(fx.root) / fname} (tensor '{name}'): "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}") from None


def component_tensors(fx, stage: str, t3_steps: Optional[int]) -> Dict[str, tuple]:
    """name -> (array, role, subset) of one component of a fixture."""
    reg = registry.load()
    names = list(COMPONENT_INPUTS[stage]) + [c.name for c in reg.by_stage(stage) if c.name not in COMPONENT_INPUTS[stage]]
    out = {}
    for name in names:
        a = np.ascontiguousarray(fixture_tensor(fx, name))
        subset = None
        if name in PER_STEP_LOGITS and t3_steps is not None and a.shape[0] > t3_steps:
            subset = {"axis": 0, "start": 0, "stop": int(t3_steps), "full_shape": list(a.shape),
                      "what": f"the first {t3_steps} decoding steps of {a.shape[0]} (rows are steps; the pack "
                              "keeps it small): compare teacher-forced logits of these steps"}
            a = np.ascontiguousarray(a[:t3_steps])
        out[name] = (a, role_of(stage, name), subset)
    return out


def write_component(fx, stage: str, folder: Path, rel: str, t3_steps: Optional[int]) -> dict:
    from safetensors.numpy import save_file

    tensors = component_tensors(fx, stage, t3_steps)
    save_file({k: v[0] for k, v in tensors.items()}, str(folder / f"{stage}.safetensors"))
    params = {k: fx.params[k] for k in COMPONENT_PARAMS.get(stage, []) if k in fx.params}
    entry = {"file": f"{rel}/{stage}.safetensors", "stage": stage, "params": params,
             "notes": runner_notes(stage),
             "tensors": [tensor_entry(k, a, role, subset) for k, (a, role, subset) in tensors.items()]}
    if stage in TEXT_STAGES:
        entry["text"] = fx.case["text"]
        if "language" in fx.case:
            entry["language"] = fx.case["language"]
    for key, stages in CLIP_KEYS.items():
        if stage in stages:
            entry["audio_file"] = f"{rel}/assets/{Path(fx.case[key]).name}"
    return entry


def write_case_set(fx, folder: Path, rel: str, t3_steps: Optional[int], ckpt_dir: Optional[Path],
                   model: str = "tts") -> dict:
    """A reference case of `model` (a registry model of PACK_MODELS): one component per stage of it."""
    folder.mkdir(parents=True)
    assets = folder / "assets"
    assets.mkdir()
    for key in CLIP_KEYS:
        if key in fx.case:
            shutil.copyfile(ROOT / fx.case[key], assets / Path(fx.case[key]).name)
    text_files = TOKENIZER_FILES + ((CANGJIE_FILE,) if fx.case.get("language") == CANGJIE_LANGUAGE else ())
    for fname in text_files if model != "vc" else ():  # voice conversion reads no text
        if ckpt_dir is not None and (Path(ckpt_dir) / fname).is_file():
            shutil.copyfile(Path(ckpt_dir) / fname, assets / fname)
    comps = {s: write_component(fx, s, folder, rel, t3_steps) for s in registry.load().models[model]}
    return {"model": model, "case": fx.case, "checkpoint": fx.manifest["checkpoint"],
            "versions": fx.manifest["versions"], "driver": fx.manifest.get("driver", {}), "components": comps}


def weights_entry(path: Path, rel: str, layout: str) -> dict:
    from safetensors.numpy import load_file

    from .checkpoint_dir import sha256_file

    w = load_file(str(path))
    return {"file": rel, "layout": layout, "n_tensors": len(w), "bytes": path.stat().st_size,
            "sha256": sha256_file(path), "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in sorted(w.items())}}


def tiny_builders() -> Dict[str, object]:
    """set name -> the module that builds that tiny set (parity/pack_tiny*.py), in pack order."""
    from . import pack_tiny, pack_tiny_mtl, pack_tiny_turbo

    return {m.SET_NAME: m for m in (pack_tiny, pack_tiny_turbo, pack_tiny_mtl)}


def write_tiny_set(builder, fx, ckpt_dir: Path, folder: Path) -> dict:
    """A tiny set (builder: a parity/pack_tiny*.py module): its components, and its weights in the hub's
    layout (the original state dicts) and converted by the project's sanitize functions (MLX layout)."""
    from safetensors.numpy import save_file

    rel = builder.FOLDER
    folder.mkdir(parents=True)
    comps = {s: write_component(fx, s, folder, rel, None) for s in builder.STAGES}
    (folder / "weights" / "torch").mkdir(parents=True)
    (folder / "weights" / "mlx").mkdir(parents=True)
    weights = {"torch": {}, "mlx": {}}
    for fname in builder.TORCH_FILES:
        shutil.copyfile(ckpt_dir / fname, folder / "weights" / "torch" / fname)
        weights["torch"][fname.split(".")[0]] = weights_entry(folder / "weights" / "torch" / fname,
                                                              f"{rel}/weights/torch/{fname}", "torch")
    for fname, w in builder.mlx_weights(ckpt_dir).items():
        save_file({k: np.ascontiguousarray(v) for k, v in w.items()}, str(folder / "weights" / "mlx" / fname))
        weights["mlx"][fname.split(".")[0]] = weights_entry(folder / "weights" / "mlx" / fname,
                                                            f"{rel}/weights/mlx/{fname}", "mlx")
    case = dict(fx.case)
    if Path(case["audio"]).is_absolute():  # an excerpt of a case clip, written to a temporary folder
        case["audio"] = f"{fx.case['about']} (written to a temporary file when packed)"
    return {"model": builder.MODEL, "case": case, "checkpoint": fx.manifest["checkpoint"],
            "versions": fx.manifest["versions"], "driver": fx.manifest.get("driver", {}), "config": builder.CONFIG,
            "weights": weights, "components": comps,
            "not_included": [{"component": k, "reason": v} for k, v in builder.NOT_INCLUDED.items()],
            "notes": builder.NOTES}


# ----------------------------------------------------------------------------- MLX check of the tiny set
class PackFixture:
    """A pack set read like a parity Fixture (what the MLX stage runners need)."""

    def __init__(self, pack_dir: Path, set_name: str):
        from safetensors.numpy import load_file

        self.root = Path(pack_dir)
        m = json.loads((self.root / MANIFEST).read_text())
        self.set = m["sets"][set_name]
        self.case = self.set["case"]
        self.params = self.case["params"]
        self.name = set_name
        self._t = {}
        for comp in self.set["components"].values():
            for k, v in load_file(str(self.root / comp["file"])).items():
                self._t.setdefault(k, v)

    def tensor(self, name):
        return self._t[name]

    def has(self, name):
        return name in self._t

def verify_tiny(pack_dir: Path, set_name: str = "tiny") -> Dict[str, dict]:
    """Run the MLX stage runners (isolated mode) on one tiny set of the pack with MLX models of its tiny
    sizes; return checkpoint -> {"kind", "metrics" (parity.metrics.Metrics)} for every expected tensor."""
    from .metrics import compare
    from .stages import providers

    pack_dir = Path(pack_dir)
    fx = PackFixture(pack_dir, set_name)
    builder = tiny_builders()[set_name]
    models = builder.mlx_models(pack_dir / builder.FOLDER / "weights" / "mlx", fx.set["config"])
    reg = registry.load()
    expected = [t["name"] for c in fx.set["components"].values() for t in c["tensors"] if t["role"] == "expected"]
    outputs = {}
    with builder.runners_with(models):
        for mod in sorted({providers()[n] for n in expected if n in providers()}, key=lambda m: m.__name__):
            outputs.update(mod.run(fx, None))
    return {name: {"kind": reg[name].kind,
                   "metrics": compare(fx.tensor(name), outputs[name], reg[name].kind) if name in outputs else None}
            for name in expected}


# ----------------------------------------------------------------------------- the pack
def validate_manifest(manifest: dict) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    # the most specific error (inside a set's oneOf: the branch that came closest), its message cut short
    e = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(manifest))
    if e is not None:
        path = "/".join(str(p) for p in e.absolute_path)
        message = e.message if len(e.message) <= 300 else e.message[:300] + "..."
        raise ParityError(f"pack manifest does not match {SCHEMA_FILE.name} at '{path}': {message}")


def pack_cases() -> dict:
    """name -> case of every case the pack can carry: those of fixtures/cases.toml whose model is in PACK_MODELS."""
    from .session import all_cases, case_model

    return {n: c for n, c in all_cases().items() if case_model(c) in PACK_MODELS}


def existing_cases(fx_root: Path) -> List[str]:
    return [c for c in pack_cases() if (fx_root / c / "manifest.json").is_file()]


def check_pack_files(pack_dir: Path) -> int:
    """Every file the manifest lists is there with its size, every tiny set's weight file has its sha256, and
    every component's tensors load with their listed shape, dtype and sha256; the first that is not: one
    ParityError naming the file. Returns the number of component tensors checked."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from .checkpoint_dir import sha256_file
    from .fixtures import tensor_sha256

    pack_dir = Path(pack_dir)
    try:
        m = json.loads((pack_dir / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ParityError(f"pack {pack_dir}: {MANIFEST} unreadable: {e}") from None
    for rel, size in m["files"].items():
        path = pack_dir / rel
        if not path.is_file():
            raise ParityError(f"pack file missing: {path}")
        if path.stat().st_size != size:
            raise ParityError(f"pack file {path}: {path.stat().st_size} bytes, the manifest lists {size}")
    for pset in m["sets"].values():
        for entry in [e for layout in pset.get("weights", {}).values() for e in layout.values()]:
            if sha256_file(pack_dir / entry["file"]) != entry["sha256"]:
                raise ParityError(f"pack file {pack_dir / entry['file']}: its sha256 differs from the manifest's")
    n = 0
    for set_name, pset in m["sets"].items():
        for stage, comp in pset["components"].items():
            path = pack_dir / comp["file"]
            try:
                arrays = load_file(str(path))
            except (OSError, SafetensorError) as e:
                raise ParityError(f"pack file {path}: not a readable safetensors file ({e})") from None
            for t in comp["tensors"]:
                a = arrays.get(t["name"])
                if a is None or tensor_sha256(a) != t["sha256"]:
                    what = "missing" if a is None else "differs from the manifest's sha256"
                    raise ParityError(f"pack file {path}: tensor '{t['name']}' {what}")
                n += 1
    return n


def build_pack(out: Path, cases: Optional[List[str]] = None, *, t3_steps: int = DEFAULT_T3_STEPS, tiny: bool = True,
               log=print) -> Path:
    import sys as _sys

    from .fixtures import default_fixture_root, staged_dir
    from .session import case_model

    _sys.path.insert(0, str(ROOT))
    out = Path(out).resolve()
    fx_root = default_fixture_root()
    known = pack_cases()
    skipped = []
    if cases is None:
        cases = existing_cases(fx_root)
        skipped = [{"case": c, "reason": f"no fixture folder in {fx_root} (export it, or name it with --cases)"}
                   for c in known if c not in cases]
    unknown = [c for c in cases if c not in known]
    if unknown:
        raise ParityError(f"unknown case(s) {unknown}; known: {list(known)}")
    with staged_dir(out) as tmp:
        from .session import ParitySession

        session = ParitySession.create(log=log)
        sets = {}
        for name in cases:
            log(f"[pack] case {name}")
            model = case_model(known[name])
            fx = session.fixture(name)  # exports a missing or stale fixture (slow)
            sets[name] = {"kind": "case", **write_case_set(fx, tmp / "cases" / name, f"cases/{name}", t3_steps,
                                                           session.ckpt_for(model).path, model)}
        tiny_omitted = []
        if tiny:
            for set_name, builder in tiny_builders().items():
                log(f"[pack] {set_name}: building the tiny modules and exporting")
                with tempfile.TemporaryDirectory(prefix=f"pack-{set_name}-") as work:
                    tfx, tckpt = builder.make_fixture(Path(work), log=lambda m: log(f"[pack] {m}"))
                    sets[set_name] = {"kind": "tiny", **write_tiny_set(builder, tfx, tckpt, tmp / builder.FOLDER)}
        manifest = {
            "pack_version": PACK_VERSION,
            "generated_by": "chatterbox-parity pack (parity/pack.py)",
            "registry": {"stages": registry.load().stages, "file": "parity/checkpoints.toml",
                         "models": {m: registry.load().models[m] for m in PACK_MODELS}},
            "t3_logit_steps": t3_steps,
            "sets": sets,
            "skipped_cases": skipped,
            "tiny_omitted": tiny_omitted,
            "files": {},
        }
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                manifest["files"][str(p.relative_to(tmp))] = p.stat().st_size
        manifest["total_bytes"] = sum(manifest["files"].values())
        validate_manifest(manifest)
        (tmp / "README.md").write_text(README_TEXT + signature_section())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_json_default) + "\n")
        for p in tmp.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def report_tiny(out: Path, set_name: str) -> int:
    """verify_tiny's verdict per expected tensor of one tiny set, printed; returns the number not reproduced
    (>= 100 dB SNR, integers exact)."""
    bad = 0
    for name, r in verify_tiny(out, set_name).items():
        met = r["metrics"]
        line = "not computed" if met is None else met.headline(r["kind"])
        ok = met is not None and (met.exact == 1.0 if r["kind"] == "int" else (met.snr_db >= 100.0 and not met.nonfinite_mismatch))
        bad += not ok
        print(f"  {set_name} {name}: {line}{'' if ok else '  FAIL'}")
    return bad


def cmd_pack(args):
    out = build_pack(args.out, args.cases, t3_steps=args.t3_steps, tiny=not args.no_tiny)
    m = json.loads((out / MANIFEST).read_text())
    print(f"wrote {out}: {len(m['files'])} files, {m['total_bytes'] / 1e6:.1f} MB; sets: {', '.join(m['sets'])}")
    for s in m["skipped_cases"]:
        print(f"  skipped case {s['case']}: {s['reason']}")
    if not args.verify:
        return
    print(f"  files: {check_pack_files(out)} tensors match the manifest")
    bad = sum(report_tiny(out, name) for name, s in m["sets"].items() if s["kind"] == "tiny")
    if bad:
        raise ParityError(f"{bad} tiny tensors not reproduced by the MLX implementation")


def register(sub):
    p = sub.add_parser("pack", help="write the Swift fixture pack (case components + tiny seeded variants)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the pack into (required)")
    p.add_argument("--cases", nargs="+", default=None,
                   help="cases to include (default: those whose fixture folder exists; others are exported, slowly)")
    p.add_argument("--t3-steps", type=int, default=DEFAULT_T3_STEPS,
                   help=f"decoding steps of full-size per-step T3 logits to keep (default {DEFAULT_T3_STEPS})")
    p.add_argument("--no-tiny", action="store_true", help="leave out the tiny seeded variants")
    p.add_argument("--verify", action="store_true",
                   help="then check every file against the manifest and that mlx_impl reproduces the tiny set")
    p.set_defaults(fn=cmd_pack)
