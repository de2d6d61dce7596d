"""Named model presets. Each cites where its sizes come from."""

from __future__ import annotations

_GPT2 = dict(family="gpt", seq_len=1024, vocab=50304, tied_embeddings=True, dropout=True)  # 50257 padded to 128 (Megatron-LM)
_GPT3 = dict(family="gpt", seq_len=2048, vocab=51200, tied_embeddings=True, dropout=True)  # Megatron-LM's padded GPT-2 vocabulary

PRESETS: dict[str, dict] = {
    # Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", Table 2
    "gpt2-small": dict(_GPT2, layers=12, hidden=768, heads=12),
    "gpt2-medium": dict(_GPT2, layers=24, hidden=1024, heads=16),
    "gpt2-large": dict(_GPT2, layers=36, hidden=1280, heads=20),
    "gpt2-xl": dict(_GPT2, layers=48, hidden=1600, heads=25),
    # Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1 (head counts as
    # Megatron-LM runs them: 128-wide heads; 13B uses hidden 5120 as in Megatron-LM)
    "gpt3-1.3b": dict(_GPT3, layers=24, hidden=2048, heads=16),
    "gpt3-2.7b": dict(_GPT3, layers=32, hidden=2560, heads=32),
    "gpt3-6.7b": dict(_GPT3, layers=32, hidden=4096, heads=32),
    "gpt3-13b": dict(_GPT3, layers=40, hidden=5120, heads=40),
    "gpt3-175b": dict(_GPT3, layers=96, hidden=12288, heads=96),
    # Touvron et al. 2023, "Llama 2", Table 1 and the released configs
    "llama2-7b": dict(family="llama", layers=32, hidden=4096, heads=32, ffn_hidden=11008, seq_len=4096,
                      vocab=32000, flash_attention=True),
    "llama2-13b": dict(family="llama", layers=40, hidden=5120, heads=40, ffn_hidden=13824, seq_len=4096,
                       vocab=32000, flash_attention=True),
    "llama2-70b": dict(family="llama", layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672,
                       seq_len=4096, vocab=32000, flash_attention=True),
    # Grattafiori et al. 2024, "The Llama 3 Herd of Models", Table 3
    "llama3-8b": dict(family="llama", layers=32, hidden=4096, heads=32, kv_heads=8, ffn_hidden=14336,
                      seq_len=8192, vocab=128256, flash_attention=True),
    "llama3-70b": dict(family="llama", layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672,
                       seq_len=8192, vocab=128256, flash_attention=True),
    "llama3-405b": dict(family="llama", layers=126, hidden=16384, heads=128, kv_heads=8, ffn_hidden=53248,
                        seq_len=8192, vocab=128256, flash_attention=True),
    # Jiang et al. 2024, "Mixtral of Experts", Table 1
    "mixtral-8x7b": dict(family="moe", layers=32, hidden=4096, heads=32, kv_heads=8, ffn_hidden=14336,
                         seq_len=4096, vocab=32000, experts=8, top_k=2, flash_attention=True),
    # Devlin et al. 2019, "BERT", Section 3 (BERT-LARGE), sequence 512
    "bert-large": dict(family="bert", layers=24, hidden=1024, heads=16, seq_len=512, vocab=30522,
                       tied_embeddings=True, dropout=True),
    # Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Table 1 (ViT-Large, 224 px: 196 patches + class)
    "vit-l-16": dict(family="vit", layers=24, hidden=1024, heads=16, image_size=224, patch_size=16,
                     num_classes=1000, dropout=True),
    # He et al. 2016, Table 1 (50-layer)
    "resnet-50": dict(family="resnet", layers=16, image_size=224, num_classes=1000),
    # Small enough for the CPU executor (2 ranks, gloo); its explicit attention, as the
    # verify suite measures it (fp32 on a CPU: no FlashAttention)
    "tiny-gpt": dict(family="gpt", layers=4, hidden=64, heads=4, seq_len=32, vocab=256, flash_attention=False),
    "tiny-llama": dict(family="llama", layers=4, hidden=64, heads=4, kv_heads=2, ffn_hidden=176, seq_len=32,
                       vocab=256, flash_attention=False),
}
