# CapeNext as published: yzrs/CapeNext `configs/clip/clip_split*_config.py` with
# module_name="SimpleMultiModalModule"; SwinV2-T backbone, frozen CLIP ViT-B/32 (open_clip
# ViT-B-32-quickgelu = OpenAI's weights; text tower for keypoint texts and class prompts, image tower
# for the query) and the fusion module. 204,333,211 parameters (upstream counts.json
# `capenext.total_params`), of which 151,277,313 are the frozen CLIP (both towers); 53,055,898 train.
# Everything but the fusion module is the CapeNext paper's CapeX baseline: inherit it.
_base_ = ["../../capex/configs/capex_clip.py"]

# Query image embedding: None = the image tower of the text encoder's CLIP (upstream), or a dict of
# load_clip arguments (model, weights, model_cfg, random_init) for a separate CLIP image tower.
image_encoder = None

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
    # True starts DSFR's norm2 gain at 0 (the module begins as norm3(joint)); False is upstream's init.
    zero_init_refinement=False,
    # class_prompt(name, class_template); name = PairBatch.class_names[i] (category name, '_' -> ' ').
    class_template="a photo of {}",
    # A prompt to use when a pair has no class name; None raises an error naming the category.
    fallback_prompt=None,
)
