# Ablation "CapeNext w/o HCMI" (Table 2): the raw CLIP class and image embeddings go straight to DSFR
# as the keys/values of its two cross-attention streams.
_base_ = ["./capenext.py"]

fusion = dict(hcmi=False)
