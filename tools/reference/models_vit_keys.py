"""models_vit_keys.txt: the state-dict keys and shapes of timm's standard ViTs, for the registry's
vit_* entries (tests/test_models.cpp, Models.ViTRegistryKeysMatchTimm).

For each name in MODELS, timm.create_model(name, pretrained=False) (1000 classes) is built on the
meta device, so no weights are allocated or drawn; the file holds, per model, a line
"model NAME num_parameters N num_heads H" (the head count is in no tensor's shape) followed by one
"key [d0, d1, ...]" line per state-dict entry (after the "# key: value" metadata lines). Every model listed has the plain ViT of the DeiT entries:
class token, no distillation token, learned position embedding, pre-norm blocks, final LayerNorm,
linear head; LayerNorm eps 1e-6 and exact GELU, as mokd's layers.
"""
import torch

from ._common import save_text

REQUIRES = ("torch", "safetensors", "timm")
MODELS = (
    "vit_tiny_patch16_224", "vit_tiny_patch16_384",
    "vit_small_patch16_224", "vit_small_patch16_384", "vit_small_patch32_224", "vit_small_patch32_384",
    "vit_base_patch16_224", "vit_base_patch16_384", "vit_base_patch32_224", "vit_base_patch32_384",
    "vit_large_patch16_224", "vit_large_patch16_384", "vit_large_patch32_384",
)


def _check_plain_vit(name, m):
    """Refuses a model that is not the architecture mokd's entries assume."""
    assert type(m).__name__ == "VisionTransformer", (name, type(m).__name__)
    assert m.cls_token is not None and m.reg_token is None and m.global_pool == "token", name
    assert not m.no_embed_class and m.pos_embed is not None, name
    assert isinstance(m.norm, torch.nn.LayerNorm) and isinstance(m.fc_norm, torch.nn.Identity), name
    assert isinstance(m.head, torch.nn.Linear) and m.attn_pool is None, name
    assert isinstance(m.norm_pre, torch.nn.Identity), name
    assert m.norm.eps == 1e-6, name
    for b in m.blocks:
        assert b.attn.qkv.bias is not None and isinstance(b.ls1, torch.nn.Identity), name
        assert b.norm1.eps == 1e-6 and b.norm2.eps == 1e-6, name
        assert isinstance(b.mlp.act, torch.nn.GELU) and b.mlp.act.approximate == "none", name


def generate(out_dir):
    import timm
    lines = []
    for name in MODELS:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False)
        _check_plain_vit(name, m)
        n = sum(p.numel() for p in m.parameters())
        lines.append(f"model {name} num_parameters {n} num_heads {m.blocks[0].attn.num_heads}")
        lines += [f"{k} [{', '.join(str(d) for d in v.shape)}]" for k, v in m.state_dict().items()]
    save_text(out_dir, "models_vit_keys.txt", lines,
              {"models": list(MODELS), "pretrained": False, "num_classes": 1000, "device": "meta"})
