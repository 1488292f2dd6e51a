"""T3: the text-to-speech-token LLaMA (mirrors chatterbox/models/t3/t3.py).

The backbone is mlx-lm's `LlamaModel` (30 layers, hidden 1024, llama3 RoPE scaling) fed input
embeddings, with its KV cache from `make_prompt_cache`. Custom input embeddings (conditioning,
text and speech tokens with learned absolute positions) and the speech head live here.

Chatterbox Turbo (`hp.llama_config_name = "GPT2_medium"`, `is_gpt`): the GPT-2 medium backbone
(gpt2.py, its own learned positions), no T3 position embeddings, a speech head with a bias, no CFG,
and its own decoding loop `inference_turbo`.

Numerics note: the original asks HF for `output_attentions=True` (the multilingual model's
alignment analyser reads three heads' attention maps). With transformers 5.2 and the config's
`attn_implementation="sdpa"` the English model still runs torch SDPA (HF only warns); MLX runs
`mx.fast.scaled_dot_product_attention`. Both are fp32 softmax attention; they differ only by
float32 rounding. The multilingual T3 (`hp.is_multilingual`): its AlignmentStreamAnalyzer switches
the original's backbone to eager attention in every layer; MLX keeps SDPA and computes the three
watched heads' weights beside it (inference/alignment_stream_analyzer.py). The logits then differ
by float32 rounding too (max 1.2e-5 on the 14-layer unit-test model, tests/unit/test_mtl_analyzer.py).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.models.llama import LlamaModel

from .inference import fast_decode
from .inference.alignment_stream_analyzer import AlignmentStreamAnalyzer
from .inference.fused_layers import fuse_projections
from .gpt2 import GPT2Backbone, gpt2_model_args
from .inference.sampling import (
    Draw,
    MinPLogitsWarper,
    MLXDraw,
    RepetitionPenaltyLogitsProcessor,
    TopPLogitsWarper,
    apply_temperature,
    cfg_combine,
    turbo_logits_processors,
)
from ..validate import UsageError, check_max_new_tokens, check_sampling, check_token_ids
from .llama_configs import llama_model_args
from .modules.cond_enc import T3Cond, T3CondEnc
from .modules.learned_pos_emb import LearnedPositionEmbeddings
from .modules.t3_config import T3Config

# on_step(step, outputs): outputs holds logits_raw (2, V), logits_cfg, logits_rep, logits_temp,
# logits_min_p, logits_top_p, probs (each (1, V)) and the chosen token; on the multilingual T3 also
# logits_analyzed (after the AlignmentStreamAnalyzer) and analysis (its decisions, a dict).
StepHook = Callable[[int, dict], None]


def _ensure_BOT_EOT(text_tokens: np.ndarray, hp: T3Config) -> None:
    B = text_tokens.shape[0]
    assert int((text_tokens == hp.start_text_token).sum()) >= B, "missing start_text_token"
    assert int((text_tokens == hp.stop_text_token).sum()) >= B, "missing stop_text_token"


class T3(nn.Module):
    # Decode with inference/fast_decode.py where no per-step hook or forced tokens are asked for.
    use_fast_decode = True
    compile_steps = "auto"  # fast_decode's one-token step: "auto", "graph", "layers" or "plain" (inference/step_kinds.py)

    def __init__(self, hp: Optional[T3Config] = None):
        super().__init__()
        hp = hp if hp is not None else T3Config.english_only()
        self.hp = hp
        config = hp.backbone_config
        self.is_gpt = config.get("model_type") == "gpt2"
        if self.is_gpt:
            self.tfmr = GPT2Backbone(gpt2_model_args(config))
        else:
            self.tfmr = LlamaModel(llama_model_args(config))
        self.dim = config["hidden_size"]

        self.cond_enc = T3CondEnc(hp)
        self.text_emb = nn.Embedding(hp.text_tokens_dict_size, self.dim)
        self.speech_emb = nn.Embedding(hp.speech_tokens_dict_size, self.dim)

        self.text_pos_emb = None
        self.speech_pos_emb = None
        if hp.input_pos_emb == "learned":
            self.text_pos_emb = LearnedPositionEmbeddings(hp.max_text_tokens + 2, self.dim)
            self.speech_pos_emb = LearnedPositionEmbeddings(hp.max_speech_tokens + 2 + 2, self.dim)
        elif hp.input_pos_emb is not None:
            raise NotImplementedError(f"input_pos_emb {hp.input_pos_emb!r}")

        self.text_head = nn.Linear(self.dim, hp.text_tokens_dict_size, bias=False)
        self.speech_head = nn.Linear(self.dim, hp.speech_tokens_dict_size, bias=self.is_gpt)

    # ------------------------------------------------------------ embeddings

    def prepare_conditioning(self, t3_cond: T3Cond, outputs: Optional[dict] = None) -> mx.array:
        """Embeds the prompt speech tokens (token + learned position) into t3_cond, then T3CondEnc."""
        if t3_cond.cond_prompt_speech_tokens is not None and t3_cond.cond_prompt_speech_emb is None:
            self.check_speech_tokens(t3_cond.cond_prompt_speech_tokens, "the voice's prompt speech tokens")
            tokens = mx.array(t3_cond.cond_prompt_speech_tokens)
            t3_cond.cond_prompt_speech_emb = self.speech_emb(tokens)
            if not self.is_gpt:
                t3_cond.cond_prompt_speech_emb = t3_cond.cond_prompt_speech_emb + self.speech_pos_emb(tokens)
        if outputs is not None:
            outputs["cond_prompt_speech_emb"] = t3_cond.cond_prompt_speech_emb
        return self.cond_enc(t3_cond, outputs)  # (B, len_cond, dim)

    def prepare_input_embeds(self, *, t3_cond: T3Cond, text_tokens, speech_tokens, cfg_weight: float = 0.0,
                             outputs: Optional[dict] = None):
        """[cond | text | speech] embeddings (B, len, dim) and len_cond. With CFG (not on GPT-2),
        row 1's text embeddings are zeroed before the position embeddings are added."""
        self.check_text_tokens(text_tokens)
        self.check_speech_tokens(speech_tokens, "the initial speech tokens")
        text_tokens = mx.array(text_tokens)
        speech_tokens = mx.array(speech_tokens)
        cond_emb = self.prepare_conditioning(t3_cond, outputs)
        text_emb = self.text_emb(text_tokens)
        if cfg_weight > 0.0 and not self.is_gpt:
            row = (mx.arange(text_emb.shape[0]) != 1).astype(text_emb.dtype)  # CFG uncond
            text_emb = text_emb * row[:, None, None]
        speech_emb = self.speech_emb(speech_tokens)
        if self.hp.input_pos_emb == "learned":
            text_emb = text_emb + self.text_pos_emb(text_tokens)
            speech_emb = speech_emb + self.speech_pos_emb(speech_tokens)
        len_cond = cond_emb.shape[1]
        if cond_emb.shape[0] != text_emb.shape[0]:
            cond_emb = mx.broadcast_to(cond_emb, (text_emb.shape[0], *cond_emb.shape[1:]))
        embeds = mx.concatenate([cond_emb, text_emb, speech_emb], axis=1)
        return embeds, len_cond

    # ------------------------------------------------------------ input checks
    # host side, before any lookup: MLX's gather reads past a table instead of failing

    @property
    def text_positions(self) -> int:
        """Rows of the text position table (GPT-2: of the backbone's, which the whole sequence shares)."""
        return self.text_pos_emb.emb.weight.shape[0] if self.text_pos_emb is not None else self.tfmr.wpe.weight.shape[0]

    @property
    def speech_positions(self) -> int:
        if self.speech_pos_emb is None:
            return self.tfmr.wpe.weight.shape[0]
        return self.speech_pos_emb.emb.weight.shape[0]

    def check_text_tokens(self, text_tokens) -> None:
        """Text token ids within text_emb, their count (with [START]/[STOP]) within text_pos_emb."""
        check_token_ids(text_tokens, vocab=self.text_emb.weight.shape[0], positions=self.text_positions,
                        what="the text" if self.is_gpt else "the text (with [START]/[STOP])")

    def check_speech_tokens(self, speech_tokens, what: str) -> None:
        check_token_ids(speech_tokens, vocab=self.speech_emb.weight.shape[0], positions=self.speech_positions, what=what)

    def check_decode_args(self, *, max_new_tokens, temperature, top_p, min_p, repetition_penalty, cfg_weight) -> None:
        """The sampling options in their ranges (validate.RULES) and the decoding steps within the
        speech position table: the same checks on every decoding path."""
        check_sampling(dict(temperature=temperature, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                            cfg_weight=cfg_weight))
        check_max_new_tokens(max_new_tokens, self.speech_positions)

    # ------------------------------------------------------------ backbone

    def fuse_projections(self) -> "T3":
        """q/k/v and gate/up as single matrix products (inference/fused_layers.py); call after the
        weights are loaded and before any quantization. Bit-identical logits on the CPU."""
        fuse_projections(self.tfmr)
        return self

    def make_cache(self) -> list:
        return make_prompt_cache(self.tfmr)

    def speech_logits(self, inputs_embeds: mx.array, cache: list) -> mx.array:
        """Speech-head logits of the last position, (B, V), extending `cache`."""
        hidden = self.tfmr(None, cache=cache, input_embeddings=inputs_embeds)
        return self.speech_head(hidden[:, -1, :])

    def speech_token_embed(self, token, position: int) -> mx.array:
        """speech_emb(token) + speech_pos_emb.get_fixed_embedding(position), (1, 1, dim); `token` an
        int or a one-element array (the fast decode's token, still on the device)."""
        if not 0 <= position < self.speech_positions:
            raise IndexError(f"speech position {position} outside T3's speech position table "
                             f"[0, {self.speech_positions})")
        token = token.reshape(1, 1) if isinstance(token, mx.array) else mx.array([[token]])
        return self.speech_emb(token) + self.speech_pos_emb.get_fixed_embedding(position)

    # ------------------------------------------------------------ inference

    def inference(
        self,
        *,
        t3_cond: T3Cond,
        text_tokens,
        initial_speech_tokens=None,
        max_new_tokens: Optional[int] = None,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.2,
        cfg_weight: float = 0.5,
        draw: Optional[Draw] = None,
        on_step: Optional[StepHook] = None,
        forced_tokens: Optional[Sequence[int]] = None,
        on_token: Optional[Callable[[int, int], None]] = None,
    ) -> np.ndarray:
        """Speech tokens (1, n) of the conditional row, the stop token included when drawn.

        text_tokens: (2, n_text + 2) with [START]/[STOP], the CFG copy in row 1 (the original's
        decoding always runs the CFG pair). `draw` picks each token (default: MLX's generator);
        `forced_tokens` teacher-forces the decoded sequence instead (the draw is then not used).
        """
        text_tokens = np.atleast_2d(np.asarray(text_tokens)).astype(np.int32)
        _ensure_BOT_EOT(text_tokens, self.hp)
        if initial_speech_tokens is None:
            initial_speech_tokens = np.full_like(text_tokens[:, :1], self.hp.start_speech_token)
        embeds, len_cond = self.prepare_input_embeds(
            t3_cond=t3_cond, text_tokens=text_tokens, speech_tokens=initial_speech_tokens, cfg_weight=cfg_weight,
        )
        return self.inference_from_embeds(
            embeds, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
            repetition_penalty=repetition_penalty, cfg_weight=cfg_weight, draw=draw, on_step=on_step,
            forced_tokens=forced_tokens, on_token=on_token,
            text_tokens_slice=(len_cond, len_cond + text_tokens.shape[-1]),
        )

    def inference_from_embeds(
        self,
        embeds: mx.array,
        *,
        max_new_tokens: Optional[int] = None,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.2,
        cfg_weight: float = 0.5,
        draw: Optional[Draw] = None,
        on_step: Optional[StepHook] = None,
        forced_tokens: Optional[Sequence[int]] = None,
        on_token: Optional[Callable[[int, int], None]] = None,
        text_tokens_slice: Optional[Tuple[int, int]] = None,
    ) -> np.ndarray:
        """The decoding loop of T3.inference from prepared input embeddings (2, len, dim).

        Without `on_step` and `forced_tokens` it runs fast_decode (same math, device-side sampling,
        see that module) unless `use_fast_decode` is off; `on_token(step, token)` works in both.
        The multilingual T3 always runs this loop, with the AlignmentStreamAnalyzer on the text's
        positions `text_tokens_slice` (start, end) in the embeddings."""
        if self.hp.is_multilingual and text_tokens_slice is None:
            raise ValueError("the multilingual T3's inference_from_embeds needs text_tokens_slice (the text's "
                             "positions in embeds) for its AlignmentStreamAnalyzer")
        # in the weights' dtype: a float32 prefill would make the KV cache, and every later step,
        # float32 (bf16 weights then get cast to float32 at each matrix product)
        embeds = mx.array(embeds).astype(self.speech_emb.weight.dtype)
        if embeds.shape[0] != 2:
            raise ValueError(f"T3 inference decodes the CFG pair: embeds batch {embeds.shape[0]} != 2")
        if max_new_tokens is None:
            max_new_tokens = self.hp.max_speech_tokens
        self.check_decode_args(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                               repetition_penalty=repetition_penalty, cfg_weight=cfg_weight)
        if forced_tokens is not None:
            forced_tokens = [int(t) for t in np.asarray(forced_tokens).reshape(-1)]
            max_new_tokens = min(max_new_tokens, len(forced_tokens))
        if on_step is None and forced_tokens is None and self.use_fast_decode and fast_decode.supports(self, draw):
            return fast_decode.fast_decode(
                self, embeds, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                repetition_penalty=repetition_penalty, cfg_weight=cfg_weight, draw=draw, on_token=on_token)
        draw = draw if draw is not None else MLXDraw()

        sos = self.hp.start_speech_token
        bos_embed = self.speech_token_embed(sos, 0)
        inputs_embeds = mx.concatenate([embeds, mx.concatenate([bos_embed, bos_embed])], axis=1)

        generated_ids: List[int] = [sos]
        predicted: List[int] = []
        min_p_warper = MinPLogitsWarper(min_p=min_p)
        top_p_warper = TopPLogitsWarper(top_p=top_p)
        repetition_penalty_processor = RepetitionPenaltyLogitsProcessor(penalty=float(repetition_penalty))

        alignment_stream_analyzer = None
        if self.hp.is_multilingual:
            alignment_stream_analyzer = AlignmentStreamAnalyzer(
                self.tfmr, None, text_tokens_slice=text_tokens_slice, alignment_layer_idx=9,
                eos_idx=self.hp.stop_speech_token)
        try:
            cache = self.make_cache()
            logits_step = self.speech_logits(inputs_embeds, cache)  # prefill
            for i in range(max_new_tokens):
                ids = np.array(generated_ids)[None]
                logits_cfg = cfg_combine(logits_step, cfg_weight)
                logits_analyzed = logits_cfg
                if alignment_stream_analyzer is not None:
                    # the previous token (the start token at the first step), as the original passes it
                    logits_analyzed = alignment_stream_analyzer.step(logits_cfg, next_token=generated_ids[-1])
                logits_rep = repetition_penalty_processor(ids, logits_analyzed)
                logits_temp = apply_temperature(logits_rep, temperature)
                logits_min_p = min_p_warper(ids, logits_temp)
                logits_top_p = top_p_warper(ids, logits_min_p)
                probs = mx.softmax(logits_top_p, axis=-1)
                mx.eval(probs)
                next_token = forced_tokens[i] if forced_tokens is not None else draw(probs, i)
                if on_token is not None:
                    on_token(i, next_token)
                if on_step is not None:
                    outputs = dict(
                        logits_raw=logits_step, logits_cfg=logits_cfg, logits_rep=logits_rep, logits_temp=logits_temp,
                        logits_min_p=logits_min_p, logits_top_p=logits_top_p, probs=probs, token=next_token,
                    )
                    if alignment_stream_analyzer is not None:
                        outputs.update(logits_analyzed=logits_analyzed, analysis=alignment_stream_analyzer.steps[-1])
                    on_step(i, outputs)
                predicted.append(next_token)
                generated_ids.append(next_token)
                if next_token == self.hp.stop_speech_token:
                    break
                next_embed = self.speech_token_embed(next_token, i + 1)
                logits_step = self.speech_logits(mx.concatenate([next_embed, next_embed]), cache)
        finally:
            if alignment_stream_analyzer is not None:
                alignment_stream_analyzer.remove_spies()
        return np.array(predicted, dtype=np.int32)[None]

    def inference_batch(self, *, t3_conds: Sequence[T3Cond], text_tokens: Sequence, max_new_tokens: Optional[int] = None,
                        temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05,
                        repetition_penalty: float = 1.2, cfg_weight: float = 0.5, draws: Optional[Sequence] = None,
                        on_token: Optional[Callable[[int, int, int], None]] = None) -> List[np.ndarray]:
        """`inference` for several texts and voices decoded together (inference/batched_decode.py):
        speech tokens (1, n_r) per text; `draws` one per text; `on_token(row, step, token)`."""
        from .inference.batched_decode import inference_batch

        for tokens in text_tokens:
            _ensure_BOT_EOT(np.atleast_2d(np.asarray(tokens)), self.hp)
        return inference_batch(self, t3_conds=t3_conds, text_tokens=text_tokens, max_new_tokens=max_new_tokens,
                               temperature=temperature, top_p=top_p, min_p=min_p,
                               repetition_penalty=repetition_penalty, cfg_weight=cfg_weight, draws=draws,
                               on_token=on_token)

    # ------------------------------------------------------------ Chatterbox Turbo

    def turbo_step_logits(self, token: int, cache: list) -> mx.array:
        """Speech-head logits (1, V) of one generated token fed back: speech_emb only (the GPT-2
        backbone adds its own position at the cache offset)."""
        return self.speech_logits(self.speech_emb(mx.array([[token]])), cache)

    def inference_turbo(self, t3_cond: T3Cond, text_tokens, temperature: float = 0.8, top_k: int = 1000,
                        top_p: float = 0.95, repetition_penalty: float = 1.2, max_gen_len: int = 1000,
                        draw: Optional[Draw] = None, on_token: Optional[Callable[[int, int], None]] = None
                        ) -> np.ndarray:
        """Speech tokens (1, n) of Chatterbox Turbo, the trailing stop token removed (the original's
        T3.inference_turbo): no CFG, one prefill, then up to `max_gen_len` one-token steps on the KV
        cache. Processors in its order (temperature, top-k, top-p, then the repetition penalty, whose
        history is the start-of-speech token at the first draw and the generated tokens after); the
        first draw is never checked for the stop token; an all -inf row ends the loop. `draw` picks
        each token (default: MLX's generator); `on_token(step, token)` reports progress."""
        if not self.is_gpt:
            raise NotImplementedError("inference_turbo runs on the GPT-2 backbone (Chatterbox Turbo's T3)")
        text_tokens = np.atleast_2d(np.asarray(text_tokens)).astype(np.int32)
        self.check_text_tokens(text_tokens)
        draw = draw if draw is not None else MLXDraw()
        processors = turbo_logits_processors(temperature, top_k, top_p, repetition_penalty)
        speech_start_token = np.full_like(text_tokens[:, :1], self.hp.start_speech_token)
        embeds, _ = self.prepare_input_embeds(t3_cond=t3_cond, text_tokens=text_tokens,
                                              speech_tokens=speech_start_token, cfg_weight=0.0)
        self.check_turbo_args(temperature=temperature, top_k=top_k, top_p=top_p,
                              repetition_penalty=repetition_penalty, max_gen_len=max_gen_len, prompt_len=embeds.shape[1])

        def process(ids, logits):
            for p in processors:
                logits = p(ids, logits)
            return logits

        cache = self.make_cache()
        logits = process(speech_start_token, self.speech_logits(embeds, cache))
        generated = [self.turbo_draw(logits, draw, 0, on_token)]
        for i in range(max_gen_len):
            logits = process(np.array(generated)[None], self.turbo_step_logits(generated[-1], cache))
            if bool(mx.all(logits == -float("inf"))):
                print("Warning: All logits are -inf")
                break
            generated.append(self.turbo_draw(logits, draw, i + 1, on_token))
            if generated[-1] == self.hp.stop_speech_token:
                break
        if generated and generated[-1] == self.hp.stop_speech_token:
            generated = generated[:-1]
        return np.array(generated, dtype=np.int32)[None]

    def check_turbo_args(self, *, temperature, top_k, top_p, repetition_penalty, max_gen_len, prompt_len) -> None:
        """inference_turbo's options in range (a temperature <= 0 or a top_k <= 0 turns that processor off,
        as in the original) and its steps within the backbone's position table."""
        check_sampling(dict(top_p=top_p, repetition_penalty=repetition_penalty))
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not np.isfinite(temperature):
            raise UsageError(f"temperature {temperature}: must be a finite number")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
            raise UsageError(f"top_k {top_k}: must be an integer (<= 0 turns top-k off)")
        limit = self.tfmr.wpe.weight.shape[0] - prompt_len
        if isinstance(max_gen_len, bool) or not isinstance(max_gen_len, (int, np.integer)) or not 0 <= max_gen_len <= limit:
            raise UsageError(f"max_gen_len {max_gen_len}: must be an integer in [0, {limit}] (the GPT-2 backbone's "
                             f"{self.tfmr.wpe.weight.shape[0]} positions less the prompt's {prompt_len})")

    @staticmethod
    def turbo_draw(logits: mx.array, draw: Draw, step: int, on_token) -> int:
        probs = mx.softmax(logits, axis=-1)
        mx.eval(probs)
        token = int(draw(probs, step))
        if on_token is not None:
            on_token(step, token)
        return token
