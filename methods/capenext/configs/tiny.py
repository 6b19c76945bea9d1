# Toy CapeNext for tests and the CPU demo: random-init toy ResNet, the packaged all-MiniLM-L6-v2 text
# encoder (384-d, as CapeX tiny, so the two compare on equal text embeddings) for keypoint texts and
# class prompts, a random-init toy open_clip image tower with a 384-d output for the query embedding,
# a small fusion module and a small head. Same code path as the full model except that the image
# tower is a separate CLIP (`image_encoder`) instead of the text encoder's own.
_base_ = ["./capenext.py"]

backbone = "tiny_cnn"
text_encoder = "minilm"
image_encoder = dict(
    _delete_=True,  # the base's None cannot be merged into
    random_init=True,
    model_cfg=dict(
        embed_dim=384,
        vision_cfg=dict(image_size=224, layers=1, width=64, head_width=32, patch_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=1, layers=1),
    ),
)

# zero_init_refinement: at upstream's init the fused term swamps the unit-norm keypoint texts and the
# random-init model sits on the mean-pose loss for most of its demo budget (methods/capenext/README.md).
fusion = dict(num_heads=4, ffn_dim=256, dead_non_linear=False, zero_init_refinement=True)

head = {{_base_.tiny_head}}
input_size = {{_base_.tiny_input_size}}
heatmap = {{_base_.tiny_heatmap}}
