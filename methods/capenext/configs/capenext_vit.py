# CapeNext with a ViT-B/16 image backbone at 224x224 input (CapeNext `configs/clip_vit/*`, Table 1
# "ViT-Base-16"). The CLIP image branch resizes 224 -> 224 (a no-op). Heatmaps stay 64x64
# (the upstream clip_vit heatmap size is not documented).
_base_ = ["./capenext.py"]

input_size = 224
backbone = "vit_base_patch16_224"
# vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors; set it with --cfg-options backbone_weights=PATH.
backbone_options = dict(_delete_=True, drop_path=0.0)
