"""Reference export of Chatterbox Multilingual: runs the ORIGINAL ChatterboxMultilingualTTS on one multilingual
case and writes every `mtl.*` parity checkpoint (parity/checkpoints.toml, model mtl).

The run is the original's own: `ChatterboxMultilingualTTS.from_local(ckpt, "cpu")`, `torch.manual_seed(case.seed)`,
then `generate(text, language_id, audio_prompt_path=clip, ...)` with the case's arguments (generate()'s
defaults: fixtures/cases.toml [mtl_defaults]), with two differences, both recorded in the manifest:
  - `T3.inference` is bounded to the case's `max_new_tokens` by a wrapper (generate() passes 1000);
  - `torch.multinomial` is replaced, during the run, by `RecordedSampler` (inverse CDF on a recorded
    uniform) so that the draws can be replayed. A second `T3.inference` on the same conditionals and text
    tokens takes the argmax (greedy reference).
The front end runs offline as tests/test_mtl_checkpoint.py runs it: the hub in offline mode (the Cangjie
mapping is the folder's hub-cache copy) and $PKUSEG_HOME at the folder's pkuseg/ where it has one.
Hooks record (reference/export.py's helpers, the checkpoints renamed "mtl." + the English name):
  - prepare_conditionals: the librosa load and resample of chatterbox/mtl_tts.py, the VoiceEncoder, the S3
    tokenizer's T3 prompt and S3Token2Mel.embed_ref (record_conditioning's hooks);
  - the text: the multilingual punc_norm, the string MTLTokenizer hands to its BPE (lower case, NFKD, the
    language's own step, the [xx] tag, [SPACE]), the ids; which language step ran and what it changed;
  - T3: the conditioning encoder, the input embeddings, per step the speech head's logits, the CFG mix (the
    AlignmentStreamAnalyzer's input), the analyzer's output and its decisions (its own locals at the end of
    each step, read by a profile hook, and the alignment row it appended), each logits processor's output;
  - S3Gen: record_s3gen's flow and HiFT hooks, the tokens s3gen.inference gets, its output (before the
    watermark, which generate() then applies).
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

from parity.cases import MtlCase
from parity.errors import ParityError

from .export import (_LibrosaProxy, checkpoint_meta, from_local_or_error, greedy_margins, package_versions,
                     record_conditioning, record_s3gen, record_t3, sampling_margins, sanity_check,
                     validate_case_inputs, write_case_fixture)
from .recording import ModelRecorder, RecordedSampler, Recorder, patched, wrap_method

MTL_EXPORT_VERSION = "mtl-1"
# the AlignmentStreamAnalyzer's decisions per step: columns of mtl.t3.analysis (int32), in this order
ANALYSIS_COLUMNS = ("text_position", "cur_text_posn", "false_start", "complete", "long_tail", "alignment_repetition",
                    "token_repetition", "discontinuity", "eos_suppressed", "forced_eos")
EOS_LOGIT = 2 ** 15  # the analyzer's +-2**15 (chatterbox/models/t3/inference/alignment_stream_analyzer.py)
# the original tokenizer module's language steps (chatterbox/models/tokenizers/tokenizer.py), by language
LANGUAGE_STEPS = {"ja": "hiragana_normalize", "he": "add_hebrew_diacritics", "ko": "korean_normalize",
                  "ru": "add_russian_stress"}
T3_STEP_KEYS = ("logits_raw", "logits_cfg", "logits_analyzed", "logits_rep", "logits_temp", "logits_min_p",
                "logits_top_p")


@contextlib.contextmanager
def offline_front_end(ckpt):
    """The hub out of reach (the Cangjie mapping read from the folder's hub cache, as offline users get it)
    and spacy-pkuseg's model from the folder's pkuseg/ where it has one (tests/test_mtl_checkpoint.py)."""
    from huggingface_hub import constants

    from .mtl_data import pkuseg_home

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(constants, "HF_HUB_OFFLINE", True))
        home = ckpt.path / "pkuseg"
        if home.is_dir():
            stack.enter_context(pkuseg_home(home))
        yield


def load_original_mtl(ckpt, device: str = "cpu"):
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    with offline_front_end(ckpt):
        return from_local_or_error(ChatterboxMultilingualTTS, ckpt, device)


def generate_kwargs(params: dict) -> dict:
    """The case's arguments of ChatterboxMultilingualTTS.generate (max_new_tokens is T3.inference's)."""
    return {k: v for k, v in params.items() if k != "max_new_tokens"}


def validate_mtl_case_inputs(case: MtlCase) -> None:
    from chatterbox.mtl_tts import SUPPORTED_LANGUAGES

    validate_case_inputs(case)
    if case.language.lower() not in SUPPORTED_LANGUAGES:  # generate() raises ValueError on it
        raise ParityError(f"multilingual case '{case.name}': language '{case.language}' is not one of "
                          f"ChatterboxMultilingualTTS's: {', '.join(SUPPORTED_LANGUAGES)}")
    if int(case.params["max_new_tokens"]) < 1:
        raise ParityError(f"multilingual case '{case.name}': max_new_tokens {case.params['max_new_tokens']} must be >= 1")


# ----------------------------------------------------------------------------- text
class _BPEProxy:
    """Stands in for MTLTokenizer.tokenizer (the `tokenizers` BPE): records the string encode() hands it."""

    def __init__(self, real, on_encode):
        self._real, self._on_encode = real, on_encode

    def __getattr__(self, name):
        return getattr(self._real, name)

    def encode(self, txt, *a, **k):
        self._on_encode(txt)
        return self._real.encode(txt, *a, **k)


class _StepProxy:
    """Stands in for a language step (a function, or the Cangjie converter object): records its input and output."""

    def __init__(self, name, real, steps: list):
        self._name, self._real, self._steps = name, real, steps

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __call__(self, text, *a, **k):
        out = self._real(text, *a, **k)
        self._steps.append({"step": self._name, "input": text, "output": out, "changed": out != text})
        return out


def utf8_tensor(text: str):
    import torch

    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


@contextlib.contextmanager
def record_mtl_front(tts, rec: Recorder, language_steps: list):
    """prepare_conditionals (the clip: load, 16 kHz copy; VE, S3 prompt tokens, embed_ref) and the text
    (punc_norm, the BPE's input string, the ids, the language step)."""
    import librosa
    import torch
    import chatterbox.mtl_tts as mtl_mod
    import chatterbox.models.tokenizers.tokenizer as tok_mod

    real_punc_norm = mtl_mod.punc_norm

    def punc_norm(text):
        out = real_punc_norm(text)
        rec.put("text.normalized_utf8", utf8_tensor(out))
        return out

    proxy = _LibrosaProxy(librosa, on_load=lambda out: rec.put("audio.wav_24k", torch.from_numpy(out[0])),
                          on_resample=lambda out: rec.put("audio.wav_16k", torch.from_numpy(out)))
    tok = tts.tokenizer
    with contextlib.ExitStack() as stack:
        stack.enter_context(record_conditioning(tts, rec))  # VE, the S3 tokenizer, embed_ref (English hooks)
        stack.enter_context(patched(mtl_mod, "librosa", proxy))
        stack.enter_context(patched(mtl_mod, "punc_norm", punc_norm))
        stack.enter_context(patched(tok, "tokenizer", _BPEProxy(tok.tokenizer, lambda s: rec.put("text.preprocessed", utf8_tensor(s)))))
        stack.enter_context(wrap_method(tok, "text_to_tokens", after=lambda r, *a, **k: rec.put("text.tokens", r)))
        for name in LANGUAGE_STEPS.values():
            stack.enter_context(patched(tok_mod, name, _StepProxy(name, getattr(tok_mod, name), language_steps)))
        stack.enter_context(patched(tok, "cangjie_converter", _StepProxy("ChineseCangjieConverter", tok.cangjie_converter,
                                                                          language_steps)))
        yield


def optional_steps(tts) -> dict:
    """Which optional front-end steps can run in this environment with the original's code (the fields of
    mlx_impl.tokenizers.tokenizer.optional_steps): the packages the original imports, the Cangjie mapping and
    pkuseg segmenter its tokenizer built."""
    def package(name, lang, module):
        runs = importlib.util.find_spec(module) is not None
        return {"language": lang, "runs": runs, **({"by": module} if runs else {"skipped": f"{module} not installed"})}

    conv = tts.tokenizer.cangjie_converter
    steps = {"ja_kanji_to_hiragana": package("ja_kanji_to_hiragana", "ja", "pykakasi"),
             "he_diacritics": package("he_diacritics", "he", "dicta_onnx"),
             "ru_stress": package("ru_stress", "ru", "russian_text_stresser"),
             "ko_hangul_to_jamo": {"language": "ko", "runs": True, "by": "built in"},
             "zh_cangjie": {"language": "zh", "runs": bool(conv.word2cj)},
             "zh_segmentation": {"language": "zh", "runs": conv.segmenter is not None}}
    steps["zh_cangjie"].update({"by": f"Cangjie5_TC.json ({len(conv.word2cj)} glyphs)"} if conv.word2cj
                               else {"skipped": "no Cangjie5_TC.json in the hub cache under the model folder"})
    steps["zh_segmentation"].update({"by": "spacy_pkuseg"} if conv.segmenter is not None
                                    else {"skipped": "spacy_pkuseg not installed"})
    return steps


# ----------------------------------------------------------------------------- T3
def _recording_analyzer(base, prefix: str, rec: Recorder):
    """A subclass of the original AlignmentStreamAnalyzer whose step records, per step, its input (the CFG
    mix), its output, the alignment row(s) it appended and its decisions: the original's own locals at the
    end of step (a profile hook on that one frame), the EOS suppression (in place on its input) and the
    forced EOS (a new tensor returned)."""
    code = base.step.__code__

    class Recording(base):
        def step(self, logits, next_token=None):
            before, rows = logits.detach().clone(), self.alignment.shape[0]
            seen, outer = {}, sys.getprofile()

            def profile(frame, event, arg):
                if event == "return" and frame.f_code is code:
                    seen.update(frame.f_locals)

            sys.setprofile(profile)
            try:
                out = super().step(logits, next_token=next_token)
            finally:
                sys.setprofile(outer)
            eos = self.eos_idx
            decisions = {
                "text_position": int(self.text_position), "cur_text_posn": int(seen["cur_text_posn"]),
                "false_start": bool(seen["false_start"]), "complete": bool(self.complete),
                "long_tail": bool(seen["long_tail"]), "alignment_repetition": bool(seen["alignment_repetition"]),
                "token_repetition": bool(seen["token_repetition"]), "discontinuity": bool(seen["discontinuity"]),
                "eos_suppressed": bool(logits[0, eos] == -EOS_LOGIT and before[0, eos] != -EOS_LOGIT),
                "forced_eos": out is not logits,
            }
            rec.lists.setdefault(f"{prefix}.analysis", []).append([decisions[c] for c in ANALYSIS_COLUMNS])
            rec.append(f"{prefix}.logits_cfg", before[0])
            rec.append(f"{prefix}.alignment", self.alignment[rows:])
            return out

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


@contextlib.contextmanager
def record_mtl_t3(tts, rec: Recorder, sampler: RecordedSampler, prefix: str, bound: int, with_conditioning: bool):
    """T3.inference bounded to `bound` steps, recorded by the English hooks (the speech head, the repetition
    penalty's input, which here is the analyzer's output, min-p, top-p, the conditioning) and the analyzer's."""
    import chatterbox.models.t3.t3 as t3_mod

    t3 = tts.t3
    real_inference = t3.inference

    def bounded(*a, **k):
        rec.put("t3.text_tokens", k["text_tokens"])
        return real_inference(*a, **{**k, "max_new_tokens": bound})

    rec.prefix = prefix
    analyzer = _recording_analyzer(t3_mod.AlignmentStreamAnalyzer, f"{prefix}.analyzer", rec)
    with contextlib.ExitStack() as stack:
        stack.enter_context(record_t3(tts, rec, sampler, with_conditioning))
        stack.enter_context(patched(t3_mod, "AlignmentStreamAnalyzer", analyzer))
        if with_conditioning:
            stack.enter_context(patched(t3, "inference", bounded))
        yield


def t3_steps(rec: Recorder, prefix: str, n: int) -> dict:
    """The per-step tensors of a T3 run. export.record_t3 files the repetition penalty's input as
    `logits_cfg`: in the multilingual loop that is the analyzer's output (`logits_analyzed`); the CFG mix
    is the analyzer's input."""
    import torch

    lists = rec.lists
    lists[f"{prefix}.logits_analyzed"] = lists.pop(f"{prefix}.logits_cfg")
    lists[f"{prefix}.logits_cfg"] = lists.pop(f"{prefix}.analyzer.logits_cfg")
    out = {}
    for key in T3_STEP_KEYS:
        items = lists.pop(f"{prefix}.{key}")
        if key == "logits_raw" and len(items) == n + 1:  # the forward after the last draw (unless it drew the stop token)
            items = items[:n]
        if len(items) != n:
            raise RuntimeError(f"{prefix}.{key}: {len(items)} steps recorded for {n} draws")
        out[key] = torch.stack(items)
    analysis = lists.pop(f"{prefix}.analyzer.analysis")
    alignment = lists.pop(f"{prefix}.analyzer.alignment")
    if len(analysis) != n:
        raise RuntimeError(f"{prefix}: {len(analysis)} analyzer steps for {n} draws")
    out["analysis"] = torch.tensor(analysis, dtype=torch.int32)
    out["alignment"] = torch.cat(alignment)
    return out


def put_t3_steps(rec: Recorder, prefix: str, steps: dict, keys) -> None:
    for key in keys:
        rec.put(f"{prefix}.{key}", steps[key])


# ----------------------------------------------------------------------------- the whole case
def export_mtl_case(ckpt, case: MtlCase, out_root=None, tts=None, log=print) -> Path:
    import torch

    validate_mtl_case_inputs(case)
    tts = tts or load_original_mtl(ckpt)
    p = case.params
    bound = int(p["max_new_tokens"])
    rec = ModelRecorder("mtl")
    t0 = time.time()

    # 1. generate(), unmodified but for the bound and the recorded draws: conditioning, text, T3 sampled, S3Gen
    sampler, outputs, language_steps = RecordedSampler(seed=case.seed), {}, []

    def s3gen_before(*a, speech_tokens=None, **k):
        rec.put("flow.speech_tokens", (speech_tokens if speech_tokens is not None else a[0])[None])

    torch.manual_seed(case.seed)
    with offline_front_end(ckpt), record_mtl_front(tts, rec, language_steps), \
            record_mtl_t3(tts, rec, sampler, "t3", bound, with_conditioning=True), record_s3gen(tts, rec), \
            wrap_method(tts.s3gen, "inference", before=s3gen_before,
                        after=lambda r, *a, **k: outputs.setdefault("s3gen", []).append(r)):
        tts.generate(case.text, case.language, audio_prompt_path=str(case.audio_path), **generate_kwargs(p))
    if len(outputs.get("s3gen", [])) != 1:
        raise RuntimeError(f"expected one s3gen.inference call, saw {len(outputs.get('s3gen', []))}")
    n = len(sampler.tokens)
    conds = tts.conds.t3
    rec.put("ve.speaker_emb", conds.speaker_emb)
    rec.put("s3tok.prompt_tokens", conds.cond_prompt_speech_tokens)
    rec.put("t3.cond_prompt_speech_emb", conds.cond_prompt_speech_emb)
    rec.put("t3.uniform_draws", torch.tensor(sampler.uniforms, dtype=torch.float64))
    rec.put("t3.speech_tokens", torch.tensor([sampler.tokens], dtype=torch.int32))
    steps = t3_steps(rec, "t3", n)
    put_t3_steps(rec, "t3", steps, (*T3_STEP_KEYS, "analysis", "alignment"))
    rec.put("t3.sampling_margin", sampling_margins(steps["logits_temp"], sampler, p))
    wav, sources = outputs["s3gen"][0]
    est = rec.lists.pop("flow.estimator")
    rec.put("flow.estimator_first", est[0])
    rec.put("flow.estimator_last", est[-1])
    rec.put("hift.source", sources)
    rec.put("hift.wav", wav)
    log(f"[{case.name}] ChatterboxMultilingualTTS.generate: {n} T3 draws, {wav.shape[-1] / 24000:.2f}s of audio "
        f"in {time.time() - t0:.1f}s")

    # 2. T3 greedy on the same conditionals and text tokens
    t1 = time.time()
    greedy = RecordedSampler(seed=case.seed, greedy=True)
    with record_mtl_t3(tts, rec, greedy, "t3_greedy", bound, with_conditioning=False):
        tts.t3.inference(t3_cond=tts.conds.t3, text_tokens=rec.values["mtl.t3.text_tokens"], max_new_tokens=bound,
                         temperature=p["temperature"], cfg_weight=p["cfg_weight"],
                         repetition_penalty=p["repetition_penalty"], min_p=p["min_p"], top_p=p["top_p"])
    g_n = len(greedy.tokens)
    g_steps = t3_steps(rec, "t3_greedy", g_n)
    put_t3_steps(rec, "t3_greedy", g_steps, ("logits_cfg", "analysis"))
    rec.put("t3_greedy.speech_tokens", torch.tensor([greedy.tokens], dtype=torch.int32))
    rec.put("t3_greedy.sampling_margin", greedy_margins(g_steps["logits_temp"]))
    log(f"[{case.name}] T3 greedy {g_n} draws {time.time() - t1:.1f}s")

    forced = {"sampled": int(steps["analysis"][:, ANALYSIS_COLUMNS.index("forced_eos")].sum()),
              "greedy": int(g_steps["analysis"][:, ANALYSIS_COLUMNS.index("forced_eos")].sum())}
    meta = {
        "export_version": MTL_EXPORT_VERSION,
        "model": "mtl",
        "case": case.as_manifest(),
        "checkpoint": checkpoint_meta(ckpt),
        "versions": package_versions(),
        "device": "cpu",
        "dtype": "float32",
        "front_end": {"optional_steps": optional_steps(tts), "language_steps_run": language_steps,
                      "hub": "offline (HF_HUB_OFFLINE)",
                      "pkuseg_home": "<checkpoint>/pkuseg" if (ckpt.path / "pkuseg").is_dir() else "default"},
        "driver": {
            "run": "ChatterboxMultilingualTTS.from_local(ckpt, 'cpu'); torch.manual_seed(case.seed); "
                   "generate(text, language, audio_prompt_path=audio, **case params but max_new_tokens)",
            "t3_max_new_tokens": f"{bound}: T3.inference bounded by a wrapper (generate() passes 1000)",
            "t3_sampler": "torch.multinomial replaced during the run by reference.recording.RecordedSampler: "
                          "u ~ U[0,1) float64 from torch.Generator(seed); cdf = cumsum(float64(probs)); "
                          "token = min(searchsorted(cdf, u*cdf[-1], right=True), V-1)",
            "t3_greedy": "a second T3.inference on the same conditionals and text tokens, argmax sampler",
            "t3_sampling_margin": "per step, the smallest L-inf perturbation of the scaled logits (mtl.t3.logits_temp) "
                                  "that could change the replayed pick (parity/flips.py sampling_margin); greedy: half "
                                  "the top-two gap",
            "t3_steps": {"sampled": n, "greedy": g_n},
            "analyzer_forced_eos_steps": forced,
            "analysis_columns": list(ANALYSIS_COLUMNS),
            "torch_seed": "torch.manual_seed(case.seed) before generate() (S3Gen's flow and SineGen draws)",
            "watermark": "applied by generate() as in the original; mtl.hift.wav is s3gen.inference's output before it",
            "logits_per_step": "rows of mtl.t3.logits_* and mtl.t3.analysis are decoding steps 0..n-1",
        },
        "sanity": mtl_sanity_check(rec.values),
    }
    return write_case_fixture(rec, meta, out_root, case, t0, log)


FILTERED = ("mtl.t3.logits_min_p", "mtl.t3.logits_top_p")  # -inf where filtered


def mtl_sanity_check(values: dict) -> dict:
    """The English export's activation checks (finite, non-constant) on everything but the filtered logits,
    the margins (inf where nothing moves the pick) and the analyzer's flags (constant when never raised);
    SineGen's voiced F0."""
    skip = lambda k: k in FILTERED or k.endswith(("sampling_margin", ".analysis"))
    out = sanity_check({k: v for k, v in values.items() if not skip(k)})
    if not bool((values["mtl.hift.f0"] > 10.0).any()):  # SineGen's voiced_threshold
        out["problems"].append("mtl.hift.f0: no voiced frame (F0 <= 10 Hz everywhere): SineGen's sine branch unexercised")
        out["ok"] = False
    return out
