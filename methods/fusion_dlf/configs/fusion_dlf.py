# Method-DLF as published (Li & Liu, Table 3 hyperparameters): SwinV2-S backbone, frozen
# gte-base-en-v1.5, CapeX-S's head as the text path plus the image path's own encoder, proposal
# generator, graph decoder and 768->256 projection. 203,741,864 parameters = CapeX-S (195,518,504,
# upstream counts.json `capex_s.total_params`) + 8,223,360 (fusion paper Table 5: 203.742 M);
# 136,776,192 of them are the frozen gte.
# The text path is CapeX-S and the image path is built from the same head sizes: inherit them.
_base_ = ["../../capex/configs/capex_s.py"]

fusion = dict(
    # The prediction: "mean" of the two paths' final outputs, or one path ("text" / "image").
    output="mean",
    # lambda_consistency of eq. 9. Not published; 1.0 adds the consistency term at the scale of the
    # offset losses it sits beside (both are distances in normalised crop coordinates).
    consistency_weight=1.0,
    # "mse": squared distance (the paper's text); "l2": Euclidean distance (eq. 5 as printed).
    consistency="mse",
)
