# CapeNext with a DINOv2 ViT-S/14 image backbone (Table 1 "DINOv2-ViT-S"); the 256 crop is resized to
# 224 inside the backbone (16x16 patch map).
_base_ = ["./capenext.py"]

backbone = "dinov2_vits14"
# dinov2_vits14_pretrain.pth; set it with --cfg-options backbone_weights=PATH.
backbone_options = dict(_delete_=True, drop_path=0.0)
