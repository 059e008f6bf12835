"""Fine-tuning a pretrained model from a local folder under DP: tied embeddings made safe,
LoRA adapters the only trained weights, and the result saved as a plain model with its own
tokenizer."""

import math

import torch

from models import causal_lm
from models import tokenizer as tokenizers
from tasks.train import PrivacyConfig, TrainConfig, train


def _config(pretrained_dir, **model):
    lm = causal_lm.LMConfig(pretrained=str(pretrained_dir), block_size=64, **model)
    # RDP: the PRV accountant's σ search takes seconds; the default accountant has its own
    # test (test_train), these test the fine-tuning paths.
    return TrainConfig(model=lm, epochs=1, batch_size=8, physical_batch_size=8,
                       privacy=PrivacyConfig(target_epsilon=8.0, accountant="rdp"))


def _sequences(tokenizer, n=48):
    return [tokenizer.encode(f"2024-0{i % 9 + 1} | web | {'late delivery ' * (i % 4)}", 64)
            for i in range(n)]


def test_pretrained_tokenizer_is_the_models_own(pretrained_dir):
    tok = tokenizers.for_pretrained(str(pretrained_dir))
    assert not tok.byte_level and tok.vocab_size == 400
    ids = tok.encode("Beautiful is better than ugly.", 64)
    assert len(ids) < len("Beautiful is better than ugly.") + 2  # real merges, not bytes
    assert tok.decode(ids[1:]) == "Beautiful is better than ugly."


def test_tied_pretrained_embeddings_are_untied_or_frozen(pretrained_dir):
    untied = causal_lm.build(causal_lm.LMConfig(pretrained=str(pretrained_dir)), None)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)
    frozen = causal_lm.build(causal_lm.LMConfig(pretrained=str(pretrained_dir),
                                                tie_embeddings=True), None)
    assert frozen.lm_head.weight is frozen.transformer.wte.weight
    assert not frozen.transformer.wte.weight.requires_grad


def test_lora_under_dp_trains_only_adapters_and_saves_a_plain_model(pretrained_dir, tmp_path):
    cfg = _config(pretrained_dir, lora=causal_lm.LoraSettings(r=2))
    tok = tokenizers.for_pretrained(cfg.model.pretrained)
    base = causal_lm.build(cfg.model.model_copy(update={"lora": None}), tok)
    peft_model = causal_lm.build(cfg.model, tok)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in base.parameters())

    model, result = train(_sequences(tok), cfg, tok, seed=1)
    assert result.private and 0 < result.epsilon <= 8.0 and math.isfinite(result.final_loss)
    directory = causal_lm.save(model, tmp_path / "model", {"tokenizer": "pretrained"},
                               extra=tok.save)
    loaded, meta = causal_lm.load(directory)
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    assert set(loaded.state_dict()) == set(base.state_dict())
    # Adapters merged: the attention weights moved away from the pretrained ones.
    name = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(loaded.state_dict()[name], base.state_dict()[name])
    assert tokenizers.for_saved(directory, meta).vocab_size == 400


def test_ghost_clipping_fine_tunes_the_whole_untied_model(pretrained_dir):
    cfg = _config(pretrained_dir)
    cfg = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(
        update={"grad_sample_mode": "ghost"})})
    tok = tokenizers.for_pretrained(cfg.model.pretrained)
    _, result = train(_sequences(tok), cfg, tok, seed=2)
    assert result.private and math.isfinite(result.final_loss) and result.steps > 0
