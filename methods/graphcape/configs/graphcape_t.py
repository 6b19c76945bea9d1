# GraphCape with the SwinV2-T backbone of CapeX's `tiny/` config (same head), for comparisons with
# CapeX at equal backbone size: 37,361,048 parameters.
_base_ = ["./graphcape_s.py"]

backbone = "swinv2_tiny"
backbone_options = dict(drop_path=0.2)
# swinv2_tiny_patch4_window16_256.pth; set it with --cfg-options backbone_weights=PATH.
backbone_weights = None
