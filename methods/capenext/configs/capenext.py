# CapeNext as published: yzrs/CapeNext `configs/clip/clip_split*_config.py` with
# module_name="SimpleMultiModalModule"; SwinV2-T backbone, frozen CLIP ViT-B/32 (open_clip
# ViT-B-32-quickgelu = OpenAI's weights; text tower for keypoint texts and class prompts, image tower
# for the query) and the fusion module. 204,333,211 parameters (upstream counts.json
# `capenext.total_params`), of which 151,277,313 are the frozen CLIP (both towers); 53,055,898 train.
_base_ = ["../../_configs/cape_head.py"]

input_size = 256

backbone = "swinv2_tiny"
backbone_options = dict(drop_path=0.2)
# swinv2_tiny_patch4_window16_256.pth (Microsoft SwinV2 release). None: looked up under
# $CAPE_BENCH_WEIGHTS; set it with --cfg-options backbone_weights=PATH.
backbone_weights = None

# Keypoint descriptions and class prompts: CLIP ViT-B/32's text tower (512-d, L2-normalised).
text_encoder = "clip-vit-b32"
# OpenAI's ViT-B-32.pt. None: looked up as $CAPE_BENCH_WEIGHTS/ViT-B-32.pt; set it with
# --cfg-options text_encoder_path=PATH.
text_encoder_path = None
text_encoder_options = dict()
# Optional file written by EmbeddingCache.save: keypoint texts and class prompts found there are not encoded.
text_embeddings = None
text_encoder_id = None
# Query image embedding: None = the image tower of the text encoder's CLIP (upstream), or a dict of
# load_clip arguments (model, weights, model_cfg, random_init) for a separate CLIP image tower.
image_encoder = None

# True builds the parts without given weights (backbone, CLIP) from scratch: tests, profiling.
random_init = False

# The fusion module (UPSTREAM_ARCH section 3; cape_bench.nn.fusion.CapeNextFusion) and the class prompt.
fusion = dict(
    num_heads=8,
    ffn_dim=2048,
    dropout=0.1,
    hcmi=True,  # False: "w/o HCMI" (capenext_no_hcmi)
    dsfr=True,  # False: "w/o DSFR", two ReLU projections added instead (capenext_no_dsfr)
    gates=True,  # False: "w/o LW", both gates fixed to 1 (capenext_no_gates)
    mode="image_and_class",  # "image_only": Table 3 "+img emb" (capenext_image_only)
    # Upstream builds a `non_linear` FFN it never calls (2,099,712 params); kept so official
    # checkpoints load strictly and the count matches. It takes no part in the forward pass.
    dead_non_linear=True,
    # class_prompt(name, class_template); name = PairBatch.class_names[i] (category name, '_' -> ' ').
    class_template="a photo of {}",
    # A prompt to use when a pair has no class name; None raises an error naming the category.
    fallback_prompt=None,
)
