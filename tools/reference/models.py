"""Fixtures for tests/test_models.cpp, computed with timm's own model code at reduced size.

For each model, two files:
  models_<m>.safetensors        state.<name> (timm state dict: timm names, OIHW convs, every
                                buffer), input (NHWC [B, H, W, C]), labels (i64), logits, loss
                                (plus model-specific extras below)
  models_<m>_grads.safetensors  grad.<name>: d loss / d parameter for every parameter

Models (all parameters are re-drawn at random scales so no tensor sits at a special value such as
zero biases or unit norm weights; drop-path 0):
  vit        timm VisionTransformer(img 32, patch 8, dim 32, depth 2, heads 2, mlp_ratio 2,
             10 classes), train mode; loss = cross_entropy(logits, labels)
  deit       timm VisionTransformerDistilled of the same size, train mode with
             distilled_training: logits (class head), dist_logits, loss = (CE(cls) + CE(dist)) / 2,
             logits_eval = the eval-mode output (mean of the two heads)
  resnet     timm ResNet(BasicBlock, layers [1,1,1,1], channels (8,12,16,24)), standard stem
             (timm's plain stem is always 64 wide), 32 px. Train mode forward (batch statistics) -> logits, loss, grads and
             after.<buffer> (running stats and num_batches_tracked after that forward); eval mode
             -> logits_eval from the original running stats.
  resnet_bottleneck  the same with Bottleneck blocks, channels (4,4,8,8) (outputs x4).
  regnet     timm RegNet(RegNetCfg(depth 5, w0 8, wa 8, wm 1.5, group_size 8, se_ratio 0.25,
             stem_width 8)), which timm instantiates as depths [1,1,2,1], widths [8,16,24,40],
             groups [1,2,3,5], SE widths [2,2,4,6]; 40 px (odd map sizes 5 -> 3), batch 3, and the
             same outputs as resnet.
The small-image stem has no timm equivalent and is not compared here.

Each fixture's params hold the model's constructor arguments ("config"), what the C++ test's
config needs beyond them ("stem_width" of the ResNets; "stages" of the RegNet: depths, widths,
groups, SE widths as timm instantiated them), the seeds and the batch.

Also models_regnety_160_keys.txt: every state-dict key of timm.create_model('regnety_160') with
its shape ("key [d0, d1, ...]" per line, after "# key: value" metadata lines and a
"# num_parameters N" line), so the full-size name/shape check needs no 84M-parameter file.

Full-size name/logit checks (not committed, large):
    python3 tools/reference/models.py --fullsize /tmp/mokd_fullsize
writes <timm name>.safetensors (timm's random init, eval mode) and <timm name>_io.safetensors
(input NHWC [2, 224, 224, 3], logits) for deit_tiny_patch16_224,
deit_small_distilled_patch16_224, resnet50 and regnety_160; MOKD_FULLSIZE_DIR=/tmp/mokd_fullsize
build/mokd_tests --gtest_filter='Models.FullSize*' loads them into mokd.
"""
import pathlib
import sys

import torch
import torch.nn.functional as F

if __package__:
    from ._common import gen, save, save_text
else:  # run as a script (--fullsize)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _common import gen, save, save_text  # type: ignore

REQUIRES = ("torch", "numpy", "safetensors", "timm")
VIT = {"img_size": 32, "patch_size": 8, "in_chans": 3, "num_classes": 10, "embed_dim": 32, "depth": 2,
       "num_heads": 2, "mlp_ratio": 2.0, "drop_path_rate": 0.0}


def _randomize(model, seed):
    """Draws every parameter and float buffer at a random, well-conditioned scale."""
    g = gen(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "bn" in name or name.endswith("downsample.1.weight")):
                # norm/bn weights around 1, norm/bn biases small
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                if name in ("cls_token", "dist_token", "pos_embed"):
                    fan_in = 4
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)


def _io(seed, batch, size, chans=3, classes=10):
    g = gen(seed)
    x = torch.randn(batch, chans, size, size, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    return x, y


def _nhwc(x):
    return x.permute(0, 2, 3, 1).contiguous()


def _state(model):
    return {f"state.{k}": v.detach().clone() for k, v in model.state_dict().items()}


def _grads(model):
    return {f"grad.{k}": p.grad.detach().clone() for k, p in model.named_parameters()}


def _vit(out_dir):
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    m = VisionTransformer(**VIT)
    _randomize(m, 11)
    m.train()
    x, y = _io(12, 4, VIT["img_size"])
    params = {"config": VIT, "seeds": {"torch": 0, "randomize": 11, "io": 12}, "batch": 4}
    t = _state(m)
    logits = m(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    t.update(input=_nhwc(x), labels=y, logits=logits, loss=loss.reshape(()))
    save(out_dir, "models_vit", t, params)
    save(out_dir, "models_vit_grads", _grads(m), params)


def _deit(out_dir):
    from timm.models.deit import VisionTransformerDistilled
    torch.manual_seed(0)
    m = VisionTransformerDistilled(**VIT)
    _randomize(m, 21)
    x, y = _io(22, 4, VIT["img_size"])
    params = {"config": VIT, "seeds": {"torch": 0, "randomize": 21, "io": 22}, "batch": 4}
    t = _state(m)
    m.eval()
    with torch.no_grad():
        t["logits_eval"] = m(x)
    m.train()
    m.set_distilled_training(True)
    cls, dist = m(x)
    loss = 0.5 * (F.cross_entropy(cls, y) + F.cross_entropy(dist, y))
    loss.backward()
    t.update(input=_nhwc(x), labels=y, logits=cls, dist_logits=dist, loss=loss.reshape(()))
    save(out_dir, "models_deit", t, params)
    save(out_dir, "models_deit_grads", _grads(m), params)


def _cnn_fixture(out_dir, name, m, x, y, params):
    """A BN network's fixture: weights, eval logits, one train-mode forward/backward (logits, loss,
    the BN running statistics after it) and the gradients (name_grads)."""
    t = _state(m)
    m.eval()
    with torch.no_grad():
        t["logits_eval"] = m(x)
    m.train()
    logits = m(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    for k, v in m.state_dict().items():
        if "running" in k or "num_batches" in k:
            t[f"after.{k}"] = v.detach().clone()
    t.update(input=_nhwc(x), labels=y, logits=logits, loss=loss.reshape(()))
    save(out_dir, name, t, params)
    save(out_dir, name + "_grads", _grads(m), params)


def _resnet(out_dir, bottleneck=False):
    from timm.models.resnet import ResNet, BasicBlock, Bottleneck
    torch.manual_seed(0)
    if bottleneck:
        cfg = {"block": "Bottleneck", "layers": [1, 1, 1, 1], "num_classes": 10, "in_chans": 3,
               "channels": [4, 4, 8, 8]}
    else:
        cfg = {"block": "BasicBlock", "layers": [1, 1, 1, 1], "num_classes": 10, "in_chans": 3,
               "channels": [8, 12, 16, 24]}
    block = Bottleneck if bottleneck else BasicBlock
    m = ResNet(block, cfg["layers"], num_classes=cfg["num_classes"], in_chans=cfg["in_chans"],
               channels=tuple(cfg["channels"]))
    seeds = {"torch": 0, "randomize": 41, "io": 42} if bottleneck else {"torch": 0, "randomize": 31, "io": 32}
    img, batch = 32, 4
    _randomize(m, seeds["randomize"])
    x, y = _io(seeds["io"], batch, img)
    params = {"config": cfg, "stem_width": m.conv1.out_channels, "img_size": img, "seeds": seeds,
              "batch": batch}
    _cnn_fixture(out_dir, "models_resnet_bottleneck" if bottleneck else "models_resnet", m, x, y, params)


def _regnet(out_dir):
    from timm.models.regnet import RegNet, RegNetCfg
    torch.manual_seed(0)
    cfg_args = {"depth": 5, "w0": 8, "wa": 8, "wm": 1.5, "group_size": 8, "se_ratio": 0.25, "stem_width": 8}
    cfg = RegNetCfg(**cfg_args)
    m = RegNet(cfg, num_classes=10, in_chans=3)
    stages = [list(getattr(m, f"s{i}").children()) for i in range(1, 5)]
    instantiated = {"depths": [len(s) for s in stages],
                    "widths": [s[0].conv3.conv.out_channels for s in stages],
                    "groups": [s[0].conv2.conv.groups for s in stages],
                    "se_widths": [b.se.fc1.out_channels for s in stages for b in s]}
    # The shapes described above (tests/test_models.cpp builds its RegNet from "stages").
    assert instantiated == {"depths": [1, 1, 2, 1], "widths": [8, 16, 24, 40], "groups": [1, 2, 3, 5],
                            "se_widths": [2, 2, 4, 6, 6]}
    seeds = {"torch": 0, "randomize": 51, "io": 52}
    img, batch = 40, 3
    _randomize(m, seeds["randomize"])
    x, y = _io(seeds["io"], batch, img)
    params = {"config": dict(cfg_args, bottle_ratio=cfg.bottle_ratio, num_classes=10, in_chans=3),
              "stages": instantiated, "img_size": img, "seeds": seeds, "batch": batch}
    _cnn_fixture(out_dir, "models_regnet", m, x, y, params)


def _regnet_keys(out_dir):
    import timm
    m = timm.create_model("regnety_160", pretrained=False)
    n = sum(p.numel() for p in m.parameters())
    lines = [f"# num_parameters {n}"]
    lines += [f"{k} [{', '.join(str(d) for d in v.shape)}]" for k, v in m.state_dict().items()]
    save_text(out_dir, "models_regnety_160_keys.txt", lines, {"model": "regnety_160", "pretrained": False})


def generate(out_dir):
    _vit(out_dir)
    _deit(out_dir)
    _resnet(out_dir)
    _resnet(out_dir, bottleneck=True)
    _regnet(out_dir)
    _regnet_keys(out_dir)


def fullsize(out_dir):
    """timm's full-size models at random init (eval mode): weights and logits on 2 images."""
    import timm
    from safetensors.torch import save_file
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(["deit_tiny_patch16_224", "deit_small_distilled_patch16_224", "resnet50",
                              "regnety_160"]):
        torch.manual_seed(100 + i)
        m = timm.create_model(name, pretrained=False)
        _randomize(m, 200 + i)  # non-trivial BN stats and biases
        m.eval()
        x, _ = _io(300 + i, 2, 224, classes=1000)
        with torch.no_grad():
            logits = m(x)
        save_file({k: v.detach().contiguous() for k, v in m.state_dict().items()},
                  str(out / f"{name}.safetensors"))
        save_file({"input": _nhwc(x), "logits": logits.contiguous()}, str(out / f"{name}_io.safetensors"))
        print(f"wrote {out / name}.safetensors ({sum(p.numel() for p in m.parameters())} params)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fullsize":
        fullsize(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)
