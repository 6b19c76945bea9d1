# Method-FLF as published (Li & Liu, Table 3 hyperparameters): SwinV2-S backbone (depths 2-2-18-2,
# drop-path 0.3), frozen gte-base-en-v1.5, CapeX-S's head, plus CMAA. 195,715,113 parameters =
# CapeX-S (195,518,504, upstream counts.json `capex_s.total_params`) + 3 x 256 x 256 + 1 (fusion paper
# Table 5: 195.715 M); 136,776,192 of them are the frozen gte.
# Everything but the fusion is CapeX-S (backbone, gte, head, heatmaps): inherit it.
_base_ = ["../../capex/configs/capex_s.py"]

fusion = dict(
    # "text_into_image": visual keypoint tokens are the residual and attend to the texts (eq. 3-4);
    # "image_into_text": the reverse (text dominant).
    direction="text_into_image",
    # gamma starts at 0: the module starts as LayerNorm(tokens) and training phases the fusion in.
    gamma_init=0.0,
)
