# Method-DLF as published (Li & Liu, Table 3 hyperparameters): SwinV2-S backbone, frozen
# gte-base-en-v1.5, CapeX-S's head as the text path plus the image path's own encoder, proposal
# generator, graph decoder and 768->256 projection. 203,741,864 parameters = CapeX-S (195,518,504,
# upstream counts.json `capex_s.total_params`) + 8,223,360 (fusion paper Table 5: 203.742 M);
# 136,776,192 of them are the frozen gte.
input_size = 256

backbone = "swinv2_small"
backbone_options = dict(drop_path=0.3)
# swinv2_small_patch4_window16_256.pth; None: looked up under $CAPE_BENCH_WEIGHTS; set it with
# --cfg-options backbone_weights=PATH.
backbone_weights = None

text_encoder = "gte-base"
# A local copy of Alibaba-NLP/gte-base-en-v1.5; None: $CAPE_BENCH_WEIGHTS/gte-base-en-v1.5;
# set it with --cfg-options text_encoder_path=DIR.
text_encoder_path = None
text_encoder_options = dict()
text_embeddings = None
text_encoder_id = None

# True builds the parts without given weights (backbone, gte) from scratch: tests, profiling.
random_init = False

fusion = dict(
    # The prediction: "mean" of the two paths' final outputs, or one path ("text" / "image").
    output="mean",
    # lambda_consistency of eq. 9. Not published; 1.0 adds the consistency term at the scale of the
    # offset losses it sits beside (both are distances in normalised crop coordinates).
    consistency_weight=1.0,
    # "mse": squared distance (the paper's text); "l2": Euclidean distance (eq. 5 as printed).
    consistency="mse",
)

# Both paths use these sizes (the image path's stack is built from the same values).
head = dict(
    d_model=256,
    nhead=8,
    num_encoder_layers=3,
    num_decoder_layers=3,
    dim_feedforward=768,
    dropout=0.1,
    similarity_proj_dim=256,
    dynamic_proj_dim=128,
    graph_ffn=True,
    heatmap_loss_weight=2.0,
)
heatmap = dict(size=64, sigma=1.0)
