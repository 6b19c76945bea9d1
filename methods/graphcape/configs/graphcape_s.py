# GraphCape as published: PoseAnything `configs/1shot-swin/graph_split*_config.py`, SwinV2-S backbone.
# 58,742,312 parameters (upstream counts.json `graphcape.total_params`, the unused 768->1000
# ImageNet classifier of the backbone included, as in the checkpoints).
_base_ = ["../../_configs/cape_head.py"]

input_size = 256

backbone = "swinv2_small"
backbone_options = dict(drop_path=0.3)
# swinv2_small_patch4_window16_256.pth (Microsoft SwinV2 release). None: looked up under
# $CAPE_BENCH_WEIGHTS; set it with --cfg-options backbone_weights=PATH.
backbone_weights = None
# True builds the parts without given weights from scratch (tests, profiling, training from scratch).
random_init = False
