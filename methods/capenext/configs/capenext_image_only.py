# Ablation "+img emb" (Table 3): the image embedding only, in both HCMI and DSFR; no class prompt
# (the method then reads no class name).
_base_ = ["./capenext.py"]

fusion = dict(mode="image_only")
