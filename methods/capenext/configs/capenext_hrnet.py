# CapeNext with an HRNet-W32 image backbone (Table 1 "HRNet-w32"): the stride-16 branch of the last
# stage (128 channels).
_base_ = ["./capenext.py"]

backbone = "hrnet_w32"
# hrnet_w32.ms_in1k.safetensors; set it with --cfg-options backbone_weights=PATH.
backbone_options = dict(_delete_=True)
