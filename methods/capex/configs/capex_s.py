# CapeX-S: capex `configs/small/` (the README's CapeX-S and the HF demo model), SwinV2-S backbone +
# gte-base-en-v1.5. 195,518,504 parameters (upstream counts.json `capex_s.total_params`).
_base_ = ["./capex.py"]

backbone = "swinv2_small"
backbone_options = dict(drop_path=0.3)
# swinv2_small_patch4_window16_256.pth; set it with --cfg-options backbone_weights=PATH.
backbone_weights = None
